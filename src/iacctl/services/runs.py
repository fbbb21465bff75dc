"""Planning, confirming, cancelling (SPEC L3-L6, S5, E1-E2): what `iacctl plan`,
`iacctl confirm-apply`, `iacctl cancel` and the detached runner mean."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sqlmodel import Session

from iacctl.domain.lifecycle import Status, TaskKind, is_terminal
from iacctl.domain.slots import SlotState
from iacctl.errors import (
    BackendError,
    Refused,
    Replanned,
    TaskCancelled,
    TaskFailed,
    TransitionConflict,
    UsageError,
)
from iacctl.executor import terraform as tf
from iacctl.executor.progress import Reporter, SilentReporter
from iacctl.executor.run import TaskRun
from iacctl.executor.termination import end_task
from iacctl.executor.watch import interrupted
from iacctl.runtimes import local
from iacctl.runtimes.base import RuntimeError_, SlotPlace
from iacctl.services import queue, runtasks
from iacctl.services.app import App
from iacctl.store import repo
from iacctl.store.models import Pod, Pool, Slot, Task

WAIT_POLL_SECONDS = 0.5
SCALE_RETRY_SECONDS = 5.0
CANCEL_WAIT_SECONDS = 600.0


def plan_workspace(
    app: App, name: str, *, plan_only: bool, wait: bool, reporter: Reporter
) -> Task:
    """Queue a plan of the workspace and, unless `wait` is false, run it here when its turn
    comes. Returns the task as it ended (or as queued)."""
    with app.store.read() as session:
        ws = repo.get_workspace(session, name)
    # X4: refuse what cannot work before writing anything.
    source = Path(ws.source_dir)
    if not source.is_dir():
        raise UsageError(f"workspace {name}'s directory {source} does not exist")
    tf.find_binary(ws.terraform_bin, ws.terraform_version, reporter.note)
    _check_secrets(app, ws.id or 0)
    host, pid, start = local.this_process()
    kind = TaskKind.PLAN if plan_only else TaskKind.PLAN_AND_APPLY
    with app.store.write() as session:
        t = repo.now()
        task = Task(workspace_id=ws.id or 0, kind=kind, status=Status.PENDING, created_at=t, updated_at=t,
                    pool_id=ws.pool_id,
                    creator_host=host if wait else None, creator_pid=pid if wait else None,
                    creator_start=start if wait else None)
        session.add(task)
        session.flush()
        repo.add_event(session, task.id or 0, "status", None, Status.PENDING,
                       f"{kind} queued for workspace {name}")
    task_id = task.id or 0
    reporter.note(f"task {task_id}: {kind} of workspace {name} queued")
    if not wait:
        task = _get(app, task_id)
        if not queue.startable(app, task):
            try:
                _scale_for(app, task_id, reporter)  # S3: a queued task gets a pod too
            except BackendError as exc:
                reporter.note(str(exc))
        queue.kick_queue(app)
        return _get(app, task_id)
    return run_when_turn(app, task_id, reporter)


def _check_secrets(app: App, workspace_id: int) -> None:
    """X4: a key that cannot open the workspace's sensitive variables is found before a task
    is written, not halfway through one."""
    with app.store.read() as session:
        blobs = [v.value_secret for v in repo.variables_of(session, workspace_id) if v.value_secret]
    for blob in blobs:
        app.store.cipher.decrypt(blob)


def run_when_turn(app: App, task_id: int, reporter: Reporter) -> Task:
    """Wait for the task's turn (showing what it waits for), run its plan here, return it."""
    last_reason: str | None = None
    next_scale = 0.0
    while True:
        if interrupted.is_set():
            _cancel_pending(app, task_id, "interrupted while waiting")
        result = queue.try_start(app, task_id)
        if result.started:
            break
        if result.status != Status.PENDING:
            return _get(app, task_id)
        if result.waiting_for != last_reason:
            reporter.note(f"task {task_id} waits: {result.waiting_for}")
            last_reason = result.waiting_for
        if result.no_free_slot and time.monotonic() >= next_scale:
            # S3: a Kubernetes pool with no idle slot scales up for the waiting task.
            next_scale = time.monotonic() + SCALE_RETRY_SECONDS
            if _scale_for(app, task_id, reporter):
                continue
        time.sleep(WAIT_POLL_SECONDS)
    _execute(app, task_id, reporter, lambda run: run.plan())
    return _get(app, task_id)


def _scale_for(app: App, task_id: int, reporter: Reporter) -> bool:
    """Reconcile the task's Kubernetes pool (creating pods for waiting tasks); True if a pod
    was created."""
    from iacctl.services import scaling

    task = _get(app, task_id)
    pool = scaling.pool_of_task(app, task)
    if pool is None or pool.backend != "kubernetes":
        return False
    try:
        changes = scaling.reconcile_pool(app, pool.name)
    except BackendError as exc:
        # Not waited out in silence: the task stays queued and the user hears why.
        raise BackendError(f"task {task_id} stays queued: {exc}; it starts once pool {pool.name} has a "
                           "free slot (iacctl pods recover)") from None
    for c in changes:
        reporter.note(f"pool {c['pool']}: pod {c['pod'] or ''} {c['change']}: {c['detail']}")
    return any(c["change"] == "created" for c in changes)


def run_queued(app: App, task_id: int) -> Task:
    """The detached runner: start the task if it is its turn, else leave it to whoever frees
    the turn (they start a runner again). When its task has ended, the runner takes the next
    queued task that nobody waits for and that can start now, in this same process, until there
    is none: the slot it freed is used again at once, without a new process's start-up, and
    the tasks ending together do not each start a runner per queued task (item 10)."""
    result = queue.try_start(app, task_id)
    if not result.started:
        return _get(app, task_id)
    current: int | None = task_id
    try:
        while current is not None:
            _execute(app, current, SilentReporter(), lambda run: run.plan(), kick=False)
            current = None if interrupted.is_set() else queue.take_next(app)
    finally:
        queue.kick_queue(app)
    return _get(app, task_id)


def _execute(app: App, task_id: int, reporter: Reporter, body: Callable[[TaskRun], Status],
             *, kick: bool = True) -> None:
    try:
        with app.store.read() as session:
            task = repo.get_task(session, task_id)
        runtime = app.runtime_for_pool_id(task.pool_id or 0)
        # R7/C6: the run tasks attached to the workspace, at the stages they are attached to.
        run = TaskRun(app.store, runtime, task_id, reporter, hooks=runtasks.hooks_for(app, task_id))
    except Exception as exc:
        # E3: an error before the executor exists still leaves the task terminal.
        with app.store.read() as session:
            task = repo.get_task(session, task_id)
        runtime = app.runtime_for_pool_id(task.pool_id or 0)
        end_task(app.store, runtime, task_id, Status.FAILED, f"cannot start: {exc}", log=None,
                 place=None)
        raise
    try:
        body(run)
    finally:
        if kick:
            queue.kick_queue(app)


def _cancel_pending(app: App, task_id: int, reason: str) -> None:
    with app.store.write() as session:
        task = repo.get_task(session, task_id)
        if task.status == Status.PENDING:
            repo.transition(session, task_id, Status.PENDING, Status.CANCELLED, reason, error=reason)
    raise TaskCancelled(f"task {task_id} cancelled: {reason}")


def _get(app: App, task_id: int) -> Task:
    with app.store.read() as session:
        return repo.get_task(session, task_id)


# -- confirm-apply --------------------------------------------------------------------------------


def _refusal(session: Session, task: Task) -> str | None:
    """L6: why confirm-apply must not apply this task, or None."""
    ws = repo.workspace_by_id(session, task.workspace_id)
    pool = session.get(Pool, ws.pool_id)
    latest = repo.latest_state_version_id(session, ws.id or 0)
    if task.confirmed_at is not None:
        return f"task {task.id} was already confirmed (it is {task.status})"
    from iacctl.services.pools import frozen_now

    window = frozen_now(session, ws.pool_id)
    if window is not None and pool is not None:
        from iacctl.domain.freeze import format_instant

        # S4: nothing starts in a frozen pool, an apply least of all.
        return f"pool {pool.name} is frozen until {format_instant(window[1])}; confirm task {task.id} after that"
    if task.status != Status.APPLY_PENDING:
        return f"task {task.id} is {task.status}, not apply_pending"
    lifetime = ws.plan_lifetime_s or (pool.plan_lifetime_s if pool else 86400.0)
    if task.planned_at is None or repo.now() - task.planned_at > lifetime:
        return (f"the plan of task {task.id} has expired (older than {lifetime / 3600:g} h); "
                f"plan again with: iacctl plan {ws.name}")
    if ws.locked_by_task_id != task.id:
        holder = ws.lock_holder or "nobody"
        return f"workspace {ws.name} lock is not held by task {task.id} (held by {holder})"
    if latest != task.base_state_version_id:
        return (f"the plan of task {task.id} is stale: workspace {ws.name}'s state changed since it "
                f"was made; plan again with: iacctl plan {ws.name}")
    return None


def _pool_policy(app: App, task: Task) -> str:
    with app.store.read() as session:
        pool = session.get(Pool, task.pool_id) if task.pool_id else None
    return pool.on_lost_context if pool is not None else "replan"


def plan_context_lost(app: App, task: Task) -> str | None:
    """S5: is the reserved slot and its work directory still there? (The sweep first sets aside,
    with one query, the Kubernetes contexts whose pod the reconcile just found ready.)"""
    with app.store.read() as session:
        slot = session.get(Slot, task.slot_id) if task.slot_id else None
        pod = session.get(Pod, slot.pod_id) if slot else None
        pool = session.get(Pool, pod.pool_id) if pod else None
    if slot is None or pod is None or pool is None:
        return "its slot is gone"
    if slot.task_id != task.id or slot.state != SlotState.RESERVED:
        return f"slot {slot.id} is no longer reserved for it"
    if pod.status != "ready":
        return f"pod {pod.name} is gone"
    runtime = app.runtime_for(pool)
    try:
        alive = runtime.pod_alive(pod.name)
    except RuntimeError_ as exc:
        raise BackendError(f"cannot check pod {pod.name}: {exc}") from None
    if not alive:
        from iacctl.services.scaling import mark_pod_lost

        mark_pod_lost(app, pod.id or 0)
        return f"pod {pod.name} is gone"
    try:
        exists = runtime.work_dir_exists(SlotPlace(pool.name, pod.name, slot.slot_index))
    except RuntimeError_ as exc:
        raise BackendError(f"cannot check slot {slot.slot_index} of pod {pod.name}: {exc}") from None
    if not exists:
        return f"the work directory of slot {pool.name}/{pod.name}/slot-{slot.slot_index} is gone"
    return None


def _confirmable(session: Session, task_id: int) -> Task:
    """The task, if confirm-apply may act on it (L6); Refused otherwise. Called again inside the
    writing transaction, so that of racing confirmations only one gets through."""
    task = repo.get_task(session, task_id)
    reason = _refusal(session, task)
    if reason is not None:
        raise Refused(reason)
    return task


def confirm_apply(app: App, task_id: int, *, rebuild: bool, reporter: Reporter) -> Task:
    with app.store.read() as session:
        task = _confirmable(session, task_id)
    lost = plan_context_lost(app, task)
    from iacctl.services import warmup

    if lost is None and warmup.expired(task):
        lost = "its warm-up expired"
    if lost is not None and _pool_policy(app, task) == "warmup" and warmup.retries_left(app, task):
        # S6 at confirm time: the plan context is rebuilt from the store on a new slot (the E6
        # rebuild path on another pod), never applied where it is missing.
        if warmup.move_to_new_slot(app, task_id, f"plan context lost ({lost}); rebuilding it on a new slot",
                                   warming=False):
            reporter.note(f"task {task_id}: the plan context is lost ({lost}); the apply rebuilds it "
                          "from the store on a new slot")
            lost = None
    if lost is not None:
        return _replan(app, task_id, lost, reporter)
    host, pid, start = local.this_process()
    with app.store.write() as session:
        task = _confirmable(session, task_id)
        try:
            repo.transition(
                session, task_id, Status.APPLY_PENDING, Status.RUNNING, "confirmed",
                confirmed_at=repo.now(), runner_host=host, runner_pid=pid, runner_start=start,
                heartbeat_at=repo.now(), cancel_requested_at=None,
            )
        except TransitionConflict as exc:
            raise Refused(str(exc)) from None
        if not repo.set_slot_state(session, task.slot_id or 0, task_id, SlotState.RESERVED, SlotState.RUNNING):
            raise Refused(f"slot {task.slot_id} is no longer reserved for task {task_id}")
        repo.set_lock_reason(session, task.workspace_id, task_id, f"task {task_id} is applying")
    reporter.note(f"task {task_id}: applying the saved plan {(task.plan_hash or '')[:16]}")
    _execute(app, task_id, reporter, lambda run: run.apply(rebuild=rebuild))
    return _get(app, task_id)


def _replan(app: App, task_id: int, lost: str, reporter: Reporter) -> Task:
    """S5: never apply where the plan context is missing: plan again, wait for a new confirmation."""
    host, pid, start = local.this_process()
    with app.store.write() as session:
        task = _confirmable(session, task_id)
        reset_to_pending(session, task, f"plan context lost: {lost}")
        repo.update_task(session, task_id, creator_host=host, creator_pid=pid, creator_start=start)
    reporter.note(f"task {task_id}: the plan context is lost ({lost}); planning again")
    task = run_when_turn(app, task_id, reporter)
    if task.status == Status.APPLY_PENDING:
        raise Replanned(
            f"task {task_id} was re-planned because {lost}; review it and run: iacctl confirm-apply {task_id}"
        )
    return task


def reset_to_pending(session: Session, task: Task, reason: str) -> None:
    """S5: back to pending, with slot, pod, start time and error cleared; the lock goes too and
    is taken again when the new plan waits for confirmation."""
    task_id = task.id or 0
    repo.release_slot_of(session, task_id)
    repo.unlock_workspace(session, task.workspace_id, task_id=task_id)
    repo.transition(
        session, task_id, Status.APPLY_PENDING, Status.PENDING, reason,
        slot_id=None, pod_id=None, plan_slot_id=None, started_at=None, error=None, stage=None,
        plan_hash=None, planned_at=None, runner_host=None, runner_pid=None, runner_start=None,
        creator_host=None, creator_pid=None, creator_start=None, replans=task.replans + 1,
        **repo.WARMUP_CLEARED,
    )


# -- cancel ---------------------------------------------------------------------------------------


def cancel(app: App, task_id: int, *, wait: bool, reporter: Reporter) -> Task:
    task = _get(app, task_id)
    status = Status(task.status)
    if is_terminal(status):
        raise Refused(f"task {task_id} is already {status}")
    if status == Status.PENDING:
        try:
            with app.store.write() as session:
                repo.transition(session, task_id, Status.PENDING, Status.CANCELLED, "cancelled by user",
                                error="cancelled by user")
        except TransitionConflict:
            return cancel(app, task_id, wait=wait, reporter=reporter)
        queue.kick_queue(app)
        return _get(app, task_id)
    if status == Status.APPLY_PENDING:
        runtime = app.runtime_for_pool_id(task.pool_id or 0)
        with app.store.read() as session:
            place = repo.slot_place(session, task.slot_id)
        end_task(app.store, runtime, task_id, Status.CANCELLED, "cancelled by user", log=None,
                 place=place)
        queue.kick_queue(app)
        return _get(app, task_id)
    # Running: ask its process (it interrupts Terraform and goes through the termination path).
    with app.store.write() as session:
        repo.update_task(session, task_id, cancel_requested_at=repo.now())
        repo.add_event(session, task_id, "note", None, None, "cancel requested")
    if local.process_alive(task.runner_host, task.runner_pid, task.runner_start) is False:
        from iacctl.services.recovery import recover_task

        recover_task(app, task_id, "cancelled by user; its process was gone", Status.CANCELLED)
        return _get(app, task_id)
    if not wait:
        return _get(app, task_id)
    reporter.note(f"task {task_id} is {task.stage}: asked its process to stop; waiting")
    deadline = time.monotonic() + CANCEL_WAIT_SECONDS
    while time.monotonic() < deadline:
        task = _get(app, task_id)
        if is_terminal(Status(task.status)):
            break
        if local.process_alive(task.runner_host, task.runner_pid, task.runner_start) is False:
            from iacctl.services.recovery import recover_task

            recover_task(app, task_id, "cancelled by user; its process was gone", Status.CANCELLED)
        time.sleep(0.3)
    task = _get(app, task_id)
    if task.status != Status.CANCELLED:
        if is_terminal(Status(task.status)):
            raise Refused(f"task {task_id} ended {task.status} before the cancel took effect")
        raise TaskFailed(f"task {task_id} has not stopped yet (stage {task.stage})")
    return task
