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
workspace) queued with `iacctl plan WS --no-wait` while the pool is frozen (no pods); after
`iacctl pool unfreeze`, one `iacctl pods recover` creates the 4 pods and starts the queue. From there on nothing but
the product drives the queue: each task that ends starts the queued tasks that can run now as
detached runners (forked, or `iacctl tasks run` processes). A thread samples the slots' states from the store;
utilization = busy-slot-seconds / (12 x seconds during which a task was pending). Goal >= 90%.
Per-workspace order: each workspace's tasks must have started in the order they were created.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
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
from collections.abc import Callable
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



# -- utilization: 60 plans, 20 workspaces, 4 pods x 3 slots ------------------------------------

UTIL_POOL = "util"
UTIL_PODS = 4
UTIL_WORKSPACES = 20
UTIL_ROUNDS = 3  # tasks per workspace
_CONFIG = """# No resources: init, plan and show are quick and the plan has no changes, so each
# plan_and_apply task ends planned_and_finished and frees its slot.
variable "name" {
  type    = string
  default = "%s"
}

locals {
  greeting = "hello ${var.name}"
}
"""


class Sampler(threading.Thread):
    """Reads the pool's slot states and the queue from the store every `period` seconds."""

    def __init__(self, db: Path, period: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.db, self.period = db, period
        self.samples: list[Sample] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        pool_id = con.execute("SELECT id FROM pools WHERE name = ?", (UTIL_POOL,)).fetchone()[0]
        while not self.stop_event.is_set():
            t = time.time()
            with con:
                slots, busy = con.execute(
                    "SELECT COUNT(*), COALESCE(SUM(slots.state != 'idle'), 0) FROM slots "
                    "JOIN pods ON pods.id = slots.pod_id WHERE pods.pool_id = ? AND pods.status = 'ready'",
                    (pool_id,)).fetchone()
                pending = con.execute("SELECT COUNT(*) FROM tasks WHERE status = 'pending' AND pool_id = ?",
                                      (pool_id,)).fetchone()[0]
                # L4: a queued plan_and_apply can start when no task of its workspace is running
                # or apply_pending and no older one is queued.
                startable = con.execute(
                    "SELECT COUNT(*) FROM tasks t WHERE t.status = 'pending' AND t.pool_id = ? AND NOT EXISTS "
                    "(SELECT 1 FROM tasks o WHERE o.workspace_id = t.workspace_id AND o.kind = 'plan_and_apply' "
                    "AND o.id != t.id AND (o.status IN ('running', 'apply_pending') "
                    "OR (o.status = 'pending' AND o.id < t.id)))", (pool_id,)).fetchone()[0]
            self.samples.append((t, slots, busy, pending, startable, runner_processes()))
            self.stop_event.wait(self.period)
        con.close()


def runner_processes() -> int:
    """Detached runners alive now: `iacctl tasks run` processes, and runners forked from an
    `iacctl` process (named iacctl-runner)."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmd = Path(entry.path, "cmdline").read_bytes()
            comm = Path(entry.path, "comm").read_text().strip()
        except OSError:
            continue
        if comm == "iacctl-runner" or (b"iacctl\x00" in cmd and b"\x00tasks\x00run\x00" in cmd):
            count += 1
    return count


Sample = tuple[float, int, int, int, int, int]  # time, slots, busy slots, pending, startable, runners


def weighted(samples: list[Sample], start: float, end: float, when: Callable[[Sample], bool],
             value: Callable[[Sample], float]) -> float:
    """Sum over [start, end] of value(sample) x the time it held (until the next sample), counting
    only the samples for which `when` is true."""
    total = 0.0
    for a, b in itertools.pairwise(samples):
        lo, hi = max(a[0], start), min(b[0], end)
        if hi > lo and when(a):
            total += value(a) * (hi - lo)
    return total


def utilization_bench() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="iacctl-kutil-"))
    fake = FakeKube(root / "kube").start()
    sampler: Sampler | None = None
    try:
        kubeconfig = fake.write_kubeconfig(root / "kubeconfig", context="fake", namespace=NS)
        env = base_env(root, kubeconfig)
        cmd = iacctl()
        core_bench.timed([*cmd, "pool", "create", UTIL_POOL, "--backend", "kubernetes", "--namespace", NS,
                          "--image", "registry.example/iacctl-runner:1", "--slots-per-pod", str(SLOTS),
                          "--min-pods", str(UTIL_PODS), "--max-pods", str(UTIL_PODS), "--context", "fake"],
                         None, env)
        names = [f"app-{i:02d}" for i in range(UTIL_WORKSPACES)]
        for name in names:
            src = root / "configs" / name
            src.mkdir(parents=True)
            (src / "main.tf").write_text(_CONFIG % name)
            core_bench.timed([*cmd, "workspace", "create", name, "--dir", str(src), "--pool", UTIL_POOL], None, env)
        # 60 tasks queued while the pool is frozen (S4: no pod, nothing starts, and `plan
        # --no-wait` does not scale it up): 3 rounds over the 20 workspaces, as CI jobs running
        # `iacctl plan WS --no-wait` would queue them. Then the window is removed.
        now = dt.datetime.now(dt.UTC)
        core_bench.timed([*cmd, "pool", "freeze", UTIL_POOL, "--from", (now - dt.timedelta(minutes=1)).isoformat(),
                          "--until", (now + dt.timedelta(hours=1)).isoformat(), "--reason", "benchmark: queue first"],
                         None, env)
        queue_start = time.perf_counter()
        for _ in range(UTIL_ROUNDS):
            for name in names:
                _, task = run_json(["plan", name, "--no-wait", "--json"], env)
                assert task["status"] == "pending", task
        queue_seconds = time.perf_counter() - queue_start
        core_bench.timed([*cmd, "pool", "unfreeze", UTIL_POOL], None, env)
        if fake.pods(NS):
            raise SystemExit("the frozen pool has pods")
        db = root / "store.db"
        sampler = Sampler(db)
        sampler.start()
        t_kick = time.time()
        recover_s, actions = run_json(["pods", "recover", "--json"], env)
        kinds = Counter(str(a["action"]) for a in actions)
        total = UTIL_ROUNDS * UTIL_WORKSPACES
        deadline = time.monotonic() + 1800
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
            while True:
                done = con.execute("SELECT COUNT(*) FROM tasks WHERE status NOT IN ('pending', 'running')"
                                   ).fetchone()[0]
                if done == total:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {done} of {total} tasks ended within 30 minutes")
                time.sleep(0.5)
            t_end = time.time()
            sampler.stop_event.set()
            sampler.join()
            rows = con.execute(
                "SELECT t.id, w.name, t.status, t.created_at, t.started_at, t.finished_at, t.error "
                "FROM tasks t JOIN workspaces w ON w.id = t.workspace_id ORDER BY t.id").fetchall()
        samples = sampler.samples
        if os.environ.get("BENCH_KEEP"):
            (root / "samples.json").write_text(json.dumps(samples))
        statuses = Counter(r[2] for r in rows)
        if statuses != Counter({"planned_and_finished": total}):
            errors = [r[6] for r in rows if r[6]][:3]
            raise SystemExit(f"tasks ended {dict(statuses)}, expected all planned_and_finished; {errors}")
        slots_total = UTIL_PODS * SLOTS
        ready = [s[0] for s in samples if s[1] == slots_total]
        if not ready:
            raise SystemExit("the pool never had its 12 slots")
        t_ready = ready[0]
        last_start = max(r[4] for r in rows)
        # Utilization from the samples: busy-slot-seconds / (12 x seconds while a task was pending).
        def pending(x: Sample) -> bool:
            return x[3] > 0

        def startable(x: Sample) -> bool:
            return x[4] > 0

        def one(x: Sample) -> float:
            return 1.0

        def busy(x: Sample) -> float:
            return float(x[2])

        pending_time = weighted(samples, t_ready, t_end, pending, one)
        busy_pending = weighted(samples, t_ready, t_end, pending, busy)
        startable_time = weighted(samples, t_ready, t_end, startable, one)
        busy_startable = weighted(samples, t_ready, t_end, startable, busy)
        # The same from the tasks' own times (a slot is held from started_at to finished_at).
        exact_busy = sum(max(0.0, min(r[5], last_start) - max(r[4], t_ready)) for r in rows)
        exact_window = last_start - t_ready
        # Per-workspace order (L4): each workspace's tasks started in creation (id) order, each
        # after the one before it had ended.
        order_errors = []
        by_ws: dict[str, list[tuple[Any, ...]]] = {}
        for r in rows:
            by_ws.setdefault(r[1], []).append(r)
        for ws, tasks in by_ws.items():
            for a, b in itertools.pairwise(tasks):
                if not (a[4] < b[4] and a[5] <= b[4]):
                    order_errors.append(f"{ws}: task {b[0]} started at {b[4]:.3f}, task {a[0]} "
                                        f"ran {a[4]:.3f}-{a[5]:.3f}")
        durations = [r[5] - r[4] for r in rows]
        waits = [r[4] - t_kick for r in rows]
        return {
            "utilization_pending": busy_pending / (slots_total * pending_time) if pending_time else 0.0,
            "utilization_startable": busy_startable / (slots_total * startable_time) if startable_time else 0.0,
            "utilization_exact": exact_busy / (slots_total * exact_window) if exact_window > 0 else 0.0,
            "pending_seconds": pending_time, "startable_seconds": startable_time,
            "exact_window": exact_window, "drain_seconds": t_end - t_ready, "ready_after_kick": t_ready - t_kick,
            "recover_seconds": recover_s, "recover_actions": dict(kinds), "queue_seconds": queue_seconds,
            "task_seconds_median": statistics.median(durations), "task_seconds_max": max(durations),
            "first_start_after_ready": min(r[4] for r in rows) - t_ready,
            "utilization_steady": steady_utilization(samples, min(r[4] for r in rows), t_end),
            "max_busy": max(s[2] for s in samples), "max_runners": max(s[5] for s in samples),
            "order_errors": order_errors, "workspaces": len(by_ws), "tasks": total,
            "samples": len(samples), "last_wait": max(waits),
        }
    finally:
        if sampler is not None:
            sampler.stop_event.set()
        fake.stop()
        if os.environ.get("BENCH_KEEP"):
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def steady_utilization(samples: list[Sample], start: float, end: float) -> float:
    """Busy share of the slots while a task is pending, from the first task's start on."""
    busy = weighted(samples, start, end, lambda x: x[3] > 0, lambda x: float(x[2]))
    span = weighted(samples, start, end, lambda x: x[3] > 0, lambda x: 1.0)
    return busy / (UTIL_PODS * SLOTS * span) if span else 0.0


def section(scale: dict[str, Any] | None, util: list[dict[str, Any]], argv: str) -> str:
    m = core_bench.machine()
    med = statistics.median

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    rows: list[tuple[str, str, str, str]] = []
    lines = [
        SECTION_START,
        "## Kubernetes pools (issue 3)",
        "",
        f"Run with `{argv}` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}; {m['os']}; Python {m['python']}; "
        f"{m['terraform']}. The fake Kubernetes API server of the tests (tests/fixtures/fake_kube) "
        "runs in a thread of the benchmark process on 127.0.0.1; its exec runs the real commands "
        "(real Terraform) in a directory per pod.",
        "",
    ]
    if scale is not None:
        t = scale["times"]
        c = scale["counts"]
        mix = ", ".join(f"{n:,} {k}" for k, n in sorted(c.items(), key=lambda kv: -kv[1]))
        lines += [
            f"Scale: one pool of {scale['pods']:,} pods x {SLOTS} slots, in the store and Running in the "
            f"fake API; {sum(c.values()):,} tasks ({mix}) over {WORKSPACES:,} workspaces, "
            f"{scale['events']:,} task events. Running tasks have a live runner, apply_pending ones hold "
            "their reserved slot and their workspace's lock, queued ones wait for their workspace's turn "
            "(half with a creator waiting). Each round starts from the same store file and a fresh fake "
            f"API in which {GONE} idle pods are gone and {ORPHANS} pods of the pool have no record; the "
            "command then runs twice as a real `iacctl` subprocess. The first run marks the "
            f"{GONE} pods lost, deletes the {ORPHANS} orphans and creates {GONE} pods (back to the "
            "pool's minimum, waiting until they are Running); the second run must report nothing. "
            f"Medians over {scale['rounds']} rounds.",
            "",
        ]
        for command in ("recover", "reconcile"):
            second, first = med(t[f"{command}_2"]), med(t[f"{command}_1"])
            rows.append((f"`iacctl pods {command}`, nothing to change (second run: reports nothing)",
                         f"{second:.3f} s", "<= 2 s", verdict(second <= 2.0)))
            rows.append((f"`iacctl pods {command}`, first run: {GONE} lost, {ORPHANS} orphans, {GONE} created",
                         f"{first:.3f} s", "<= 2 s", verdict(first <= 2.0)))
    if util:
        u = [r["utilization_pending"] for r in util]
        steady = [r["utilization_steady"] for r in util]
        order_ok = all(not r["order_errors"] for r in util)
        workspaces = sum(r["workspaces"] for r in util)
        in_order = workspaces - sum(len({e.split(":")[0] for e in r["order_errors"]}) for r in util)
        first_start = med([r["first_start_after_ready"] for r in util])
        drain = med([r["drain_seconds"] for r in util])
        task_med = med([r["task_seconds_median"] for r in util])
        task_max = max(r["task_seconds_max"] for r in util)
        lines += [
            f"Utilization: a pool of min = max = {UTIL_PODS} pods x {SLOTS} slots; {UTIL_WORKSPACES} "
            f"workspaces whose configuration has no resources; {UTIL_ROUNDS * UTIL_WORKSPACES} "
            f"`plan_and_apply` tasks ({UTIL_ROUNDS} per workspace) queued with `iacctl plan WS --no-wait` "
            "while the pool is frozen (no pod), so all are waiting when work can begin; after `iacctl pool "
            "unfreeze`, one `iacctl pods recover` creates the pods and starts the queue, and from then on "
            "only the product drives it (see below). Each plan has no changes and ends "
            "`planned_and_finished`. A thread reads the slots' "
            "states and the queue from the store every 0.1 s. Utilization = busy-slot-seconds / "
            f"({UTIL_PODS * SLOTS} x seconds during which a task was pending), from the moment the "
            f"pool's {UTIL_PODS * SLOTS} slots exist. Median over {len(util)} runs "
            f"({', '.join(f'{x:.1%}' for x in u)}).",
            "",
        ]
        rows += [
            (f"slot utilization while tasks were queued ({UTIL_PODS} pods x {SLOTS} slots, "
             f"{UTIL_ROUNDS * UTIL_WORKSPACES} tasks)", f"{med(u):.1%}", ">= 90%", verdict(med(u) >= 0.9)),
            ("the same, from the first task's start (runners' start-up left out)", f"{med(steady):.1%}",
             "(for comparison)", "-"),
            ("per-workspace order: each workspace's tasks started in creation order, each after the "
             "previous one ended", f"{in_order} of {workspaces} ({len(util)} runs x {UTIL_WORKSPACES})", "kept",
             verdict(order_ok)),
            ("time from the slots existing to the first task's start", f"{first_start:.2f} s",
             "(for comparison)", "-"),
            ("time to run all tasks (slots ready to the last task's end)", f"{drain:.1f} s",
             "(for comparison)", "-"),
            ("task run time (start to end), median / max", f"{task_med:.2f} s / {task_max:.2f} s",
             "(for comparison)", "-"),
            ("runners (`iacctl-runner` or `iacctl tasks run`) alive at once, at most",
             f"{max(r['max_runners'] for r in util)}",
             "(for comparison)", "-"),
        ]
    lines += [
        "| measure | median | goal | result |",
        "| --- | --- | --- | --- |",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        SECTION_END,
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the scale benchmark")
    parser.add_argument("--util-runs", type=int, default=3, help="runs of the utilization benchmark")
    parser.add_argument("--only", choices=["scale", "utilization"])
    parser.add_argument("--write", type=Path, help="update this file's Kubernetes section (BENCHMARKS.md)")
    args = parser.parse_args()
    scale = scale_bench(args.rounds) if args.only != "utilization" else None
    util = []
    if args.only != "scale":
        for i in range(args.util_runs):
            r = utilization_bench()
            print(f"utilization run {i + 1}: {r['utilization_pending']:.1%} (from the first start "
                  f"{r['utilization_steady']:.1%}), order errors {len(r['order_errors'])}", flush=True)
            util.append(r)
    argv = "python bench/kubernetes.py" + "".join(
        f" {a}" for a in sys.argv[1:] if not a.startswith("--write") and a != str(args.write))
    text = section(scale, util, argv)
    print(text)
    if args.write:
        core_bench.write_section(args.write, text, SECTION_START, SECTION_END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
