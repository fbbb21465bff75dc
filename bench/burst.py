"""A burst on an empty Kubernetes pool (issue 10 item 4), against the fake API server of the tests.

    python bench/burst.py [--rounds 3] [--write BENCHMARKS.md]

A pool of 0 to 4 pods x 3 slots with no pod; 10 workspaces whose plan has one change (each task
ends apply_pending and keeps its slot reserved, so the 10 need 4 pods); 10 `iacctl plan WS
--no-wait` run one after the other, as CI jobs would queue them. Nothing else drives the pool:
each command that queues work scales it to the demand of every waiting task (S3). Measured: the
time from the first command's start to the moment all 10 tasks are running (their start time in
the store), the pods there were, and slot use over the burst (busy slots over the slots of ready
pods, sampled from the store every 0.1 s).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import kubernetes as kbench  # noqa: E402  (bench/kubernetes.py: base_env, iacctl, write helpers)
import run as core_bench  # noqa: E402
from tests.fixtures.fake_kube import FakeKube  # noqa: E402

POOL, NS, TASKS, MAX_PODS, SLOTS = "burst", "iac", 10, 4, 3
START, END = "<!-- kubernetes-burst -->", "<!-- /kubernetes-burst -->"
CONFIG = 'resource "terraform_data" "x" {\n  input = "%s"\n}\n'


def one_round() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="iacctl-burst-"))
    fake = FakeKube(root / "kube").start()
    try:
        env = kbench.base_env(root, fake.write_kubeconfig(root / "kubeconfig", context="fake", namespace=NS))
        cmd = kbench.iacctl()
        core_bench.timed([*cmd, "pool", "create", POOL, "--backend", "kubernetes", "--namespace", NS, "--image",
                          "registry.example/iacctl-runner:1", "--slots-per-pod", str(SLOTS), "--min-pods", "0",
                          "--max-pods", str(MAX_PODS), "--context", "fake"], None, env)
        for i in range(TASKS):
            src = root / "configs" / f"ws{i}"
            src.mkdir(parents=True)
            (src / "main.tf").write_text(CONFIG % i)
            core_bench.timed([*cmd, "workspace", "create", f"ws{i}", "--dir", str(src), "--pool", POOL], None, env)
        db = root / "store.db"
        samples: list[tuple[float, int, int]] = []
        stop = threading.Event()

        def sample() -> None:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
            while not stop.is_set():
                with con:
                    slots, busy = con.execute(
                        "SELECT COUNT(*), COALESCE(SUM(slots.state != 'idle'), 0) FROM slots JOIN pods ON "
                        "pods.id = slots.pod_id JOIN pools ON pools.id = pods.pool_id "
                        "WHERE pods.status = 'ready' AND pools.name = ?", (POOL,)).fetchone()
                samples.append((time.time(), slots, busy))
                stop.wait(0.1)
            con.close()

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.time()
        for i in range(TASKS):
            core_bench.timed([*cmd, "plan", f"ws{i}", "--no-wait"], None, env)
        queued = time.time() - t0
        deadline = time.monotonic() + 600
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
            while True:
                started = [r[0] for r in con.execute("SELECT started_at FROM tasks WHERE started_at IS NOT NULL")]
                if len(started) == TASKS:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {len(started)} of {TASKS} tasks started within 10 minutes")
                time.sleep(0.2)
            t_all = max(started)
            while con.execute("SELECT COUNT(*) FROM tasks WHERE status = 'apply_pending'").fetchone()[0] < TASKS:
                if time.monotonic() > deadline:
                    raise SystemExit("the plans never all waited for confirmation")
                time.sleep(0.2)
        stop.set()
        sampler.join()
        slot_s = busy_s = 0.0
        for (a, slots, busy), (b, _, _) in itertools.pairwise(samples):
            lo, hi = max(a, t0), min(b, t_all)
            if hi > lo:
                slot_s += slots * (hi - lo)
                busy_s += busy * (hi - lo)
        return {"all_running_s": t_all - t0, "queue_s": queued, "pods": len(fake.pods(NS)),
                "use": busy_s / slot_s if slot_s else 0.0,
                "first_slot_s": next((t - t0 for t, slots, _ in samples if slots), float("nan"))}
    finally:
        fake.stop()
        shutil.rmtree(root, ignore_errors=True)


def section(runs: list[dict[str, Any]], argv: str) -> str:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    m = core_bench.machine()
    load = os.getloadavg()[0]

    return "\n".join([
        START,
        "## A burst on an empty Kubernetes pool (issue 10)",
        "",
        f"Run with `{argv}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}; {m['os']}; Python {m['python']}; "
        f"{m['terraform']}; load average {load:.1f} when it ended. "
        "The fake Kubernetes API server (tests/fixtures/fake_kube) in a thread "
        "of the benchmark process; its pods are Running as soon as they are created (a real cluster adds "
        "scheduling and the image pull).",
        "",
        f"{TASKS} workspaces with one change each; `iacctl plan WS --no-wait` for each, one after the other, on a "
        f"pool of 0 to {MAX_PODS} pods x {SLOTS} slots that has no pod. Each plan ends apply_pending and keeps its "
        f"slot, so the {TASKS} tasks need {MAX_PODS} pods. Medians over {len(runs)} runs.",
        "",
        "| measure | median | runs |",
        "| --- | --- | --- |",
        f"| first `plan --no-wait` started to all {TASKS} tasks running | {med('all_running_s'):.1f} s | "
        + ", ".join(f"{r['all_running_s']:.1f}" for r in runs) + " |",
        f"| the {TASKS} `plan --no-wait` commands themselves | {med('queue_s'):.1f} s | "
        + ", ".join(f"{r['queue_s']:.1f}" for r in runs) + " |",
        f"| first `plan --no-wait` started to the first slot | {med('first_slot_s'):.1f} s | "
        + ", ".join(f"{r['first_slot_s']:.1f}" for r in runs) + " |",
        "| slot use over the burst (busy slots / slots of ready pods, until all run) | "
        f"{med('use'):.0%} | " + ", ".join(f"{r['use']:.0%}" for r in runs) + " |",
        f"| pods at the end (of at most {MAX_PODS}) | {med('pods'):.0f} | "
        + ", ".join(str(r["pods"]) for r in runs) + " |",
        "",
        END,
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    runs = []
    for i in range(args.rounds):
        runs.append(one_round())
        print(f"run {i + 1}: {runs[-1]}", flush=True)
    text = section(runs, f"python bench/burst.py --rounds {args.rounds}")
    print(text)
    if args.write:
        core_bench.write_section(args.write, text, START, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
