"""The recovery sweep (SPEC S8; E3, H1, F1): `iacctl pods recover`.

Safe from cron beside other commands and idempotent: it touches only tasks whose process is
gone, slots and locks whose task no longer holds them, and work directories of idle slots.
Every repair is a compare-and-set, so a sweep racing a live command changes nothing of it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from typing import Any

from sqlmodel import Session, col, select

from iacctl.config import heartbeat_timeout
from iacctl.domain.admission import plan_expired, plan_lifetime
from iacctl.domain.durations import format_duration
from iacctl.domain.lifecycle import Status, is_terminal
from iacctl.domain.slots import PodStatus, SlotPlace, SlotState
from iacctl.errors import BackendError, IacctlError, TransitionConflict
from iacctl.executor.termination import APPLY_TOUCHED
from iacctl.services import ending, outbox, plan_context, queue, scaling, state, sync_inventory
from iacctl.services.app import App
from iacctl.services.runtasks import time_out_overdue
from iacctl.store import repo
from iacctl.store.models import InventorySync, Pod, Pool, Slot, Task, Workspace


@dataclass
class Action:
    action: str
    task: int | None = None
    workspace: str | None = None
    slot: str | None = None
    detail: str = ""
    # Issue 21: how it ended, for cron's log: "done", or for a re-plan its end ("failed: CAUSE",
    # "apply_pending: waits for confirmation", "still running" when the sweep stopped waiting).
    outcome: str = "done"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def recover(app: App) -> list[Action]:
    actions: list[Action] = []
    actions += _reconcile_pools(app)
    # Before any slot of this machine is freed, cleaned or reused (issue 18 item 3).
    actions += _left_on_this_machine(app)
    repaired = _dead_runners(app) + _expired_plans(app) + _lost_contexts(app)
    actions += repaired
    actions += _leaked_slots(app)
    actions += _leaked_locks(app)
    if any(a.action in ("replanning", "failed", "cancelled", "applied") for a in repaired):
        # Re-planned tasks need pods (S3) before the queue can start them.
        actions += _reconcile_pools(app)
    actions += _stale_work_dirs(app)
    for task_id, error in queue.cancel_left_behind(app):
        actions.append(Action("cancelled", task=task_id, detail=error))
    actions += _overdue_run_task_results(app)
    for task_id in queue.kick_queue(app):
        actions.append(Action("started", task=task_id, detail="queued task started in the background"))
    actions += _stuck_inventory_syncs(app)
    follow_ups, queued = _follow_ups(app)
    actions += follow_ups
    if queued:
        # F4: the plans run triggers just queued start now, in the background.
        for task_id in queue.kick_queue(app):
            actions.append(Action("started", task=task_id, detail="queued task started in the background"))
    _wait_for_replans(app, actions)
    _name_workspaces(app, actions)
    return actions


REPLAN_WAIT_SECONDS = 120.0


def _wait_for_replans(app: App, actions: list[Action]) -> None:
    """S5, issue 21: a sweep that re-planned a task says how the re-plan ended (a cron log that
    says only "replanning" hides a plan that failed, say for a Terraform not on cron's PATH).
    It waits for those plans, at most REPLAN_WAIT_SECONDS together."""
    replanned = [a for a in actions if a.action == "replanning" and a.task is not None]
    deadline = time.monotonic() + REPLAN_WAIT_SECONDS
    for a in replanned:
        while True:
            task = queue.get_task(app, a.task or 0)
            status = Status(task.status)
            if status not in (Status.PENDING, Status.RUNNING):
                break
            if time.monotonic() > deadline:
                a.outcome = f"still {status} (stage {task.stage}): see iacctl tasks show {a.task}"
                break
            time.sleep(0.3)
        if status == Status.FAILED:
            a.outcome = f"failed: {task.error}"
        elif status == Status.APPLY_PENDING:
            a.outcome = f"apply_pending: re-planned, waits for: iacctl confirm-apply {a.task}"
        elif status not in (Status.PENDING, Status.RUNNING):
            a.outcome = str(status)


def _name_workspaces(app: App, actions: list[Action]) -> None:
    """Issue 21: every action on a task names the task's workspace too."""
    ids = {a.task for a in actions if a.task is not None and a.workspace is None}
    if not ids:
        return
    with app.store.read() as session:
        names = {t.id: ws.name for t, ws in session.exec(
            select(Task, Workspace).join(Workspace, col(Workspace.id) == col(Task.workspace_id))
            .where(col(Task.id).in_(ids))).all()}
    for a in actions:
        if a.task is not None and a.workspace is None:
            a.workspace = names.get(a.task)


_FOLLOW_UP_ACTIONS = {
    "notification": {"delivered": "notified", "retry": "notify_retry", "dead": "notify_dead",
                     "dismissed": "notify_dismissed", "late": "notify_late"},
    "trigger": {"delivered": "triggered", "retry": "trigger_retry", "dead": "trigger_dead",
                "dismissed": "trigger_dismissed", "late": "trigger_late"},
    "inventory": {"delivered": "inventory_synced", "retry": "inventory_retry", "dead": "inventory_dead",
                  "dismissed": "inventory_skipped", "late": "inventory_late"},
}


def _follow_ups(app: App) -> tuple[list[Action], list[int]]:
    """S8/F1: outbox entries that are due (new, their retry time come, or claimed by a process
    that is gone) are delivered or handled, at most 8 at a time and one at a time per lane.
    Also the tasks run triggers queued."""
    app.outbox_swept()
    results = outbox.deliver_due(app.store)
    actions = []
    for r in results:
        name = _FOLLOW_UP_ACTIONS.get(r.kind, {}).get(r.result, r.result)
        actions.append(Action(name, task=r.task_id, detail=f"{r.destination} ({r.event}, outbox entry {r.entry_id}): "
                                                           f"{r.detail}"))
    return actions, [t for r in results for t in r.queued]


def _stuck_inventory_syncs(app: App) -> list[Action]:
    """S8, F2, seed 002 H6: an inventory sync left `syncing` (its process killed, or past the
    timeout) is reset to idle, so that its entry, due again, syncs anew."""
    actions = []
    with app.store.write() as session:
        at = repo.now()
        for row, ws in session.exec(
            select(InventorySync, Workspace).join(Workspace, col(Workspace.id) == col(InventorySync.workspace_id))
            .where(col(InventorySync.status) == "syncing")
        ).all():
            why = sync_inventory.stuck(row, at)
            if why is None:
                continue
            row.status, row.last_error, row.updated_at = "idle", f"sync of serial {row.syncing_serial} reset: {why}", at
            row.syncing_serial = row.sync_started_at = row.sync_host = row.sync_pid = row.sync_start = None
            session.add(row)
            actions.append(Action("inventory_reset", workspace=ws.name, detail=row.last_error))
    return actions


def _left_on_this_machine(app: App) -> list[Action]:
    """Issue 18 item 3: tasks another machine's sweep (or cancel) ended while their runner here
    was dead. Their Terraform's process group is ended and the partial state their work
    directory holds is stored (ending.settle_left_here)."""
    actions = []
    with app.store.read() as session:
        candidates = session.exec(select(Task).where(col(Task.child_pid).is_not(None))).all()
    for task in candidates:
        if not ending.left_here(task):
            continue
        settled = ending.settle_left_here(app, task.id or 0)
        if settled is None:
            continue
        detail, kept = settled
        if kept is not None:
            # What `iacctl state save-partial` does: store it, give the workspace back.
            try:
                version = state.save_partial(app, task.id or 0)
                detail += f"; partial state saved as state version {version['id']}; the workspace is unlocked"
            except IacctlError as exc:
                detail += f"; {exc}"
        actions.append(Action("settled_here", task=task.id, detail=detail))
    return actions


def _dead_runners(app: App) -> list[Action]:
    actions = []
    with app.store.read() as session:
        running = repo.tasks_with_status(session, [Status.RUNNING])
    for task in running:
        if not ending.runner_gone(task):
            continue
        reason = f"its process ({task.runner_host} pid {task.runner_pid}) is gone (found at stage {task.stage})"
        if ending.runner_elsewhere(task):
            reason += f": no heartbeat for {format_duration(heartbeat_timeout())} (IACCTL_HEARTBEAT_TIMEOUT)"
        outcome = Status.FAILED
        if task.cancel_requested_at is not None:
            # Issue 18 item 3: a recorded cancel is what the user asked; the sweep carries it out.
            outcome = Status.CANCELLED
            reason = f"cancel requested; {reason}"
        with contextlib.suppress(TransitionConflict):
            final = ending.end_abandoned(app, task.id or 0, reason, outcome)
            if final == Status.RUNNING:
                actions.append(Action("still_applying", task=task.id,
                                      detail=f"{reason}; Terraform still applies in its pod"))
            else:
                actions.append(Action(str(final), task=task.id, detail=reason))
    return actions


def _reconcile_pools(app: App) -> list[Action]:
    """S3/S4/S7 first: one list call per Kubernetes pool marks lost pods, deletes pods in a
    freeze window, scales; the rest of the sweep then trusts the pod records."""
    actions = []
    with app.store.read() as session:
        pools = session.exec(select(Pool).where(Pool.backend == "kubernetes").order_by(col(Pool.name))).all()
    for pool in pools:
        try:
            changes = scaling.reconcile_pool(app, pool.name)
        except BackendError as exc:
            actions.append(Action("pool_error", detail=str(exc)))
            continue
        for c in changes:
            kind = "pod" if c["pod"] else "pool"
            actions.append(Action(f"{kind}_{c['change']}", slot=f"{c['pool']}/{c['pod']}" if c["pod"] else c["pool"],
                                  detail=c["detail"]))
    return actions


def _expired_plans(app: App) -> list[Action]:
    """L6, seed 002 M7: plans waiting for confirmation past their lifetime are discarded (task
    cancelled, lock, slot and work directory freed) instead of blocking their workspace."""
    actions = []
    with app.store.read() as session:
        rows = session.exec(
            select(Task, Workspace, Pool).join(Workspace, col(Workspace.id) == col(Task.workspace_id))
            .join(Pool, col(Pool.id) == col(Workspace.pool_id))
            .where(col(Task.status) == Status.APPLY_PENDING, col(Task.confirmed_at).is_(None))
        ).all()
    now = repo.now()
    for task, ws, pool in rows:
        if plan_expired(task.planned_at, plan_lifetime(ws.plan_lifetime_s, pool.plan_lifetime_s), now) and \
                ending.discard_expired(app, task.id or 0):
            actions.append(Action("cancelled", task=task.id, workspace=ws.name,
                                  detail=f"plan expired; workspace {ws.name} is free"))
    return actions


def _lost_contexts(app: App) -> list[Action]:
    """S5 in the sweep: an apply_pending task whose slot or work directory is gone is planned
    again (it waits for a new confirmation)."""
    actions = []
    with app.store.read() as session:
        waiting = repo.tasks_with_status(session, [Status.APPLY_PENDING])
        intact = _intact_kube_contexts(session)
        local_pools = {int(p) for p in session.exec(select(Pool.id).where(Pool.backend == "local")).all()
                       if p is not None}
    for task in waiting:
        if task.pool_id in local_pools and ending.runner_elsewhere(task):
            # Issue 18 item 3: its plan and slot directory are on the machine that planned it,
            # not here; what this machine's disk lacks says nothing of it.
            continue
        lost = None if task.id in intact else plan_context.lost(app, task)
        if lost is None and plan_context.expired(task):
            lost = "its warm-up expired"
        if lost is None:
            continue
        with app.store.read() as session:
            pool = session.get(Pool, task.pool_id) if task.pool_id else None
            frozen = pool is not None and repo.frozen_now(session, pool.id or 0) is not None
        if pool is not None and pool.on_lost_context == "warmup":
            if frozen:
                continue  # S4/S6: warmed up once the window is over
            if plan_context.retries_left(app, task):
                error = plan_context.warm_up(app, task.id or 0)
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
                plan_context.reset_to_pending(session, current, f"plan context lost: {lost}")
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
               col(Slot.state) == SlotState.RESERVED, col(Pod.status) == PodStatus.READY, col(Pool.backend) != "local")
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
                and (task.status in (Status.RUNNING, Status.APPLY_PENDING)
                     # Issue 18 item 3: ended by another machine while its Terraform ran in this
                     # slot; its own machine's sweep frees it (ending.settle_left_here).
                     or (is_terminal(Status(task.status)) and task.child_pid is not None))
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
            # failed and applied_state_error keep their lock on purpose, for an operator, and so
            # does an apply cancelled part-way whose state is not stored here (issue 13 item 6; issue
            # 18 item 3: its state is on the machine that ran it).
            kept_on_purpose = task is not None and task.status == Status.CANCELLED and task.stage in APPLY_TOUCHED
            if not kept_on_purpose and (task is None or task.status in (
                    Status.PENDING, Status.PLANNED_AND_FINISHED, Status.APPLIED, Status.CANCELLED)):
                repo.unlock_workspace(session, ws.id or 0, task_id=holder)
                actions.append(Action("unlocked", task=holder, workspace=ws.name,
                                      detail="its task no longer holds the lock"))
    return actions


def _overdue_run_task_results(app: App) -> list[Action]:
    """S8/R6: run-task results past their timeout are marked `timeout`, their tokens cleared."""
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
