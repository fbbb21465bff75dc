"""Whose turn it is (SPEC L4, S2): starting a pending task in a free slot, and making sure a
queued task nobody waits for (--no-wait) is started by someone (task 6 of the core issue); a
queued task whose waiting command is gone is cancelled instead (issue 13, services/abandoned).

A task starts in one transaction: its workspace's turn is free, a slot is claimed with a
compare-and-set, and its status goes pending -> running. On PostgreSQL the workspace row is
locked FOR UPDATE so two processes decide one workspace's turn one after the other; on SQLite
BEGIN IMMEDIATE already serializes writers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import Session, col, select

from iacctl.domain.freeze import format_instant
from iacctl.domain.lifecycle import Status
from iacctl.domain.slots import SlotState
from iacctl.runtimes import local
from iacctl.services import abandoned
from iacctl.services.app import App
from iacctl.services.pools import frozen_now
from iacctl.store import repo
from iacctl.store.models import Pod, Pool, Slot, Task, Workspace


@dataclass(frozen=True)
class StartResult:
    started: bool
    status: Status
    waiting_for: str | None = None
    no_free_slot: bool = False  # the only reason it waits: a pool that scales could make room




def try_start(app: App, task_id: int) -> StartResult:
    host, pid, start = local.this_process()
    with app.store.write() as session:
        task = repo.get_task(session, task_id)
        if task.status != Status.PENDING:
            return StartResult(False, Status(task.status))
        ws = session.exec(
            select(Workspace).where(Workspace.id == task.workspace_id).with_for_update()
        ).one()
        if task.kind == "plan_and_apply":
            # The task holding the turn says more than the lock it holds: name it first.
            blocker = repo.workspace_turn_taken(session, ws.id or 0, task_id)
            if blocker is not None:
                return StartResult(False, Status.PENDING,
                                   f"task {blocker.id} ({blocker.status}) has workspace {ws.name}'s turn")
            if ws.lock_holder is not None and ws.locked_by_task_id != task.id:
                return StartResult(False, Status.PENDING,
                                   f"workspace {ws.name} is locked by {ws.lock_holder}: {ws.lock_reason}")
        window = frozen_now(session, ws.pool_id)
        if window is not None:
            # S4: no task starts in a frozen pool; it waits pending and says why.
            pool = session.get(Pool, ws.pool_id)
            return StartResult(False, Status.PENDING,
                               f"pool {pool.name if pool else ws.pool_id} is frozen until {format_instant(window[1])}")
        slot = repo.claim_idle_slot(session, ws.pool_id, task_id)
        if slot is None:
            pool = session.get(Pool, ws.pool_id)
            return StartResult(False, Status.PENDING,
                               f"no free slot in pool {pool.name if pool else ws.pool_id}", no_free_slot=True)
        repo.transition(
            session, task_id, Status.PENDING, Status.RUNNING, f"started in slot {repo.slot_place(session, slot.id)}",
            slot_id=slot.id, pod_id=slot.pod_id, pool_id=ws.pool_id, plan_slot_id=slot.id,
            started_at=repo.now(), runner_host=host, runner_pid=pid, runner_start=start,
            heartbeat_at=repo.now(), error=None,
        )
        return StartResult(True, Status.RUNNING)


def startable(app: App, task: Task) -> bool:
    """Could this pending task start now? A read-only guess; try_start decides for real."""
    with app.store.read() as session:
        ws = session.get(Workspace, task.workspace_id)
        if ws is None:
            return False
        if task.kind == "plan_and_apply":
            if ws.lock_holder is not None and ws.locked_by_task_id != task.id:
                return False
            if repo.workspace_turn_taken(session, ws.id or 0, task.id or 0) is not None:
                return False
        if frozen_now(session, ws.pool_id) is not None:
            return False
        free = session.exec(
            select(Slot.id).join(Pod, Pod.id == Slot.pod_id)  # type: ignore[arg-type]
            .where(Pod.pool_id == ws.pool_id, Pod.status == "ready", Slot.state == SlotState.IDLE)
        ).first()
        return free is not None


def creator_waiting(task: Task) -> bool:
    alive = local.process_alive(task.creator_host, task.creator_pid, task.creator_start)
    return alive is not False


def kick_queue(app: App) -> list[int]:
    """Start, as detached `iacctl tasks run` processes, the queued tasks that can run now and that
    nobody waits for. Returns their ids. Safe to call from anywhere, any number of times: the
    runners race through try_start's compare-and-set and only one wins a task.

    At most one runner per idle slot of the task's pool is started (item 10): every task that
    ends kicks the queue, and a runner per startable task at each kick piled up hundreds of
    processes that mostly lost the race, each paying Python's start-up on the same cores as
    the tasks."""
    started: list[int] = []
    with app.store.read() as session:
        pending = repo.pending_tasks(session)
        free = idle_slots_by_pool(session)
        blocked = turn_blocked(session, pending)
    for task in pending:
        if abandoned.creator_gone(task):  # issue 13: never started by someone else; cancelled
            abandoned.cancel_abandoned(app, task.id or 0)
            continue
        if creator_waiting(task) or task.id in blocked:
            continue
        if task.pool_id is not None and free.get(task.pool_id, 0) <= 0:
            continue
        if startable(app, task):
            start_runner(app, task.id or 0)
            started.append(task.id or 0)
            if task.pool_id is not None:
                free[task.pool_id] -= 1
    return started


def start_runner(app: App, task_id: int) -> int:
    """A detached runner for a queued task (`iacctl tasks run ID`): forked from this process
    when that is safe, so it skips Python's start-up; otherwise a new process. Its pid."""
    db = str(app.settings.db_path) if app.settings.db_path else None

    def runner() -> int:  # pragma: no cover - runs in the forked child
        from iacctl.executor.watch import interrupted, stop_gracefully_on_signals
        from iacctl.services.app import App as ChildApp
        from iacctl.services.runs import run_queued

        # A fresh store connection: the parent's stay untouched (closing a PostgreSQL
        # connection shared with the parent would end the parent's session too).
        interrupted.clear()
        stop_gracefully_on_signals()
        child = ChildApp(db)
        try:
            run_queued(child, task_id)
        finally:
            child.close()
        return 0

    pid = None
    if local.can_fork():
        app.store.dispose()  # SQLite's locks and shared memory must not cross fork()
        pid = local.fork_detached(runner)
    if pid is None:
        pid = local.spawn_detached([*(["--db", db] if db else []), "tasks", "run", str(task_id)])
    return pid


def take_next(app: App) -> int | None:
    """Start here the oldest queued task that nobody waits for and that can start now; its id,
    or None when there is none (a runner going on with the next task)."""
    with app.store.read() as session:
        pending = repo.pending_tasks(session)
    for task in pending:
        if abandoned.creator_gone(task):  # issue 13: never started by someone else; cancelled
            abandoned.cancel_abandoned(app, task.id or 0)
            continue
        if creator_waiting(task) or not startable(app, task):
            continue
        if try_start(app, task.id or 0).started:
            return task.id
    return None


def turn_blocked(session: Session, pending: Sequence[Task]) -> set[int]:
    """The queued plan_and_apply tasks that cannot start whatever the slots (L4, L5): another
    task of their workspace holds the turn (running or apply_pending, or older and queued), or
    someone else holds the lock. Two queries however many tasks are queued (item 10: the sweep
    reads the queue of 1,000 pods); try_start decides for real."""
    ws_ids = {t.workspace_id for t in pending if t.kind == "plan_and_apply"}
    if not ws_ids:
        return set()
    queued_in = select(Task.workspace_id).where(Task.status == Status.PENDING, Task.kind == "plan_and_apply")
    busy: set[int] = set()
    first_pending: dict[int, int] = {}
    for ws_id, task_id, status in session.exec(
        select(Task.workspace_id, Task.id, Task.status)
        .where(Task.kind == "plan_and_apply", col(Task.workspace_id).in_(queued_in),
               col(Task.status).in_([Status.RUNNING, Status.APPLY_PENDING, Status.PENDING]))
    ).all():
        if status == Status.PENDING:
            first_pending[ws_id] = min(first_pending.get(ws_id, task_id or 0), task_id or 0)
        else:
            busy.add(ws_id)
    locks = {ws.id: ws for ws in session.exec(select(Workspace).where(col(Workspace.id).in_(queued_in))).all()}
    blocked = set()
    for task in pending:
        if task.kind != "plan_and_apply":
            continue
        ws = locks.get(task.workspace_id)
        if (task.workspace_id in busy or first_pending.get(task.workspace_id) != task.id
                or (ws is not None and ws.lock_holder is not None and ws.locked_by_task_id != task.id)):
            blocked.add(task.id or 0)
    return blocked


def idle_slots_by_pool(session: Session) -> dict[int, int]:
    rows = session.exec(
        select(Pod.pool_id, func.count(col(Slot.id))).join(Slot, col(Slot.pod_id) == col(Pod.id))
        .where(Pod.status == "ready", Slot.state == SlotState.IDLE).group_by(col(Pod.pool_id))
    ).all()
    return {int(pool_id): int(n) for pool_id, n in rows}
