"""`iacctl drift check` and `drift show` (SPEC F5, issue 12 item 2): a refresh-only plan of a
workspace as a speculative task in a slot, and the drift it recorded on the workspace.

A check never takes the workspace lock and never applies: it is a `drift_check` task, which the
executor plans with `-refresh-only` and ends planned_and_finished, recording the drifted
resources (and the drift notification, when the set is new or changed) in that same
transaction. A workspace that is busy, or whose last plan or apply failed, is skipped with the
reason (domain.drift.skip_reason), decided in the transaction that would queue the check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from iacctl.domain.drift import DriftedResource, skip_reason
from iacctl.domain.lifecycle import Status, TaskKind
from iacctl.errors import IacctlError, TaskCancelled, UsageError
from iacctl.executor import terraform as tf
from iacctl.executor.progress import Reporter
from iacctl.executor.snapshot import archive_directory, store_snapshot
from iacctl.executor.watch import interrupted
from iacctl.runtimes import local
from iacctl.services import queue
from iacctl.services.app import App, current_actor
from iacctl.services.views import drift_view, drifted_resources
from iacctl.store import repo
from iacctl.store.models import OutboxEntry, Pool, Task, Workspace

# What a check came to, per workspace (the CLI's exit code is the worst of them: C3 / issue 12).
DRIFTED = "drifted"
NO_DRIFT = "no_drift"
SKIPPED = "skipped"
FAILED = "failed"
CANCELLED = "cancelled"

# --all: how often a check waiting for a place looks again (real plans go first, see _place_free).
PLACE_POLL_SECONDS = 0.2


@dataclass
class CheckResult:
    workspace: str
    outcome: str
    task: int | None = None
    reason: str | None = None
    drifted: list[DriftedResource] = field(default_factory=list)
    notified: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"workspace": self.workspace, "outcome": self.outcome, "task": self.task, "reason": self.reason,
                "drifted": [r.as_json() for r in self.drifted], "notified": self.notified}


def check(app: App, names: Sequence[str] | None, reporter_for: Callable[[str], Reporter],
          on_result: Callable[[CheckResult], None] = lambda _: None,
          wait_timeout: float | None = None) -> list[CheckResult]:
    """Check the named workspaces (None: every workspace), as many at once as their pools'
    running places allow, without taking a place a real plan waits for. Unknown names are
    refused (64) before anything is written. Results in the order of the names."""
    with app.store.read() as session:
        if names is None:
            rows = list(session.exec(select(Workspace).order_by(col(Workspace.name))).all())
        else:
            rows = [repo.get_workspace(session, n) for n in dict.fromkeys(names)]
        pools = {p.id: p for p in session.exec(select(Pool)).all()}
    if names is not None and len(rows) == 1:
        # One named workspace: the same refusals as `plan` (X4), before anything is written.
        _check_runnable(rows[0])
        result = _check_one(app, rows[0], reporter_for(rows[0].name), wait_timeout)
        on_result(result)
        return [result]
    places = sum(_places(pools[pid]) for pid in {ws.pool_id for ws in rows} if pid in pools)
    results: dict[str, CheckResult] = {}
    lock = threading.Lock()

    def one(ws: Workspace) -> None:
        try:
            if interrupted.is_set():
                # Ctrl-C / SIGTERM: the checks not started yet are not queued at all.
                result = CheckResult(ws.name, CANCELLED, reason="interrupted before its check was queued")
            else:
                _check_runnable(ws)
                result = _check_one(app, ws, reporter_for(ws.name), wait_timeout, polite=True)
        except TaskCancelled as exc:
            result = CheckResult(ws.name, CANCELLED, reason=str(exc))
        except IacctlError as exc:
            result = CheckResult(ws.name, FAILED, reason=str(exc))
        with lock:
            results[ws.name] = result
            on_result(result)

    with ThreadPoolExecutor(max_workers=max(1, min(places, len(rows))), thread_name_prefix="drift") as pool:
        list(pool.map(one, rows))
    return [results[ws.name] for ws in rows]


def _places(pool: Pool) -> int:
    """How many tasks the pool runs at once: the local pool's running places, a Kubernetes
    pool's slots at its most pods."""
    return pool.slots_per_pod * (1 if pool.backend == "local" else max(1, pool.max_pods))


def _check_runnable(ws: Workspace) -> None:
    source = Path(ws.source_dir)
    if not source.is_dir():
        raise UsageError(f"workspace {ws.name}'s directory {source} does not exist; point the workspace at its "
                         f"configuration with: iacctl workspace set {ws.name} --dir DIR")
    tf.find_binary(ws.terraform_bin, ws.terraform_version)


def _check_one(app: App, ws: Workspace, reporter: Reporter, wait_timeout: float | None,
               polite: bool = False) -> CheckResult:
    if polite:
        _wait_for_place(app, ws.pool_id)
    task_id, why = _queue(app, ws.name)
    if task_id is None:
        return CheckResult(ws.name, SKIPPED, reason=why)
    reporter.note(f"task {task_id}: drift check of workspace {ws.name} queued")
    task = queue.run_when_turn(app, task_id, reporter, wait_timeout=wait_timeout)
    return _result_of(app, ws.name, task)


def _queue(app: App, name: str) -> tuple[int | None, str | None]:
    """Queue a drift check of the workspace unless it is to be skipped; the rule is asked in
    the transaction that writes the task, so a plan queued meanwhile is seen."""
    actor = current_actor(None)
    host, pid, start = local.this_process()
    with app.store.read() as session:
        source = Path(repo.get_workspace(session, name).source_dir)
    data, digest = archive_directory(source)  # issue 18 item 1: the configuration it is created with
    with app.store.write() as session:
        ws = repo.get_workspace(session, name)
        live, last = repo.drift_facts(session, ws.id or 0)
        why = skip_reason(name, live, last)
        if why is not None:
            return None, why
        t = repo.now()
        # The command waits for it: if it exits first, the task is cancelled, never run later.
        snapshot = store_snapshot(session, app.store.cipher, ws.id or 0, data, digest)
        task = Task(workspace_id=ws.id or 0, kind=TaskKind.DRIFT_CHECK, status=Status.PENDING, created_at=t,
                    updated_at=t, pool_id=ws.pool_id, creator_host=host, creator_pid=pid, creator_start=start,
                    heartbeat_at=t, config_snapshot_id=snapshot.id, created_by=actor.to_json())
        session.add(task)
        session.flush()
        repo.add_event(session, task.id or 0, "status", None, Status.PENDING,
                       f"drift check queued for workspace {name} by {actor.said()}")
        repo.write_follow_ups(session, task.id or 0, None, Status.PENDING)
        return task.id, None


def _wait_for_place(app: App, pool_id: int) -> None:
    """--all never starves real plans: a check is queued only when its pool has a running place
    free and no other task (a plan, an apply) is waiting in it; those go first."""
    while not interrupted.is_set():
        with app.store.read() as session:
            pool = session.get(Pool, pool_id)
            running = int(session.execute(
                select(func.count()).select_from(Task)
                .where(col(Task.pool_id) == pool_id, col(Task.status) == Status.RUNNING)
            ).scalar() or 0)
            waiting = int(session.execute(
                select(func.count()).select_from(Task)
                .where(col(Task.pool_id) == pool_id, col(Task.status) == Status.PENDING,
                       col(Task.kind) != TaskKind.DRIFT_CHECK)
            ).scalar() or 0)
        if pool is None or (running < _places(pool) and waiting == 0):
            return
        time.sleep(PLACE_POLL_SECONDS)


def _result_of(app: App, name: str, task: Task) -> CheckResult:
    task_id = task.id or 0
    if task.status == Status.PLANNED_AND_FINISHED:
        with app.store.read() as session:
            row = repo.drift_of(session, task.workspace_id)
            notified = bool(session.execute(
                select(func.count()).select_from(OutboxEntry)
                .where(col(OutboxEntry.task_id) == task_id, col(OutboxEntry.event) == "drift_detected")
            ).scalar())
        drifted = drifted_resources(row.resources_json) if row is not None and row.task_id == task_id else []
        return CheckResult(name, DRIFTED if drifted else NO_DRIFT, task_id, drifted=drifted, notified=notified)
    if task.status == Status.CANCELLED:
        return CheckResult(name, CANCELLED, task_id, reason=task.error)
    return CheckResult(name, FAILED, task_id,
                       reason=f"{task.error}; full log: iacctl tasks logs {task_id}" if task.error else task.status)


def show(app: App, name: str) -> dict[str, Any]:
    """F5: the workspace's last drift check: when, by which task (its saved plan: iacctl tasks
    plan ID), the drifted resources and which attributes differ, and whether an apply cleared it."""
    with app.store.read() as session:
        ws = repo.get_workspace(session, name)
        row = repo.drift_of(session, ws.id or 0)
    return {"workspace": name, **drift_view(row)}
