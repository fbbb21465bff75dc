"""Kubernetes pools at scale (issue 3, item 10), against the fake API server of the tests.

    python bench/kubernetes.py [--rounds 5] [--write BENCHMARKS.md] [--only scale|utilization]

Scale: a store with 1,000 pods x 3 slots of one Kubernetes pool and 10,000 tasks in a mix of
statuses (running tasks whose runner is alive, apply_pending tasks holding their slot and
their workspace's lock, queued tasks waiting for their workspace's turn, and months of
finished ones), and the same 1,000 pods Running in the fake API (tests/fixtures/fake_kube,
in a thread of this process, on 127.0.0.1). Each round starts from the same store file and a
fresh fake API in which 10 of the pool's pods are gone and 5 pods of the pool have no
record; `iacctl pods recover` (or `iacctl pods reconcile`) then runs twice as a real
subprocess: the first run marks the 10 lost, deletes the 5 orphans and creates 10 pods to
get back to the pool's minimum; the second run must change nothing. Goal: <= 2 s each.

Utilization: a pool of min = max = 4 pods x 3 slots, 20 workspaces whose configuration has
no resources (plans are quick and end `planned_and_finished`), and 60 plan tasks (3 per
workspace) queued with `iacctl plan WS --no-wait` while the pool has no pods yet; one
`iacctl pods recover` then creates the 4 pods and starts the queue. From there on nothing but
the product drives the queue: each task that ends starts the queued tasks that can run now as
detached `iacctl tasks run` processes. A thread samples the slots' states from the store;
utilization = busy-slot-seconds / (12 x seconds during which a task was pending). Goal >= 90%.
Per-workspace order: each workspace's tasks must have started in the order they were created.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import run as core_bench  # noqa: E402  (bench/run.py: machine(), timed())

from tests.fixtures.fake_kube import FakeKube  # noqa: E402

NS = "iac"
POOL = "big"
PODS = 1000
SLOTS = 3
TASKS = 10_000
WORKSPACES = 1500
GONE = 10  # pods of the pool missing from the fake API in each round
ORPHANS = 5  # pods in the API with the pool's label and no record
POOL_LABEL = "iacctl.io/pool"
MANAGED_LABEL = "app.kubernetes.io/managed-by"
SECTION_START = "<!-- kubernetes-bench -->"
SECTION_END = "<!-- /kubernetes-bench -->"
_SCRUB = ("TF_", "IACCTL_", "XDG_", "KUBECONFIG")


# -- common -------------------------------------------------------------------------------------


def iacctl() -> list[str]:
    return [str(Path(sys.executable).parent / "iacctl")]


def base_env(root: Path, kubeconfig: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    (root / "home").mkdir(parents=True, exist_ok=True)
    env.update({
        "IACCTL_DB": str(root / "store.db"),
        "IACCTL_CONFIG_DIR": str(root / "config"),
        "IACCTL_WORK_ROOT": str(root / "work"),
        "HOME": str(root / "home"),
        "KUBECONFIG": str(kubeconfig),
        "CHECKPOINT_DISABLE": "1",
        "NO_COLOR": "1",
    })
    return env


def run_json(args: list[str], env: dict[str, str], expect: int = 0) -> tuple[float, Any]:
    seconds, out = core_bench.timed([*iacctl(), *args], None, env, expect=expect)
    return seconds, json.loads(out) if out.strip() else None


def process_start(pid: int) -> float:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return float(data[data.rfind(b")") + 2:].split()[19])


# -- scale: 1,000 pods, 10,000 tasks ------------------------------------------------------------


def pod_name(i: int) -> str:
    # The names add_pods_bulk gives in a fresh fake API with this prefix.
    return f"iacctl-{POOL}-{i:05d}"


def seed_store(db: Path, runner_pid: int) -> dict[str, int]:
    """Bulk rows through sqlite3 in the schema `iacctl` created: the pool's 1,000 pods and 3,000
    slots, 1,500 workspaces and 10,000 tasks. Returns the count of tasks per status."""
    host = socket.gethostname()
    start = process_start(runner_pid)
    now = time.time()
    con = sqlite3.connect(db)
    with con:
        pool_id = con.execute("SELECT id FROM pools WHERE name = ?", (POOL,)).fetchone()[0]
        # Pods 0..499 have busy slots; 500..999 are idle (since 5 minutes, under the 15 min delay).
        con.executemany(
            "INSERT INTO pods (pool_id, name, status, created_at, idle_since) VALUES (?, ?, 'ready', ?, ?)",
            [(pool_id, pod_name(i), now - 86400, None if i < PODS // 2 else now - 300) for i in range(PODS)],
        )
        pod_ids = [r[0] for r in con.execute("SELECT id FROM pods WHERE pool_id = ? ORDER BY name", (pool_id,))]
        con.executemany(
            "INSERT INTO slots (pod_id, slot_index, state, updated_at) VALUES (?, ?, 'idle', ?)",
            [(pid, j, now - 3600) for pid in pod_ids for j in range(SLOTS)],
        )
        slot_rows = con.execute(
            "SELECT slots.id, slots.pod_id FROM slots JOIN pods ON pods.id = slots.pod_id "
            "WHERE pods.pool_id = ? ORDER BY pods.name, slots.slot_index", (pool_id,)).fetchall()
        src = db.parent / "configs" / "empty"
        src.mkdir(parents=True, exist_ok=True)
        con.executemany(
            "INSERT INTO workspaces (name, source_dir, pool_id, created_at) VALUES (?, ?, ?, ?)",
            [(f"ws-{i:04d}", str(src), pool_id, now - 90 * 86400) for i in range(WORKSPACES)],
        )
        ws_ids = [r[0] for r in con.execute("SELECT id FROM workspaces WHERE pool_id = ? ORDER BY name",
                                            (pool_id,))]
        busy = slot_rows[: len(slot_rows) // 2]  # 1,500 slots: 900 running, 600 reserved
        running = [s for k, s in enumerate(busy) if k % 5 < 3]
        reserved = [s for k, s in enumerate(busy) if k % 5 >= 3]
        pending_n = 300
        finished_n = TASKS - len(running) - len(reserved) - pending_n
        tasks: list[dict[str, Any]] = []
        t0 = now - 90 * 86400
        finished_kinds = ["applied"] * 50 + ["planned_and_finished"] * 35 + ["failed"] * 10 + ["cancelled"] * 5
        for k in range(finished_n):  # months of history, oldest first
            status = finished_kinds[k % len(finished_kinds)]
            created = t0 + k * (80 * 86400 / finished_n)
            tasks.append({"workspace_id": ws_ids[(k * 7) % WORKSPACES],
                          "kind": "plan" if status == "planned_and_finished" and k % 2 else "plan_and_apply",
                          "status": status, "stage": "post_apply" if status == "applied" else "planning",
                          "error": "terraform exited 1" if status == "failed" else None,
                          "created_at": created, "started_at": created + 1, "finished_at": created + 40})
        live = {"runner_host": host, "runner_pid": runner_pid, "runner_start": start, "heartbeat_at": now}
        # Running: plan_and_apply in workspaces 0..599 (one each, L4), plans in 1200..1499.
        for k, (slot_id, pod_id) in enumerate(running):
            ws = k if k < 600 else 1200 + (k - 600)
            tasks.append({"workspace_id": ws_ids[ws], "kind": "plan_and_apply" if k < 600 else "plan",
                          "status": "running", "stage": "applying" if k % 2 else "planning",
                          "created_at": now - 120, "started_at": now - 100, "slot_id": slot_id,
                          "plan_slot_id": slot_id, "pod_id": pod_id, **live})
        # apply_pending: workspaces 600..1199, each holding its slot (reserved) and its lock.
        for k, (slot_id, pod_id) in enumerate(reserved):
            tasks.append({"workspace_id": ws_ids[600 + k], "kind": "plan_and_apply", "status": "apply_pending",
                          "stage": "post_plan", "created_at": now - 3600, "started_at": now - 3500,
                          "planned_at": now - 3400, "finished_at": None, "slot_id": slot_id,
                          "plan_slot_id": slot_id, "pod_id": pod_id, "plan_hash": "0" * 64,
                          "has_changes": 1, "add_count": 1, "change_count": 0, "destroy_count": 0,
                          "replace_count": 0, "output_count": 0, "lock_ws": 600 + k})
        # Pending: queued behind the running plan_and_apply of workspaces 0..299; half have a
        # creator waiting in the foreground (alive), half were queued with --no-wait.
        for k in range(pending_n):
            waiting = {"creator_host": host, "creator_pid": runner_pid, "creator_start": start} if k % 2 else {}
            tasks.append({"workspace_id": ws_ids[k], "kind": "plan_and_apply", "status": "pending",
                          "created_at": now - 30, **waiting})
        cols = ["workspace_id", "kind", "status", "stage", "error", "created_at", "updated_at", "started_at",
                "finished_at", "creator_host", "creator_pid", "creator_start", "runner_host", "runner_pid",
                "runner_start", "heartbeat_at", "pool_id", "pod_id", "slot_id", "plan_slot_id", "plan_hash",
                "planned_at", "has_changes", "add_count", "change_count", "destroy_count", "replace_count",
                "output_count", "replans", "warmup_attempts"]
        rows = []
        for t in tasks:
            t = {**t, "updated_at": t.get("finished_at") or t["created_at"], "pool_id": pool_id,
                 "replans": 0, "warmup_attempts": 0}
            rows.append(tuple(t.get(c) for c in cols))
        con.executemany(f"INSERT INTO tasks ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)
        # Slots and locks point at their tasks; every task has its history (L7).
        for (task_id, status, slot_id) in con.execute(
                "SELECT id, status, slot_id FROM tasks WHERE slot_id IS NOT NULL").fetchall():
            con.execute("UPDATE slots SET state = ?, task_id = ? WHERE id = ?",
                        ("running" if status == "running" else "reserved", task_id, slot_id))
        for (task_id, ws_id) in con.execute(
                "SELECT id, workspace_id FROM tasks WHERE status = 'apply_pending'").fetchall():
            con.execute("UPDATE workspaces SET locked_by_task_id = ?, lock_holder = ?, lock_reason = ?, "
                        "locked_at = ? WHERE id = ?", (task_id, f"task {task_id}", "plan waits for confirm-apply",
                                                       now - 3400, ws_id))
        con.execute(
            "INSERT INTO task_events (task_id, at, kind, from_value, to_value, reason) "
            "SELECT id, created_at, 'status', NULL, 'pending', 'queued' FROM tasks WHERE pool_id = ?", (pool_id,))
        con.execute(
            "INSERT INTO task_events (task_id, at, kind, from_value, to_value, reason) "
            "SELECT id, started_at, 'status', 'pending', 'running', 'started' FROM tasks "
            "WHERE pool_id = ? AND started_at IS NOT NULL", (pool_id,))
        con.execute(
            "INSERT INTO task_events (task_id, at, kind, from_value, to_value, reason) "
            "SELECT id, COALESCE(finished_at, planned_at), 'status', 'running', status, 'ended' FROM tasks "
            "WHERE pool_id = ? AND status NOT IN ('pending', 'running')", (pool_id,))
        counts = dict(con.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status").fetchall())
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return counts


def fresh_api(root: Path, kubeconfig: Path) -> FakeKube:
    """A fake API with the pool's pods Running, GONE of them missing, ORPHANS without a record."""
    fake = FakeKube(root).start()
    fake.write_kubeconfig(kubeconfig, context="fake", namespace=NS)
    names = fake.add_pods_bulk(NS, PODS + ORPHANS, labels={POOL_LABEL: POOL, MANAGED_LABEL: "iacctl"},
                               prefix=f"iacctl-{POOL}-")
    assert names[:PODS] == [pod_name(i) for i in range(PODS)], names[:3]
    for i in range(PODS - GONE, PODS):  # idle pods (the second half): their records can go
        fake.delete_pod(NS, pod_name(i))
    return fake


def expect_changes(label: str, kinds: Counter[str], want: dict[str, int]) -> None:
    if dict(kinds) != want:
        raise SystemExit(f"{label}: changes {dict(kinds)}, expected {want}")


def scale_bench(rounds: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="iacctl-kbench-"))
    # Stands for the live runners of the running tasks and the creators waiting for queued ones.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    fake: FakeKube | None = None
    try:
        kubeconfig = root / "kubeconfig"
        store_root = root / "pristine"
        env = base_env(store_root, kubeconfig)
        fake = FakeKube(root / "kube-setup").start()
        fake.write_kubeconfig(kubeconfig, context="fake", namespace=NS)
        core_bench.timed([*iacctl(), "pool", "create", POOL, "--backend", "kubernetes", "--namespace", NS,
                          "--image", "registry.example/iacctl-runner:1", "--slots-per-pod", str(SLOTS),
                          "--min-pods", str(PODS), "--max-pods", str(PODS), "--context", "fake"], None, env)
        fake.stop()
        fake = None
        counts = seed_store(store_root / "store.db", sleeper.pid)
        results: dict[str, list[float]] = {k: [] for k in ("recover_1", "recover_2", "reconcile_1", "reconcile_2")}
        first_changes: dict[str, dict[str, int]] = {}
        for r in range(rounds):
            for command in ("recover", "reconcile"):
                work = root / f"round-{r}-{command}"
                shutil.copytree(store_root, work)
                env = base_env(work, kubeconfig)
                fake = fresh_api(root / f"kube-{r}-{command}", kubeconfig)
                argv = ["pods", command, "--json"] + (["--pool", POOL] if command == "reconcile" else [])
                key = "action" if command == "recover" else "change"
                s1, out1 = run_json(argv, env)
                s2, out2 = run_json(argv, env)
                first = Counter(str(a[key]) for a in out1)
                prefix = "pod_" if command == "recover" else ""
                expect_changes(f"{command} run 1", first, {f"{prefix}lost": GONE, f"{prefix}orphan_deleted": ORPHANS,
                                                           f"{prefix}created": GONE})
                if out2:
                    raise SystemExit(f"{command} run 2 changed something: {out2[:5]}")
                api = [p["metadata"]["name"] for p in fake.pods(NS)]
                if len(api) != PODS:
                    raise SystemExit(f"{command}: {len(api)} pods in the API after the runs, expected {PODS}")
                first_changes[command] = dict(first)
                results[f"{command}_1"].append(s1)
                results[f"{command}_2"].append(s2)
                fake.stop()
                fake = None
                print(f"round {r + 1} {command}: first {s1:.3f} s, second {s2:.3f} s", flush=True)
        with sqlite3.connect(store_root / "store.db") as con:
            pods_n = con.execute("SELECT COUNT(*) FROM pods JOIN pools ON pools.id = pods.pool_id "
                                 "WHERE pools.name = ?", (POOL,)).fetchone()[0]
            slots_n = con.execute("SELECT COUNT(*) FROM slots").fetchone()[0]
            events_n = con.execute("SELECT COUNT(*) FROM task_events").fetchone()[0]
        return {"times": results, "counts": counts, "first_changes": first_changes, "pods": pods_n,
                "slots": slots_n, "events": events_n, "rounds": rounds}
    finally:
        if fake is not None:
            fake.stop()
        sleeper.kill()
        sleeper.wait()
        shutil.rmtree(root, ignore_errors=True)


def _main_scale_only() -> None:
    print(json.dumps(scale_bench(int(sys.argv[1]) if len(sys.argv) > 1 else 1), indent=1))


if __name__ == "__main__":
    _main_scale_only()
