"""Many iacctl processes on one store at once (SPEC C5, S2, L6), on SQLite and PostgreSQL:
no "database is locked", one schema and one local pool on a brand-new store, slots assigned
atomically, and racing confirmations applying exactly once."""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlmodel import col, select

from iacctl.domain.lifecycle import Status
from iacctl.store.models import Task
from tests.conftest import Env, Result

WORKERS = 8


def _worker(env: Env, name: str, barrier: threading.Barrier) -> list[tuple[tuple[str, ...], Result, int]]:
    """One user's session: each step is one iacctl process, with its expected exit code."""
    steps: list[tuple[tuple[str, ...], int]] = [
        (("workspace", "create", name, "--dir", str(env.root / f"src-{name}")), 0),
        (("workspace", "var", "set", name, "region", f"region-{name}"), 0),
        (("plan", name, "--plan-only", "--quiet"), 2),  # a speculative plan with changes exits 2
        (("tasks", "list", "--json"), 0),
        (("pods", "list", "--json"), 0),
    ]
    barrier.wait()  # all eight start together, on a store that does not exist yet
    return [(args, env.run(*args), code) for args, code in steps]


@pytest.mark.slow
def test_eight_processes_on_a_new_store_never_see_database_is_locked(any_env: Env) -> None:
    env = any_env
    names = [f"w{i}" for i in range(WORKERS)]
    for name in names:
        env.config("simple", into=f"src-{name}")
    if env.backend == "sqlite":
        assert not env.db_path.exists()
    barrier = threading.Barrier(WORKERS)
    with ThreadPoolExecutor(WORKERS) as pool:
        sessions = list(pool.map(lambda n: _worker(env, n, barrier), names))

    for steps in sessions:
        for args, result, code in steps:
            shown = f"iacctl {' '.join(args)} exited {result.code}\n{result.out}\n{result.err}"
            assert "database is locked" not in result.err, shown
            assert result.code == code, shown
            if args[-1] == "--json":
                result.json()  # one JSON document, whatever the others were doing
    # The schema and the embedded local pool were created once, whoever came first.
    assert [p["name"] for p in env.ok("pool", "list", "--json").json()] == ["local"]
    pods = env.ok("pods", "list", "--json").json()
    assert [(p["name"], [s["state"] for s in p["slots"]]) for p in pods] == [("local", ["idle"] * 3)]
    assert sorted(w["name"] for w in env.ok("workspace", "list", "--json").json()) == names
    tasks = env.tasks()
    assert sorted(t["workspace"] for t in tasks) == names
    assert {t["status"] for t in tasks} == {"planned_and_finished"}


# -- S2: slots are assigned atomically across processes -------------------------------------------


def _running_slots(app: Any) -> list[int | None]:
    """The slot of every running task, read in one statement."""
    with app.store.read() as session:
        return list(session.exec(select(Task.slot_id).where(col(Task.status) == Status.RUNNING)).all())


def test_concurrent_plans_never_share_a_slot(any_env: Env) -> None:
    env = any_env
    names = [f"s{i}" for i in range(6)]
    for name in names:
        env.workspace(name)
    app = env.app()
    procs = [env.spawn("plan", name, "--plan-only", "--quiet") for name in names]

    most_running = 0
    while any(p.poll() is None for p in procs):
        slots = _running_slots(app)
        # Never two running tasks in one slot, never more running than the 3 slots.
        assert None not in slots and len(set(slots)) == len(slots), slots
        most_running = max(most_running, len(slots))
        time.sleep(0.02)
    app.close()
    assert most_running <= 3
    outputs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [2] * 6, outputs

    tasks = env.tasks()
    assert [t["status"] for t in tasks] == ["planned_and_finished"] * 6
    assert {t["slot"] for t in tasks} <= {0, 1, 2}
    # Afterwards too: the tasks that ran in one slot ran one after the other.
    app = env.app()
    with app.store.read() as session:
        rows = session.exec(select(Task).order_by(col(Task.started_at))).all()
        spans: dict[int | None, list[tuple[float, float]]] = {}
        for row in rows:
            assert row.started_at is not None and row.finished_at is not None
            spans.setdefault(row.plan_slot_id, []).append((row.started_at, row.finished_at))
    app.close()
    for slot_spans in spans.values():
        for (_, finished), (started, _) in itertools.pairwise(slot_spans):
            assert finished <= started
    assert [s["state"] for s in env.ok("pods", "list", "--json").json()[0]["slots"]] == ["idle"] * 3


# -- L6: racing confirmations apply at most once --------------------------------------------------


def test_ten_concurrent_confirmations_apply_exactly_once(any_env: Env) -> None:
    env = any_env
    env.workspace("net")
    env.ok("plan", "net", "--quiet", code=2)

    procs = [env.spawn("confirm-apply", "1", "--quiet") for _ in range(10)]
    results = [(p.wait(timeout=180), *p.communicate()) for p in procs]

    codes = sorted(code for code, _, _ in results)
    assert codes == [0] + [5] * 9, results
    for code, _out, err in results:
        if code == 5:
            assert "database is locked" not in err
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("iacctl: "), err
            assert "task 1" in lines[0]
    task = env.task(1)
    assert task["status"] == "applied"
    versions = env.ok("state", "versions", "net", "--json").json()
    assert len(versions) == 1 and versions[0]["task"] == 1
    confirmations = [
        h for h in task["history"] if h["kind"] == "status" and (h["from"], h["to"]) == ("apply_pending", "running")
    ]
    assert len(confirmations) == 1
