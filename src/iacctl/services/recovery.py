"""The recovery sweep (SPEC S8, first part; E3, H1): `iacctl pods recover`.

Safe from cron beside other commands and idempotent: it touches only tasks whose process is
gone, slots and locks whose task no longer holds them, and work directories of idle slots.
Every repair is a compare-and-set, so a sweep racing a live command changes nothing of it.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from iacctl.domain.lifecycle import Stage, Status, is_terminal
from iacctl.domain.slots import SlotPlace, SlotState
from iacctl.errors import TransitionConflict
from iacctl.executor.binaries import product
from iacctl.executor.termination import APPLY_TOUCHED, end_task, keep_applied_state, save_work_dir_state
from iacctl.runtimes import local
from iacctl.runtimes.base import CommandState
from iacctl.runtimes.kubernetes import KubernetesRuntime
from iacctl.services import queue
from iacctl.services.app import App
from iacctl.services.runs import plan_context_lost, reset_to_pending
from iacctl.store import repo
from iacctl.store.models import Pod, Pool, Slot, Task, Workspace

# A runner on another machine (shared PostgreSQL store) is judged by its heartbeat.
HEARTBEAT_TIMEOUT_S = 120.0
_FINISHED_APPLY = frozenset({Stage.SAVING_STATE, Stage.POST_APPLY})


@dataclass
class Action:
    action: str
    task: int | None = None
    workspace: str | None = None
    slot: str | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def runner_gone(task: Task) -> bool:
    alive = local.process_alive(task.runner_host, task.runner_pid, task.runner_start)
    if alive is None:
        return task.heartbeat_at is None or repo.now() - task.heartbeat_at > HEARTBEAT_TIMEOUT_S
    return not alive


def recover_task(app: App, task_id: int, reason: str, outcome: Status = Status.FAILED) -> Status:
    """End a running task whose process is gone, as its own process would have (E2)."""
    with app.store.read() as session:
        task = repo.get_task(session, task_id)
        place = repo.slot_place(session, task.slot_id)
    if is_terminal(Status(task.status)):
        return Status(task.status)
    runtime = app.runtime_for_pool_id(task.pool_id or 0)
    finished_apply = task.stage in _FINISHED_APPLY
    if isinstance(runtime, KubernetesRuntime):
        # Item 2: Terraform ran detached in the pod; its files say how it ended.
        settled = _settle_in_pod(app, runtime, task, place, reason, outcome)
        if settled is not None:
            return settled
        finished_apply = finished_apply or task.stage == Stage.APPLYING
    elif task.child_pid and task.runner_host in (None, local.hostname()):
        # The kernel already sent it SIGINT when its parent died; wait for it to write its state.
        with app.store.read() as session:
            ws = repo.workspace_by_id(session, task.workspace_id)
            binary = ws.terraform_bin or (product() if ws.terraform_version else "terraform")
        local.stop_orphan(task.child_pid, Path(binary).name)
    if finished_apply and place is not None:
        # The apply itself finished before the process died: store its state, never call it failed.
        try:
            version_id = save_work_dir_state(app.store, runtime, task_id, place, partial=False)
        except Exception as exc:
            from iacctl.executor.progress import SilentReporter
            from iacctl.executor.tasklog import TaskLog

            log = TaskLog(app.store, task_id, SilentReporter())
            return keep_applied_state(app.store, runtime, task_id, place, log, app.settings.work_root,
                                      f"{reason}; {exc}")
        with app.store.write() as session:
            task = repo.get_task(session, task_id)
            if task.status != Status.RUNNING:
                return Status(task.status)
            version = version_id or repo.latest_state_version_id(session, task.workspace_id)
            repo.transition(session, task_id, Status.RUNNING, Status.APPLIED,
                            f"{reason}; the apply had finished and its state is stored",
                            state_version_id=version)
            repo.release_slot_of(session, task_id)
            repo.unlock_workspace(session, task.workspace_id, task_id=task_id)
        runtime.remove_work_dir(place)
        return Status.APPLIED
    return end_task(app.store, runtime, task_id, outcome, reason, log=None, place=place)


def _settle_in_pod(app: App, runtime: KubernetesRuntime, task: Task, place: SlotPlace | None, reason: str,
                   outcome: Status) -> Status | None:
    """A Kubernetes task whose runner is gone: None when its apply ended 0 in the pod (the
    caller stores the state and ends it applied), else how it ended or RUNNING while Terraform
    still applies in the pod (a later sweep settles it)."""
    task_id = task.id or 0
    state = runtime.command_state(place) if place is not None else CommandState(pod_gone=True)
    if state.pod_gone:
        keep = None
        message = f"{reason}; its pod is gone"
        if task.stage in APPLY_TOUCHED:
            with app.store.read() as session:
                ws = repo.workspace_by_id(session, task.workspace_id)
            keep = (f"task {task_id}'s pod was lost during {task.stage}: the infrastructure may be partly "
                    f"changed and its state was not stored; inspect it, then run: iacctl workspace unlock {ws.name}")
            message += "; the workspace stays locked until an operator unlocks it"
        return end_task(app.store, runtime, task_id, Status.FAILED, message, log=None, place=place,
                        keep_lock_reason=keep)
    if task.stage == Stage.APPLYING and state.running and outcome != Status.CANCELLED:
        return Status.RUNNING
    if state.running and place is not None:
        runtime.stop_command(place)  # E1: SIGINT, wait, then kill what is left
        state = runtime.command_state(place)
    if task.stage == Stage.APPLYING and state.exit_code == 0:
        return None
    if task.stage in _FINISHED_APPLY:
        return None
    return end_task(app.store, runtime, task_id, outcome, reason, log=None, place=place)


def recover(app: App) -> list[Action]:
    actions: list[Action] = []
    actions += _reconcile_pools(app)
    repaired = _dead_runners(app) + _lost_contexts(app)
    actions += repaired
    actions += _leaked_slots(app)
    actions += _leaked_locks(app)
    if any(a.action in ("replanning", "failed", "cancelled", "applied") for a in repaired):
        # Re-planned tasks need pods (S3) before the queue can start them.
        actions += _reconcile_pools(app)
    actions += _stale_work_dirs(app)
    actions += _overdue_run_task_results(app)
    for task_id in queue.kick_queue(app):
        actions.append(Action("started", task=task_id, detail="queued task started in the background"))
    return actions


def _dead_runners(app: App) -> list[Action]:
    actions = []
    with app.store.read() as session:
        running = repo.tasks_with_status(session, [Status.RUNNING])
    for task in running:
        if not runner_gone(task):
            continue
        reason = f"its process ({task.runner_host} pid {task.runner_pid}) is gone (found at stage {task.stage})"
        with contextlib.suppress(TransitionConflict):
            final = recover_task(app, task.id or 0, reason)
            if final == Status.RUNNING:
                actions.append(Action("still_applying", task=task.id,
                                      detail=f"{reason}; Terraform still applies in its pod"))
            else:
                actions.append(Action(str(final), task=task.id, detail=reason))
    return actions


def _reconcile_pools(app: App) -> list[Action]:
    """S3/S4/S7 first: one list call per Kubernetes pool marks lost pods, deletes pods in a
    freeze window, scales; the rest of the sweep then trusts the pod records."""
    from iacctl.errors import BackendError
    from iacctl.services.scaling import reconcile_pool

    actions = []
    with app.store.read() as session:
        pools = session.exec(select(Pool).where(Pool.backend == "kubernetes").order_by(col(Pool.name))).all()
    for pool in pools:
        try:
            changes = reconcile_pool(app, pool.name)
        except BackendError as exc:
            actions.append(Action("pool_error", detail=str(exc)))
            continue
        for c in changes:
            kind = "pod" if c["pod"] else "pool"
            actions.append(Action(f"{kind}_{c['change']}", slot=f"{c['pool']}/{c['pod']}" if c["pod"] else c["pool"],
                                  detail=c["detail"]))
    return actions


def _lost_contexts(app: App) -> list[Action]:
    """S5 in the sweep: an apply_pending task whose slot or work directory is gone is planned
    again (it waits for a new confirmation)."""
    actions = []
    with app.store.read() as session:
        waiting = repo.tasks_with_status(session, [Status.APPLY_PENDING])
        intact = _intact_kube_contexts(session)
    from iacctl.services import warmup
    from iacctl.services.pools import frozen_now

    for task in waiting:
        lost = None if task.id in intact else plan_context_lost(app, task)
        if lost is None and warmup.expired(task):
            lost = "its warm-up expired"
        if lost is None:
            continue
        with app.store.read() as session:
            pool = session.get(Pool, task.pool_id) if task.pool_id else None
            frozen = pool is not None and frozen_now(session, pool.id or 0) is not None
        if pool is not None and pool.on_lost_context == "warmup":
            if frozen:
                continue  # S4/S6: warmed up once the window is over
            if warmup.retries_left(app, task):
                error = warmup.warm_up(app, task.id or 0)
                if error is None:
                    actions.append(Action("warmed_up", task=task.id, detail=f"plan context lost: {lost}; "
                                                                            "new slot prepared and ready"))
                else:
                    actions.append(Action("warmup_failed", task=task.id, detail=error))
                continue
            lost += f"; warm-up retry limit ({pool.warmup_retry_limit}) reached"
        try:
            with app.store.write() as session:
                current = repo.get_task(session, task.id or 0)
                if current.status != Status.APPLY_PENDING or current.confirmed_at is not None:
                    continue
                reset_to_pending(session, current, f"plan context lost: {lost}")
        except TransitionConflict:
            continue
        actions.append(Action("replanning", task=task.id, detail=f"plan context lost: {lost}"))
    return actions


def _intact_kube_contexts(session: Session) -> set[int]:
    """apply_pending tasks of Kubernetes pools whose reserved slot is theirs on a ready pod:
    the sweep trusts the pod records it just reconciled (item 10: one query, not three per task)."""
    rows = session.exec(
        select(Task.id)
        .join(Slot, col(Slot.id) == col(Task.slot_id))
        .join(Pod, col(Pod.id) == col(Slot.pod_id))
        .join(Pool, col(Pool.id) == col(Pod.pool_id))
        .where(col(Task.status) == Status.APPLY_PENDING, col(Slot.task_id) == col(Task.id),
               col(Slot.state) == SlotState.RESERVED, col(Pod.status) == "ready", col(Pool.backend) == "kubernetes")
    ).all()
    return {int(r) for r in rows if r is not None}


def _leaked_slots(app: App) -> list[Action]:
    actions = []
    with app.store.write() as session:
        busy = session.exec(
            select(Slot, Task).join(Task, col(Task.id) == col(Slot.task_id), isouter=True)
            .where(col(Slot.state) != SlotState.IDLE)
        ).all()
        for slot, task in busy:
            holds = (
                task is not None and task.slot_id == slot.id
                and task.status in (Status.RUNNING, Status.APPLY_PENDING)
            )
            if not holds:
                slot.state, slot.task_id, slot.updated_at = SlotState.IDLE, None, repo.now()
                session.add(slot)
                actions.append(Action("slot_freed", task=task.id if task else None, slot=str(slot.id),
                                      detail="no live task held it"))
    return actions


def _leaked_locks(app: App) -> list[Action]:
    actions = []
    with app.store.write() as session:
        locked = session.exec(
            select(Workspace, Task).join(Task, col(Task.id) == col(Workspace.locked_by_task_id), isouter=True)
            .where(col(Workspace.locked_by_task_id).is_not(None))
        ).all()
        for ws, task in locked:
            holder = ws.locked_by_task_id
            # failed and applied_state_error keep their lock on purpose, for an operator.
            if task is None or task.status in (Status.PENDING, Status.PLANNED_AND_FINISHED,
                                               Status.APPLIED, Status.CANCELLED):
                repo.unlock_workspace(session, ws.id or 0, task_id=holder)
                actions.append(Action("unlocked", task=holder, workspace=ws.name,
                                      detail="its task no longer holds the lock"))
    return actions


def _overdue_run_task_results(app: App) -> list[Action]:
    """S8/R6: run-task results past their timeout are marked `timeout`, their tokens cleared."""
    from iacctl.services.runtasks import time_out_overdue

    return [Action("run_task_timeout", task=task_id, detail=f"run task {name} result {result_id} timed out")
            for result_id, task_id, name in time_out_overdue(app)]


def _stale_work_dirs(app: App) -> list[Action]:
    actions = []
    with app.store.read() as session:
        rows = session.exec(
            select(Slot, Pod, Pool).join(Pod, col(Pod.id) == col(Slot.pod_id))
            .join(Pool, col(Pool.id) == col(Pod.pool_id)).where(col(Slot.state) == SlotState.IDLE)
        ).all()
    for slot, pod, pool in rows:
        if pool.backend != "local":
            continue  # a pod's slot directories are reset by each task and go with the pod
        runtime = app.runtime_for(pool)
        place = SlotPlace(pool.name, pod.name, slot.slot_index)
        if not runtime.work_dir_exists(place):
            continue
        # Remove it while holding the slot's row (and on SQLite the write lock): a task claiming
        # the slot meanwhile waits, so its fresh work directory is never removed under it.
        with app.store.write() as session:
            current = session.exec(select(Slot).where(Slot.id == slot.id).with_for_update()).first()
            if current is None or current.state != SlotState.IDLE:
                continue  # taken since we looked
            runtime.remove_work_dir(place)
        actions.append(Action("work_dir_removed", slot=str(place), detail="idle slot"))
    return actions
