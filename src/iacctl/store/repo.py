"""Repository functions: every read and write of the store, session first (as Prefect does).

`transition()` is the only code that changes a task's status (SPEC L7, STYLE): it checks the
lifecycle table, writes with a compare-and-set and appends the history row, all inside the
caller's transaction.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, func, insert, text, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from iacctl.crypto import Cipher
from iacctl.domain import policy
from iacctl.domain.actors import actor_view
from iacctl.domain.admission import PLAN, AdmissionFacts, LiveTask, PoolFacts, SlotUse, plan_lifetime
from iacctl.domain.drift import DriftedResource, TaskFacts, fingerprint, notify_drift
from iacctl.domain.freeze import active_window
from iacctl.domain.lifecycle import Stage, Status, check_transition, is_terminal
from iacctl.domain.masking import FORMER_VALUES_KEPT, is_former_secret, maskable
from iacctl.domain.names import did_you_mean, quoted
from iacctl.domain.notifications import GIVE_UP_AFTER_S, Event, Facts, event_of, sent_for
from iacctl.domain.slots import PodStatus, SlotPlace, SlotState
from iacctl.domain.triggers import apply_changed
from iacctl.errors import NotFound, SlotNotReserved, TransitionConflict, WorkspaceLocked
from iacctl.store.models import (
    ConfigSnapshot,
    Delivery,
    FormerSecret,
    FreezeWindow,
    InventoryResource,
    InventorySync,
    NotificationDestination,
    OutboxEntry,
    PlanArtifact,
    Pod,
    Pool,
    RunTask,
    RunTaskServer,
    RunTrigger,
    Slot,
    StateVersion,
    Task,
    TaskEvent,
    TaskLog,
    TaskResult,
    Variable,
    Workspace,
    WorkspaceDrift,
    WorkspaceRunTask,
)


def now() -> float:
    return time.time()


# -- pools, pods, slots ---------------------------------------------------------------------------


def get_pool(session: Session, name: str) -> Pool:
    pool = session.exec(select(Pool).where(Pool.name == name)).first()
    if pool is None:
        raise NotFound(f"unknown pool {name!r}")
    return pool


def find_pool(session: Session, name: str) -> Pool | None:
    return session.exec(select(Pool).where(Pool.name == name)).first()


def pods_of(session: Session, pool_id: int) -> Sequence[Pod]:
    return session.exec(select(Pod).where(Pod.pool_id == pool_id).order_by(col(Pod.id))).all()


def slots_of_pod(session: Session, pod_id: int) -> Sequence[Slot]:
    return session.exec(select(Slot).where(Slot.pod_id == pod_id).order_by(col(Slot.slot_index))).all()


def mark_pod_lost(session: Session, pool: str, pod: str) -> bool:
    """S7, issue 10 item 2: a pod found gone, wherever it is found, takes no task from now on
    (claim_idle_slot hands out slots of ready pods only). True if it was ready or creating."""
    pool_id = session.execute(select(Pool.id).where(Pool.name == pool)).scalar()
    if pool_id is None:
        return False
    result = session.execute(
        update(Pod)
        .where(col(Pod.pool_id) == pool_id, col(Pod.name) == pod,
               col(Pod.status).in_([PodStatus.READY, PodStatus.CREATING]))
        .values(status=PodStatus.LOST, idle_since=None)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def claim_idle_slot(session: Session, pool_id: int, task_id: int, *, pod_id: int | None = None) -> Slot | None:
    """S2: take an idle slot of the pool (of its pod `pod_id` only, if given: a local pool's
    slots on this machine, issue 18 item 4) for the task, or None. The compare-and-set on the
    slot's state makes two processes racing for it get different slots (or one gets none)."""
    # On PostgreSQL, SKIP LOCKED passes over slots another transaction is changing (one being
    # released by a finishing task, say) instead of waiting on them, which could deadlock with
    # that transaction's next step. SQLite has no row locks; BEGIN IMMEDIATE serializes it.
    query = (
        select(Slot)
        .join(Pod, col(Pod.id) == col(Slot.pod_id))
        .where(Pod.pool_id == pool_id, Pod.status == PodStatus.READY, Slot.state == SlotState.IDLE)
    )
    if pod_id is not None:
        query = query.where(col(Slot.pod_id) == pod_id)
    candidates = session.exec(
        query.order_by(col(Slot.pod_id), col(Slot.slot_index)).with_for_update(skip_locked=True, of=Slot)
    ).all()
    for slot in candidates:
        result = session.execute(
            update(Slot)
            .where(col(Slot.id) == slot.id, col(Slot.state) == SlotState.IDLE)
            .values(state=SlotState.RUNNING, task_id=task_id, updated_at=now())
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            session.refresh(slot)
            return slot
    return None


def claim_slot(session: Session, pool_id: int, task_id: int, *, grow: bool, pod_id: int | None = None) -> Slot | None:
    """S2: a slot for a task that admission let start. With `grow` (the local pool, where only
    running tasks count against the slot number), a new slot row is added to the pool's pod when
    every row is taken by plans waiting for confirmation: their work directories stay (E6)."""
    slot = claim_idle_slot(session, pool_id, task_id, pod_id=pod_id)
    if slot is not None or not grow:
        return slot
    pods = select(Pod).where(Pod.pool_id == pool_id, Pod.status == PodStatus.READY)
    if pod_id is not None:
        pods = pods.where(col(Pod.id) == pod_id)
    # The pod row is locked while its next slot index is counted: two processes growing the
    # same machine's pod at once would both take max + 1 (a unique-key violation on PostgreSQL).
    pod = session.exec(pods.order_by(col(Pod.id)).with_for_update(of=Pod)).first()
    if pod is None:
        return None
    top = session.execute(select(func.max(Slot.slot_index)).where(Slot.pod_id == pod.id)).scalar()
    slot = Slot(pod_id=pod.id or 0, slot_index=int(top if top is not None else -1) + 1, state=SlotState.RUNNING,
                task_id=task_id, updated_at=now())
    session.add(slot)
    session.flush()
    return slot


def machine_pod(session: Session, pool_id: int, machine: str) -> Pod | None:
    """Issue 18 item 4: the pod of a local pool that is this machine (runtimes.local.machine())."""
    return session.exec(select(Pod).where(Pod.pool_id == pool_id, Pod.machine == machine)).first()


def machine_of_slot(session: Session, slot_id: int | None) -> str | None:
    """The machine whose local pod holds the slot; None for a pod of no machine (Kubernetes)."""
    if slot_id is None:
        return None
    return session.execute(select(Pod.machine).join(Slot, col(Slot.pod_id) == col(Pod.id))
                           .where(col(Slot.id) == slot_id)).scalar()


def beat_pod(session: Session, pod_id: int | None, at: float) -> None:
    """Issue 18 item 4: the machine of a local pod is alive (its commands and runners say so)."""
    if pod_id is not None:
        session.execute(update(Pod).where(col(Pod.id) == pod_id).values(heartbeat_at=at))


# Issue 23: the heartbeat of a running task in one statement on PostgreSQL (one round trip per
# beat), which also says whether a cancel was asked for (should its notification be missed).
_BEAT_TASK_PG = text(
    "WITH t AS (UPDATE tasks SET heartbeat_at = :at WHERE id = :id RETURNING pod_id, cancel_requested_at), "
    "p AS (UPDATE pods SET heartbeat_at = :at WHERE id = (SELECT pod_id FROM t) AND machine IS NOT NULL) "
    "SELECT cancel_requested_at FROM t")
# The channel `iacctl cancel` notifies on PostgreSQL (payload: the task id), and runners listen to.
CANCEL_CHANNEL = "iacctl_cancel"


def beat_task(session: Session, task_id: int, at: float) -> bool:
    """The heartbeat of the process running (or, while pending, waiting for) the task, and of
    the local pod (the machine) it runs on (issue 18 items 4, 5). Whether a cancel is asked."""
    if _dialect(session) == "postgresql":
        return session.execute(_BEAT_TASK_PG, {"at": at, "id": task_id}).scalar() is not None
    session.execute(update(Task).where(col(Task.id) == task_id).values(heartbeat_at=at))
    pod_id, asked = session.execute(select(Task.pod_id, Task.cancel_requested_at).where(Task.id == task_id)).one()
    if pod_id is not None:
        session.execute(update(Pod).where(col(Pod.id) == pod_id, col(Pod.machine).is_not(None))
                        .values(heartbeat_at=at))
    return asked is not None


def announce_cancel(session: Session, task_id: int) -> None:
    """Issue 23: on PostgreSQL, tell the task's runner (wherever it runs) at the commit of the
    cancel request, so that it need not ask the store all the time; SQLite's runner reads it."""
    if _dialect(session) == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, :payload)"),
                        {"channel": CANCEL_CHANNEL, "payload": str(task_id)})


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def lock_pool_row(session: Session, pool_id: int) -> None:
    """On PostgreSQL, starts in one pool decide one after the other (capacity is counted, then
    taken); SQLite's BEGIN IMMEDIATE already serializes writers."""
    session.exec(select(Pool.id).where(Pool.id == pool_id).with_for_update()).first()


def frozen_now(session: Session, pool_id: int, at: float | None = None) -> tuple[float, float] | None:
    """S4: the freeze window the pool is in now, or None."""
    t = now() if at is None else at
    return active_window(freeze_windows(session, [pool_id]).get(pool_id, ()), t)


def freeze_windows(session: Session, pool_ids: Iterable[int]) -> dict[int, tuple[tuple[float, float], ...]]:
    out: dict[int, list[tuple[float, float]]] = {}
    for w in session.exec(select(FreezeWindow).where(col(FreezeWindow.pool_id).in_(list(pool_ids)))
                          .order_by(col(FreezeWindow.starts_at))).all():
        out.setdefault(w.pool_id, []).append((w.starts_at, w.ends_at))
    return {k: tuple(v) for k, v in out.items()}


def admission_facts(session: Session, tasks: Sequence[Task], *, wants: str = PLAN,
                    machine: str | None = None) -> dict[int, AdmissionFacts]:
    """Everything `domain.admission.admit()` needs about these pending tasks (or, with wants=apply,
    confirmed ones), in seven queries however many tasks there are (item 10: the sweep reads the
    queue of 1,000 pods). With `machine`, a local pool's places are that machine's pod's (issue
    18 item 4: each machine runs as many tasks as its own pod has places, whatever the others run)."""
    if not tasks:
        return {}
    ws_ids = list({t.workspace_id for t in tasks})
    workspaces = {w.id: w for w in session.exec(select(Workspace).where(col(Workspace.id).in_(ws_ids))).all()}
    pool_of = {t.id: (t.pool_id or workspaces[t.workspace_id].pool_id) for t in tasks if t.workspace_id in workspaces}
    pool_ids = list(set(pool_of.values()))
    pools = {p.id: p for p in session.exec(select(Pool).where(col(Pool.id).in_(pool_ids))).all()}
    windows = freeze_windows(session, pool_ids)
    mine: dict[int, Pod] = {}
    if machine is not None:
        local_ids = [pid for pid, p in pools.items() if p.backend == "local"]
        if local_ids:
            mine = {p.pool_id: p for p in session.exec(
                select(Pod).where(col(Pod.pool_id).in_(local_ids), Pod.machine == machine)).all()}
    live_pods = {int(pid): int(n) for pid, n in session.execute(
        select(Pod.pool_id, func.count(col(Pod.id)))
        .where(col(Pod.pool_id).in_(pool_ids), col(Pod.status).in_([PodStatus.READY, PodStatus.CREATING]))
        .group_by(col(Pod.pool_id))
    ).all()}
    idle: dict[int, int] = {}
    uses: dict[int, list[SlotUse]] = {}
    for pid, pod_id, task_id, state, status in session.execute(
        sa_select(Pod.pool_id, Pod.id, Slot.task_id, Slot.state, Task.status)  # type: ignore[call-overload]
        .join(Slot, col(Slot.pod_id) == col(Pod.id))
        .join(Task, col(Task.id) == col(Slot.task_id), isouter=True)
        .where(col(Pod.pool_id).in_(pool_ids), col(Pod.status) == PodStatus.READY)
        .order_by(col(Slot.task_id))
    ).all():
        if pid in mine and pod_id != mine[pid].id:
            continue  # another machine's places (issue 18 item 4)
        if state == SlotState.IDLE:
            idle[pid] = idle.get(pid, 0) + 1
        else:
            uses.setdefault(pid, []).append(SlotUse(int(task_id or 0), str(status), str(state)))
    others: dict[int, list[LiveTask]] = {}
    for tid, ws_id, status, created, started, planned, confirmed in session.execute(
        # SQLAlchemy's own select: sqlmodel's takes at most four columns.
        sa_select(Task.id, Task.workspace_id, Task.status, Task.created_at, Task.started_at,  # type: ignore[call-overload]
                  Task.planned_at, Task.confirmed_at)
        .where(col(Task.workspace_id).in_(ws_ids), col(Task.kind) == "plan_and_apply",
               col(Task.status).in_([Status.PENDING, Status.RUNNING, Status.APPLY_PENDING]))
    ).all():
        since = {Status.PENDING: created, Status.APPLY_PENDING: planned}.get(status) or confirmed or started or created
        others.setdefault(ws_id, []).append(
            LiveTask(int(tid), str(status), float(since), planned, confirmed is not None))
    facts: dict[int, AdmissionFacts] = {}
    for task in tasks:
        ws = workspaces.get(task.workspace_id)
        pool = pools.get(pool_of.get(task.id, -1))
        if ws is None or pool is None:
            continue
        pid = pool.id or 0
        own = mine.get(pid)
        facts[task.id or 0] = AdmissionFacts(
            task_id=task.id or 0, kind=task.kind, workspace=ws.name, wants=wants,
            pool=PoolFacts(name=pool.name, backend=pool.backend,
                           slots_per_pod=(own.slots_per_pod or pool.slots_per_pod) if own else pool.slots_per_pod,
                           max_pods=pool.max_pods, live_pods=live_pods.get(pid, 0), idle_slots=idle.get(pid, 0),
                           uses=tuple(uses.get(pid, ())), freeze_windows=windows.get(pid, ()),
                           machine=own.machine if own else None),
            others=tuple(o for o in others.get(ws.id or 0, ()) if o.id != task.id),
            lock_task_id=ws.locked_by_task_id, lock_holder=ws.lock_holder, lock_reason=ws.lock_reason,
            plan_lifetime_s=plan_lifetime(ws.plan_lifetime_s, pool.plan_lifetime_s),
        )
    return facts


def set_slot_state(
    session: Session, slot_id: int, task_id: int, expected: SlotState, target: SlotState
) -> bool:
    values: dict[str, Any] = {"state": target, "updated_at": now()}
    if target == SlotState.IDLE:
        values["task_id"] = None
    result = session.execute(
        update(Slot)
        .where(col(Slot.id) == slot_id, col(Slot.task_id) == task_id, col(Slot.state) == expected)
        .values(**values)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def slot_place(session: Session, slot_id: int | None) -> SlotPlace | None:
    """Where the slot's work directory lives, or None if the slot, its pod or pool is gone."""
    slot = session.get(Slot, slot_id) if slot_id is not None else None
    pod = session.get(Pod, slot.pod_id) if slot else None
    pool = session.get(Pool, pod.pool_id) if pod else None
    if slot is None or pod is None or pool is None:
        return None
    return SlotPlace(pool.name, pod.name, slot.slot_index)


def release_slot_of(session: Session, task_id: int) -> int:
    """Free every slot the task holds, running or reserved. Returns how many were freed."""
    result = session.execute(
        update(Slot)
        .where(col(Slot.task_id) == task_id)
        .values(state=SlotState.IDLE, task_id=None, updated_at=now())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# -- workspaces and variables ---------------------------------------------------------------------


def get_workspace(session: Session, name: str) -> Workspace:
    ws = session.exec(select(Workspace).where(Workspace.name == name)).first()
    if ws is None:
        # Issue 9: a near miss gets a did-you-mean.
        raise NotFound(f"unknown workspace {quoted(name)}" + did_you_mean(name, workspace_names(session)))
    return ws


def workspace_by_id(session: Session, workspace_id: int) -> Workspace:
    ws = session.get(Workspace, workspace_id)
    if ws is None:
        raise NotFound(f"unknown workspace id {workspace_id}")
    return ws


def lock_workspace(
    session: Session, workspace_id: int, *, task_id: int | None, holder: str, reason: str
) -> bool:
    """L5: take the workspace lock if nobody holds it. Compare-and-set: one winner."""
    result = session.execute(
        update(Workspace)
        .where(
            col(Workspace.id) == workspace_id,
            col(Workspace.locked_by_task_id).is_(None),
            col(Workspace.lock_holder).is_(None),
        )
        .values(locked_by_task_id=task_id, lock_holder=holder, lock_reason=reason, locked_at=now())
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def set_lock_reason(session: Session, workspace_id: int, task_id: int, reason: str) -> None:
    session.execute(
        update(Workspace)
        .where(col(Workspace.id) == workspace_id, col(Workspace.locked_by_task_id) == task_id)
        .values(lock_reason=reason)
    )


def unlock_workspace(session: Session, workspace_id: int, *, task_id: int | None = None) -> bool:
    """Release the lock; with task_id only if that task holds it."""
    cond = [col(Workspace.id) == workspace_id]
    if task_id is not None:
        cond.append(col(Workspace.locked_by_task_id) == task_id)
    result = session.execute(
        update(Workspace)
        .where(*cond)
        .values(locked_by_task_id=None, lock_holder=None, lock_reason=None, locked_at=None)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def delete_workspace(session: Session, workspace_id: int) -> list[int]:
    """Issue 9: a workspace and everything recorded of it (tasks with their history, logs,
    plans and run-task results; state versions, config snapshots, variables and their former
    secrets, run-task attachments), leaving no orphan row. Returns the ids of its tasks. The caller has checked
    that none is live."""
    task_ids = [int(t) for t in session.execute(
        sa_select(col(Task.id)).where(col(Task.workspace_id) == workspace_id)).scalars().all()]
    if task_ids:
        session.execute(delete(TaskEvent).where(col(TaskEvent.task_id).in_(task_ids)))
        session.execute(delete(TaskLog).where(col(TaskLog.task_id).in_(task_ids)))
        session.execute(delete(PlanArtifact).where(col(PlanArtifact.task_id).in_(task_ids)))
        session.execute(delete(TaskResult).where(col(TaskResult.task_id).in_(task_ids)))
        # Slots are freed with a task's end; a slot still naming one is freed here.
        session.execute(update(Slot).where(col(Slot.task_id).in_(task_ids))
                        .values(state=SlotState.IDLE, task_id=None, updated_at=now()))
        session.execute(delete(Task).where(col(Task.id).in_(task_ids)))
    session.execute(delete(StateVersion).where(col(StateVersion.workspace_id) == workspace_id))
    session.execute(delete(ConfigSnapshot).where(col(ConfigSnapshot.workspace_id) == workspace_id))
    session.execute(delete(Variable).where(col(Variable.workspace_id) == workspace_id))
    session.execute(delete(FormerSecret).where(col(FormerSecret.workspace_id) == workspace_id))
    session.execute(delete(WorkspaceRunTask).where(col(WorkspaceRunTask.workspace_id) == workspace_id))
    # F4/F2: its triggers, both ways, and its inventory go with it (a trigger entry already
    # written for it finds the workspace gone and says so).
    session.execute(delete(RunTrigger).where((col(RunTrigger.workspace_id) == workspace_id)
                                             | (col(RunTrigger.source_workspace_id) == workspace_id)))
    session.execute(delete(InventoryResource).where(col(InventoryResource.workspace_id) == workspace_id))
    session.execute(delete(InventorySync).where(col(InventorySync.workspace_id) == workspace_id))
    session.execute(delete(WorkspaceDrift).where(col(WorkspaceDrift.workspace_id) == workspace_id))
    _drop_open_follow_ups(session, workspace_id)
    session.execute(delete(Workspace).where(col(Workspace.id) == workspace_id))
    return task_ids


def _drop_open_follow_ups(session: Session, workspace_id: int) -> None:
    """Issue 19 item 3: the workspace's follow-ups still waiting are ended, each noted in the
    delivery log, so that nothing of a deleted workspace is sent later or acts on another.
    One being sent right now finishes and is recorded as it ends. Its own notification
    destinations go with it, as HCP's notification configurations do with their workspace."""
    ws_name = session.execute(select(Workspace.name).where(col(Workspace.id) == workspace_id)).scalar()
    why = f"dropped with the workspace {ws_name}"
    t = now()
    waiting = session.exec(select(OutboxEntry).where(col(OutboxEntry.workspace_id) == workspace_id,
                                                     col(OutboxEntry.status) == "pending")).all()
    for entry in waiting:
        done = session.execute(
            update(OutboxEntry).where(col(OutboxEntry.id) == entry.id, col(OutboxEntry.status) == "pending")
            .values(status="dismissed", last_error=why, updated_at=t))
        if done.rowcount != 1:  # type: ignore[attr-defined]
            continue
        session.add(Delivery(outbox_id=entry.id, destination_id=entry.destination_id,
                             destination_name=entry.destination_name or entry.kind, event=entry.event,
                             task_id=entry.task_id, attempt=entry.attempts, at=t, duration_ms=0.0, error=why,
                             result="dropped"))
    session.execute(delete(NotificationDestination).where(col(NotificationDestination.workspace_id) == workspace_id))


def delete_pool(session: Session, pool_id: int) -> None:
    """Issue 9: a pool with no workspaces and no pods, and its freeze windows."""
    session.execute(delete(FreezeWindow).where(col(FreezeWindow.pool_id) == pool_id))
    session.execute(delete(Pool).where(col(Pool.id) == pool_id))


def workspace_names(session: Session) -> list[str]:
    return [str(n) for n in
            session.execute(sa_select(col(Workspace.name)).order_by(col(Workspace.name))).scalars().all()]


def variables_of(session: Session, workspace_id: int) -> Sequence[Variable]:
    return session.exec(
        select(Variable)
        .where(Variable.workspace_id == workspace_id)
        .order_by(col(Variable.category), col(Variable.key))
    ).all()


def workspace_and_variables(session: Session, name: str) -> tuple[Workspace, list[Variable]]:
    """Issue 23: the workspace and its variables in one statement."""
    rows = session.exec(select(Workspace, Variable).outerjoin(Variable, col(Variable.workspace_id) == col(Workspace.id))
                        .where(col(Workspace.name) == name)
                        .order_by(col(Variable.category), col(Variable.key))).all()
    if not rows:
        get_workspace(session, name)  # raises NotFound, with a did-you-mean
    return rows[0][0], [v for _ws, v in rows if v is not None]


def put_variable_if_unchanged(session: Session, workspace_id: int, category: str, key: str, seen: Variable | None, *,
                              value: str, sensitive: bool, hcl: bool, value_secret: bytes | None) -> Variable | None:
    """Issue 23: set a variable in one statement: added if `seen` is None (IntegrityError if it
    exists by now), else updated only if it is still as `seen` was read. The variable, or None
    when it changed meanwhile."""
    t = now()
    fields: dict[str, Any] = {"sensitive": sensitive, "hcl": hcl, "value": None if sensitive else value,
                              "value_secret": value_secret, "updated_at": t}
    if seen is None:
        added = insert(Variable).values(workspace_id=workspace_id, category=category, key=key, **fields)
        new_id = session.execute(added.returning(col(Variable.id))).scalar()
        return Variable(id=new_id, workspace_id=workspace_id, category=category, key=key, **fields)
    result = session.execute(update(Variable).where(col(Variable.id) == seen.id,
                                                    col(Variable.updated_at) == seen.updated_at).values(**fields))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return Variable(id=seen.id, workspace_id=workspace_id, category=category, key=key, **fields)


def find_variable(session: Session, workspace_id: int, category: str, key: str) -> Variable | None:
    return session.exec(
        select(Variable).where(Variable.workspace_id == workspace_id, Variable.category == category,
                               Variable.key == key)
    ).first()


def values_to_mask(session: Session, cipher: Cipher, workspace_id: int) -> list[str]:
    """X2, issue 24 item 4: every value to mask in what shows or logs a task of the workspace:
    what its sensitive variables hold now and every value they held before, decrypted, as
    domain.masking.maskable gives them. The one list: the task log, the plan review and the
    check of the key before a plan all take it from here."""
    blobs = [v.value_secret for v in variables_of(session, workspace_id) if v.sensitive and v.value_secret]
    blobs += session.execute(sa_select(col(FormerSecret.value_secret))
                             .where(col(FormerSecret.workspace_id) == workspace_id)).scalars().all()
    return maskable(cipher.decrypt_text(blob) for blob in blobs)


def remember_former_secret(session: Session, cipher: Cipher, var: Variable, new_value: str | None,
                           new_sensitive: bool) -> None:
    """Issue 24 item 4: before `var` takes `new_value` (None: it is unset), keep its value,
    encrypted, when it is a secret that goes (domain.masking.is_former_secret). A value already
    kept for the variable is not kept twice; past FORMER_VALUES_KEPT the oldest go."""
    if var.value_secret is None:  # a plain value: never a secret
        return
    old = cipher.decrypt_text(var.value_secret)
    if not is_former_secret(var.sensitive, old, new_value, new_sensitive):
        return
    kept = session.exec(
        select(FormerSecret).where(FormerSecret.workspace_id == var.workspace_id,
                                   FormerSecret.category == var.category, FormerSecret.key == var.key)
        .order_by(col(FormerSecret.id))
    ).all()
    if any(cipher.decrypt_text(row.value_secret) == old for row in kept):
        return
    for row in kept[: max(0, len(kept) + 1 - FORMER_VALUES_KEPT)]:
        session.delete(row)
    session.add(FormerSecret(workspace_id=var.workspace_id, key=var.key, category=var.category,
                             value_secret=cipher.encrypt_text(old), replaced_at=now()))


# -- tasks ----------------------------------------------------------------------------------------


def get_task(session: Session, task_id: int) -> Task:
    task = session.get(Task, task_id)
    if task is None:
        raise NotFound(f"unknown task {task_id}")
    return task


def add_event(
    session: Session, task_id: int, kind: str, from_value: str | None, to_value: str | None,
    reason: str | None = None,
) -> None:
    session.add(
        TaskEvent(task_id=task_id, at=now(), kind=kind, from_value=from_value, to_value=to_value,
                  reason=reason)
    )


def transition(
    session: Session, task_id: int, expected: Status, target: Status, reason: str, *,
    keep_lock: str | None = None, keep_slot: bool = False, **fields: Any,
) -> None:
    """The one function that changes a task's status (L7), and the one end of a task.

    Checks the lifecycle table, then `UPDATE tasks SET status = target ... WHERE id = :id AND
    status = :expected`; if another process changed the task first, nothing is written and
    TransitionConflict is raised. The history row is written in the same transaction.

    What the change does besides (slots freed, the lock released or kept with `keep_lock` as
    its reason, run-task results ended, drift cleared, follow-ups written) is domain.policy's
    list of effects for it, applied here in the same transaction. With `keep_slot` the slot
    stays the task's: its Terraform may still run in it on another machine, whose sweep frees it
    once it has saved what is there (issue 18 item 3).
    """
    check_transition(expected, target)
    t = now()
    values: dict[str, Any] = {"status": target, "updated_at": t, **fields}
    ending = is_terminal(target)
    if ending:
        values.setdefault("finished_at", t)
        values.setdefault("child_pid", None)
    if policy.gives_back(target) or policy.touches_lock(expected, target):
        # Issue 18 item 6, the lock order of store/db.py: this change takes, frees or keeps the
        # workspace lock, so the workspace row is taken before the task's (a confirmation holds
        # the workspace, then wants this task: taking them the other way deadlocks).
        workspace_id = lock_workspace_of_task(session, task_id)
    else:
        workspace_id = None  # no effect of this change needs it
    result = session.execute(
        update(Task).where(col(Task.id) == task_id, col(Task.status) == expected).values(**values)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        current = session.execute(select(Task.status).where(Task.id == task_id)).scalar()
        if current is None:
            raise NotFound(f"unknown task {task_id}")
        raise TransitionConflict(
            f"task {task_id} is {current}, not {expected}: another process changed it"
        )
    add_event(session, task_id, "status", expected, target, reason)
    for effect in policy.effects(expected, target, keep_lock=keep_lock is not None, keep_slot=keep_slot):
        _apply_effect(session, effect, task_id, int(workspace_id or 0), expected, target,
                      policy.kept_lock_reason(task_id, target, keep_lock))
    task = session.get(Task, task_id)
    if task is not None:
        session.refresh(task)


def _slot_of(session: Session, task_id: int) -> int:
    return int(session.execute(select(Task.slot_id).where(Task.id == task_id)).scalar() or 0)


def _apply_effect(session: Session, effect: policy.Effect, task_id: int, workspace_id: int, expected: Status,
                  target: Status, lock_reason: str | None) -> None:
    """One effect of domain.policy, in the status change's transaction."""
    match effect:
        case policy.Effect.TAKE_LOCK:
            taken = lock_workspace(session, workspace_id, task_id=task_id, holder=f"task {task_id}",
                                   reason=f"task {task_id} waits for confirm-apply")
            ws = workspace_by_id(session, workspace_id)
            if not taken and ws.locked_by_task_id != task_id:
                raise WorkspaceLocked(f"workspace {ws.name} is locked by {ws.lock_holder} ({ws.lock_reason}); "
                                      "the plan cannot wait for confirmation without the lock")
        case policy.Effect.RESERVE_SLOT:
            set_slot_state(session, _slot_of(session, task_id), task_id, SlotState.RUNNING, SlotState.RESERVED)
        case policy.Effect.USE_RESERVED_SLOT:
            slot_id = _slot_of(session, task_id)
            if not set_slot_state(session, slot_id, task_id, SlotState.RESERVED, SlotState.RUNNING):
                raise SlotNotReserved(f"slot {slot_id} is no longer reserved for task {task_id}")
        case policy.Effect.LOCK_FOR_APPLY:
            set_lock_reason(session, workspace_id, task_id, f"task {task_id} is applying")
        case policy.Effect.FREE_SLOTS:
            release_slot_of(session, task_id)
        case policy.Effect.KEEP_LOCK:
            set_lock_reason(session, workspace_id, task_id, lock_reason or f"task {task_id} keeps the lock")
        case policy.Effect.RELEASE_LOCK:
            unlock_workspace(session, workspace_id, task_id=task_id)
        case policy.Effect.END_RUN_TASK_RESULTS:
            end_open_results(session, task_id, f"the task ended {target} before this result arrived")
        case policy.Effect.CLEAR_DRIFT:
            clear_drift(session, task_id)
        case policy.Effect.NOTIFY:
            write_follow_ups(session, task_id, expected, target)
        case policy.Effect.APPLY_FOLLOW_UPS:
            write_apply_follow_ups(session, task_id)


def set_stage(session: Session, task_id: int, stage: Stage | None, note: str | None = None) -> None:
    prev = session.execute(select(Task.stage).where(Task.id == task_id)).scalar()
    session.execute(
        update(Task).where(col(Task.id) == task_id).values(stage=stage, updated_at=now())
    )
    add_event(session, task_id, "stage", prev, stage, note)


def update_task(session: Session, task_id: int, **fields: Any) -> None:
    """Write fields that are not the status (counts, hashes, pids). Status goes through
    transition()."""
    if "status" in fields:
        raise ValueError("status changes go through transition()")
    session.execute(
        update(Task).where(col(Task.id) == task_id).values(updated_at=now(), **fields)
    )


def pending_tasks(session: Session) -> Sequence[Task]:
    return session.exec(
        select(Task).where(Task.status == Status.PENDING).order_by(col(Task.id))
    ).all()


def tasks_with_status(session: Session, statuses: Iterable[Status]) -> Sequence[Task]:
    return session.exec(
        select(Task).where(col(Task.status).in_(list(statuses))).order_by(col(Task.id))
    ).all()


def append_logs(session: Session, task_id: int, first_seq: int, lines: Sequence[bytes],
                at: Sequence[float] | None = None) -> None:
    """`at`: when each line was written (issue 9: `tasks logs --timestamps`); else now."""
    # A Core bulk insert: building one ORM object per line costs more than Terraform's plan.
    t = now()
    session.execute(
        insert(TaskLog),
        [{"task_id": task_id, "seq": first_seq + i, "at": at[i] if at is not None else t, "line_secret": b}
         for i, b in enumerate(lines)],
    )


def log_lines_after(session: Session, task_id: int, seq: int) -> list[tuple[int, bytes]]:
    """The task's stored log lines (encrypted) after `seq`, in order."""
    rows = session.execute(
        select(col(TaskLog.seq), col(TaskLog.line_secret))
        .where(col(TaskLog.task_id) == task_id, col(TaskLog.seq) > seq).order_by(col(TaskLog.seq))
    ).all()
    return [(int(s), bytes(b)) for s, b in rows]


def last_log_seq(session: Session, task_id: int) -> int:
    value = session.execute(
        select(func.max(TaskLog.seq)).where(TaskLog.task_id == task_id)
    ).scalar()
    return int(value) if value is not None else 0


# -- state, snapshots, plans ----------------------------------------------------------------------


def latest_state_version(session: Session, workspace_id: int) -> StateVersion | None:
    return session.exec(
        select(StateVersion)
        .where(StateVersion.workspace_id == workspace_id)
        .order_by(col(StateVersion.id).desc())
    ).first()


def workspaces_with_facts(session: Session, name: str | None = None) -> list[tuple[Any, ...]]:
    """Issue 23: every workspace (or the one named) with what its view shows beside it, in ONE
    statement whatever their number: (Workspace, pool name, pool's plan lifetime, latest state
    version as (id, serial, partial, created_at) or None, WorkspaceDrift or None)."""
    latest = (sa_select(col(StateVersion.workspace_id).label("workspace_id"),
                        func.max(StateVersion.id).label("id"))
              .group_by(col(StateVersion.workspace_id)).subquery())
    query = (sa_select(Workspace, col(Pool.name), col(Pool.plan_lifetime_s), col(StateVersion.id),
                    col(StateVersion.serial), col(StateVersion.partial), col(StateVersion.created_at),
                    WorkspaceDrift)
             .outerjoin(Pool, col(Pool.id) == col(Workspace.pool_id))
             .outerjoin(latest, latest.c.workspace_id == col(Workspace.id))
             .outerjoin(StateVersion, col(StateVersion.id) == latest.c.id)
             .outerjoin(WorkspaceDrift, col(WorkspaceDrift.workspace_id) == col(Workspace.id)))
    if name is not None:
        query = query.where(col(Workspace.name) == name)
    out = []
    for ws, pool, lifetime, sv_id, serial, partial, created, drift in session.execute(
            query.order_by(col(Workspace.name))).all():
        out.append((ws, pool, lifetime, None if sv_id is None else (sv_id, serial, partial, created), drift))
    return out


def latest_state_version_id(session: Session, workspace_id: int) -> int | None:
    value = session.execute(
        select(func.max(StateVersion.id)).where(StateVersion.workspace_id == workspace_id)
    ).scalar()
    return int(value) if value is not None else None


def add_state_version(session: Session, version: StateVersion) -> StateVersion:
    session.add(version)
    session.flush()
    return version


def add_config_snapshot(session: Session, snapshot: ConfigSnapshot) -> ConfigSnapshot:
    session.add(snapshot)
    session.flush()
    return snapshot


def plan_artifact_of(session: Session, task_id: int) -> PlanArtifact | None:
    return session.exec(select(PlanArtifact).where(PlanArtifact.task_id == task_id)).first()


def replace_plan_artifact(session: Session, artifact: PlanArtifact) -> None:
    """One artifact per task: a re-plan (S5) replaces the old one."""
    old = plan_artifact_of(session, artifact.task_id)
    if old is not None:
        session.delete(old)
        session.flush()
    session.add(artifact)


# -- run tasks (R1-R8) ----------------------------------------------------------------------------

# Statuses a task result does not leave (R4: a final status is accepted once).
# S4, S5: what a task's warm-up looks like when it has none (re-plan, freeze).
WARMUP_CLEARED: dict[str, Any] = {"warmup_status": None, "warmup_slot_id": None, "warmup_at": None,
                                  "warmup_expires_at": None, "warmup_attempts": 0, "warmup_error": None}

RESULT_FINAL = ("passed", "failed", "timeout", "webhook_error", "errored")
RESULT_OPEN = ("pending", "running")


def get_run_task(session: Session, name: str) -> RunTask:
    run_task = session.exec(select(RunTask).where(RunTask.name == name)).first()
    if run_task is None:
        raise NotFound(f"unknown run task {name!r}")
    return run_task


def find_run_task(session: Session, name: str) -> RunTask | None:
    return session.exec(select(RunTask).where(RunTask.name == name)).first()


def run_tasks(session: Session) -> Sequence[RunTask]:
    return session.exec(select(RunTask).order_by(col(RunTask.name))).all()


def attachments(session: Session, *, workspace_id: int | None = None, run_task_id: int | None = None,
                stage: str | None = None) -> Sequence[tuple[WorkspaceRunTask, RunTask, Workspace]]:
    query = (
        select(WorkspaceRunTask, RunTask, Workspace)
        .join(RunTask, col(RunTask.id) == col(WorkspaceRunTask.run_task_id))
        .join(Workspace, col(Workspace.id) == col(WorkspaceRunTask.workspace_id))
    )
    if workspace_id is not None:
        query = query.where(col(WorkspaceRunTask.workspace_id) == workspace_id)
    if run_task_id is not None:
        query = query.where(col(WorkspaceRunTask.run_task_id) == run_task_id)
    if stage is not None:
        query = query.where(col(WorkspaceRunTask.stage) == stage)
    rows = session.exec(query.order_by(col(Workspace.name), col(RunTask.name))).all()
    return [(a, r, w) for a, r, w in rows]


def find_attachment(session: Session, workspace_id: int, run_task_id: int) -> WorkspaceRunTask | None:
    return session.exec(
        select(WorkspaceRunTask).where(WorkspaceRunTask.workspace_id == workspace_id,
                                       WorkspaceRunTask.run_task_id == run_task_id)
    ).first()


def results_of_task(session: Session, task_id: int) -> Sequence[TaskResult]:
    return session.exec(
        select(TaskResult).where(TaskResult.task_id == task_id).order_by(col(TaskResult.id))
    ).all()


def results_by_id(session: Session, ids: Iterable[int]) -> Sequence[TaskResult]:
    return session.exec(
        select(TaskResult).where(col(TaskResult.id).in_(list(ids))).order_by(col(TaskResult.id))
    ).all()


def update_open_result(session: Session, result_id: int, **fields: Any) -> bool:
    """Change a task result that is not final yet (compare-and-set: a final status is written
    once, whoever gets there first: the callback, the timeout or the delivery error)."""
    t = now()
    values: dict[str, Any] = {"updated_at": t, **fields}
    if fields.get("status") in RESULT_FINAL:
        values.setdefault("finished_at", t)
        # C5: the token is cleared with the final status.
        values.update(access_token_secret=None, token_used=True)
    result = session.execute(
        update(TaskResult)
        .where(col(TaskResult.id) == result_id, col(TaskResult.status).in_(RESULT_OPEN))
        .values(**values)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def end_open_results(session: Session, task_id: int, reason: str) -> int:
    """E2: a task that ends revokes the tokens of its results still waiting."""
    t = now()
    result = session.execute(
        update(TaskResult)
        .where(col(TaskResult.task_id) == task_id, col(TaskResult.status).in_(RESULT_OPEN))
        .values(status="errored", message=reason, finished_at=t, updated_at=t, access_token_secret=None,
                token_used=True)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def overdue_results(session: Session, at: float) -> Sequence[TaskResult]:
    return session.exec(
        select(TaskResult).where(col(TaskResult.status).in_(RESULT_OPEN), col(TaskResult.deadline_at) < at)
        .order_by(col(TaskResult.id))
    ).all()


def fresh_runtask_server(session: Session, since: float) -> RunTaskServer | None:
    return session.exec(
        select(RunTaskServer).where(col(RunTaskServer.heartbeat_at) >= since)
        .order_by(col(RunTaskServer.heartbeat_at).desc())
    ).first()


# -- follow-ups: the outbox and notification destinations (F1, F3) ------------------------------

OUTBOX_OPEN = ("pending", "delivering")


def task_actor(task: Task) -> str:
    """Who a task's notifications (HCP's run_created_by, run_updated_by) and run-task requests
    say acts on it: the latest recorded actor (cancelled, confirmed, created by; issue 9), as
    `tasks show` displays it."""
    for stored in (task.cancelled_by, task.confirmed_by, task.created_by):
        view = actor_view(stored)
        if view is not None:
            return str(view["display"])
    return task.runner_host or task.creator_host or "iacctl"


def task_message(task: Task) -> str | None:
    """Issue 19 item 7: the --message the task was created with (HCP's run message), if any."""
    view = actor_view(task.created_by)
    message = view.get("message") if view is not None else None
    return str(message) if message else None


def destinations_for(session: Session, workspace_id: int, event: str) -> list[NotificationDestination]:
    """The enabled destinations of the workspace and the global ones that chose the event."""
    rows = session.exec(
        select(NotificationDestination)
        .where(col(NotificationDestination.enabled).is_(True),
               (col(NotificationDestination.workspace_id) == workspace_id)
               | col(NotificationDestination.workspace_id).is_(None))
        .order_by(col(NotificationDestination.id))
    ).all()
    return [d for d in rows if event in d.events.split(",")]


def write_follow_ups(session: Session, task_id: int, previous: Status | None, target: Status) -> list[int]:
    """F1: the outbox entries a status change of the task causes, written in its transaction.
    The key (destination, task, event, which time the task made this change) makes each unique:
    the change happens once (transition()'s compare-and-set), so its entries are written once.
    Their ids are noted on the session, for the store to hand to its deliverer after commit."""
    event = event_of(previous, target)
    if event is None:
        return []
    task = session.execute(
        select(Task).where(col(Task.id) == task_id).execution_options(populate_existing=True)
    ).scalar_one()
    if not sent_for(task.kind, event):
        return []
    destinations = destinations_for(session, task.workspace_id, event)
    if not destinations:
        return []
    occurrence = session.execute(
        select(func.count()).select_from(TaskEvent)
        .where(col(TaskEvent.task_id) == task_id, col(TaskEvent.kind) == "status",
               col(TaskEvent.to_value) == target,
               col(TaskEvent.from_value).is_(None) if previous is None else col(TaskEvent.from_value) == previous)
    ).scalar() or 1
    ws_name = session.execute(select(Workspace.name).where(col(Workspace.id) == task.workspace_id)).scalar()
    changes = None
    if task.has_changes is not None:
        changes = {"add": task.add_count or 0, "change": task.change_count or 0, "destroy": task.destroy_count or 0,
                   "replace": task.replace_count or 0, "outputs": task.output_count or 0}
    t = now()
    facts = Facts(event=event, task_id=task_id, task_kind=task.kind, status=str(target),
                  workspace_id=task.workspace_id, workspace_name=str(ws_name), created_at=task.created_at,
                  updated_at=t, actor=task_actor(task), plan_hash=task.plan_hash, changes=changes,
                  error=task.error if target in (Status.FAILED, Status.CANCELLED, Status.APPLIED_STATE_ERROR)
                  else None, message=task_message(task)).as_json()
    return _notification_entries(session, task, destinations, event, occurrence, facts, t)


def _notification_entries(session: Session, task: Task, destinations: list[NotificationDestination], event: str,
                          occurrence: int, facts: str, t: float) -> list[int]:
    """One outbox entry per destination, unless its key is written already; their ids noted on
    the session for the store's deliverer (F1)."""
    ids = []
    for d in destinations:
        key = f"notification:{d.id}:task-{task.id}:{event}:{occurrence}"
        if session.execute(select(OutboxEntry.id).where(col(OutboxEntry.key) == key)).first() is not None:
            continue
        entry = OutboxEntry(key=key, kind="notification", destination_id=d.id, destination_name=d.name,
                            task_id=task.id, workspace_id=task.workspace_id, event=event, facts_json=facts,
                            status="pending", next_attempt_at=t, give_up_at=t + GIVE_UP_AFTER_S,
                            created_at=t, updated_at=t)
        session.add(entry)
        session.flush()
        ids.append(entry.id or 0)
    session.info.setdefault("outbox_written", []).extend(ids)
    return ids


def _local_entry(session: Session, *, key: str, kind: str, label: str, task: Task, facts: dict[str, Any],
                 t: float) -> int | None:
    if session.execute(select(OutboxEntry.id).where(col(OutboxEntry.key) == key)).first() is not None:
        return None
    entry = OutboxEntry(key=key, kind=kind, destination_id=None, destination_name=label, task_id=task.id,
                        workspace_id=task.workspace_id, event="applied",
                        facts_json=json.dumps(facts, separators=(",", ":")), status="pending", next_attempt_at=t,
                        give_up_at=t + GIVE_UP_AFTER_S, created_at=t, updated_at=t)
    session.add(entry)
    session.flush()
    return entry.id


def write_apply_follow_ups(session: Session, task_id: int) -> list[int]:
    """F4, F2: an applied task's run triggers (when workspaces follow its workspace) and inventory
    sync. Keyed by the task: an apply happens once, so they are written once. The followers are
    taken now, as they are at the apply (one deleted before its plan is queued is said so)."""
    task = session.execute(
        select(Task).where(col(Task.id) == task_id).execution_options(populate_existing=True)
    ).scalar_one()
    ws_name = str(session.execute(select(Workspace.name).where(col(Workspace.id) == task.workspace_id)).scalar())
    t = now()
    ids: list[int] = []
    followers = session.execute(
        sa_select(RunTrigger.workspace_id, Workspace.name, RunTrigger.only_if_changed)  # type: ignore[call-overload]
        .join(Workspace, col(Workspace.id) == col(RunTrigger.workspace_id))
        .where(col(RunTrigger.source_workspace_id) == task.workspace_id).order_by(col(Workspace.name))
    ).all()
    if followers:
        counts = {"add": task.add_count, "change": task.change_count, "destroy": task.destroy_count,
                  "replace": task.replace_count, "outputs": task.output_count}
        facts = {"source_task": task_id, "source_workspace": ws_name, "hops": task.trigger_hops,
                 "changed": apply_changed(counts),
                 "followers": [{"workspace_id": w, "workspace": n, "only_if_changed": bool(o)}
                               for w, n, o in followers]}
        got = _local_entry(session, key=f"trigger:task-{task_id}", kind="trigger", label="run triggers", task=task,
                           facts=facts, t=t)
        if got is not None:
            ids.append(got)
    got = _local_entry(session, key=f"inventory:task-{task_id}", kind="inventory", label="inventory", task=task,
                       facts={"workspace": ws_name, "state_version_id": task.state_version_id}, t=t)
    if got is not None:
        ids.append(got)
    session.info.setdefault("outbox_written", []).extend(ids)
    return ids


# -- run triggers (F4) and the inventory (F2) -----------------------------------------------------


def trigger_edges(session: Session) -> list[tuple[str, str]]:
    """Every trigger as (source workspace, follower) names."""
    source = Workspace.__table__.alias("source")  # type: ignore[attr-defined]
    rows = session.execute(
        sa_select(source.c.name, Workspace.name)  # type: ignore[call-overload]
        .select_from(RunTrigger)
        .join(source, source.c.id == col(RunTrigger.source_workspace_id))
        .join(Workspace, col(Workspace.id) == col(RunTrigger.workspace_id))
    ).all()
    return [(str(a), str(b)) for a, b in rows]


# Any constant of our own: the transaction-level advisory lock that serializes changes to the
# trigger graph on PostgreSQL.
_TRIGGER_GRAPH_LOCK = 0x1ACC7121


def lock_trigger_graph(session: Session) -> None:
    """F4: adding a trigger reads the whole graph and must not race another add (two edges added
    at once could close a loop neither saw). PostgreSQL: a transaction-level advisory lock;
    SQLite's BEGIN IMMEDIATE already serializes writers."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _TRIGGER_GRAPH_LOCK})


def sources_of(session: Session, workspace_id: int) -> list[tuple[RunTrigger, str]]:
    """The triggers the workspace follows, with their source's name."""
    rows = session.exec(
        select(RunTrigger, Workspace).join(Workspace, col(Workspace.id) == col(RunTrigger.source_workspace_id))
        .where(col(RunTrigger.workspace_id) == workspace_id).order_by(col(Workspace.name))
    ).all()
    return [(r, w.name) for r, w in rows]


def triggers_around(session: Session, workspace_id: int) -> tuple[list[tuple[str, bool]], list[str]]:
    """Issue 23, in one statement: the workspaces this one follows (name, only_if_changed) and
    the names of those that follow it (F4), each by name."""
    other = col(Workspace.id) == func.coalesce(
        func.nullif(col(RunTrigger.source_workspace_id), workspace_id), col(RunTrigger.workspace_id))
    rows = session.execute(
        sa_select(col(Workspace.name), col(RunTrigger.only_if_changed), col(RunTrigger.workspace_id))
        .join(Workspace, other)
        .where((col(RunTrigger.workspace_id) == workspace_id) | (col(RunTrigger.source_workspace_id) == workspace_id))
        .order_by(col(Workspace.name))).all()
    follows = [(str(n), bool(flag)) for n, flag, follower in rows if follower == workspace_id]
    followed_by = [str(n) for n, _flag, follower in rows if follower != workspace_id]
    return follows, followed_by


def find_trigger(session: Session, workspace_id: int, source_id: int) -> RunTrigger | None:
    return session.exec(select(RunTrigger).where(RunTrigger.workspace_id == workspace_id,
                                                 RunTrigger.source_workspace_id == source_id)).first()


def waiting_triggered_task(session: Session, workspace_id: int) -> Task | None:
    """F4: the workspace's triggered plan that has not started yet, if any (a second source's
    apply joins it instead of queuing another)."""
    return session.exec(
        select(Task).where(Task.workspace_id == workspace_id, Task.status == Status.PENDING,
                           Task.kind == "plan_and_apply", col(Task.trigger_sources).is_not(None))
        .order_by(col(Task.id))
    ).first()


def lock_workspace_of_task(session: Session, task_id: int) -> int | None:
    """Issue 18 item 6: lock the task's workspace row (FOR UPDATE on PostgreSQL, level 1 of the
    lock order in store/db.py) in one statement, without loading the task; its id."""
    found = session.execute(
        select(Workspace.id).where(col(Workspace.id) == select(Task.workspace_id).where(
            col(Task.id) == task_id).scalar_subquery()).with_for_update()
    ).scalar()
    return int(found) if found is not None else None


def lock_workspace_row(session: Session, workspace_id: int) -> Workspace | None:
    """The workspace, its row locked on PostgreSQL (FOR UPDATE) until the transaction ends, so
    that two trigger entries reaching it decide one after the other; None if it was deleted."""
    return session.exec(select(Workspace).where(Workspace.id == workspace_id).with_for_update()).first()


def inventory_sync_row(session: Session, workspace_id: int) -> InventorySync:
    row = session.exec(select(InventorySync).where(InventorySync.workspace_id == workspace_id)).first()
    if row is None:
        row = InventorySync(workspace_id=workspace_id, status="idle", updated_at=now())
        session.add(row)
        session.flush()
    return row


def inventory_rows(session: Session, *, workspace_id: int | None = None, rtype: str | None = None,
                   include_removed: bool = True) -> Sequence[tuple[InventoryResource, str]]:
    query = select(InventoryResource, Workspace).join(Workspace,
                                                      col(Workspace.id) == col(InventoryResource.workspace_id))
    if workspace_id is not None:
        query = query.where(col(InventoryResource.workspace_id) == workspace_id)
    if rtype is not None:
        query = query.where(col(InventoryResource.type) == rtype)
    if not include_removed:
        query = query.where(col(InventoryResource.removed_at).is_(None))
    rows = session.exec(query.order_by(col(Workspace.name), col(InventoryResource.address))).all()
    return [(r, w.name) for r, w in rows]


def get_destination(session: Session, name: str) -> NotificationDestination:
    found = find_destination(session, name)
    if found is None:
        raise NotFound(f"unknown notification destination {name!r}")
    return found


def find_destination(session: Session, name: str) -> NotificationDestination | None:
    return session.exec(select(NotificationDestination).where(NotificationDestination.name == name)).first()


def destinations(session: Session) -> Sequence[NotificationDestination]:
    return session.exec(select(NotificationDestination).order_by(col(NotificationDestination.name))).all()


def count_destinations_of_workspace(session: Session, workspace_id: int) -> int:
    return int(session.execute(
        select(func.count()).select_from(NotificationDestination)
        .where(col(NotificationDestination.workspace_id) == workspace_id)
    ).scalar() or 0)


Lane = tuple[str, int | None]
LOCAL_KINDS = ("trigger", "inventory")  # handled in the store by iacctl itself, no destination


def outbox_lane(entry: OutboxEntry) -> Lane:
    """Entries of one lane are handled one at a time, in order. A notification's lane is its
    destination (F3: its events arrive in order); a run trigger's is its source workspace (its
    applies queue plans in order); each inventory sync is a lane of its own (a sync applies only
    a newer state serial, so order does not matter, and one that waits to be sent to the
    inventory URL holds up no other)."""
    if entry.kind == "trigger":
        return ("trigger", entry.workspace_id)
    if entry.kind == "inventory":
        return ("inventory", entry.id)
    return ("notification", entry.destination_id)


def open_outbox_entries(session: Session) -> Sequence[OutboxEntry]:
    """Every open (pending or delivering) entry, oldest first. Each is sent on its own: one
    waiting for its retry holds back no later entry of its destination (issue 19 item 2)."""
    return session.exec(
        select(OutboxEntry).where(col(OutboxEntry.status).in_(OUTBOX_OPEN)).order_by(col(OutboxEntry.id))
    ).all()


def due_outbox_ids(session: Session, at: float, limit: int = 100) -> list[int]:
    """Issue 19 item 2: the entries due again after a failure, or whose claim's lease ran out,
    for the next command that writes to the store to send (one query on ix_outbox_status_due)."""
    rows = session.execute(
        select(OutboxEntry.id)
        .where(((col(OutboxEntry.status) == "pending") & (col(OutboxEntry.next_attempt_at) <= at))
               | ((col(OutboxEntry.status) == "delivering") & (col(OutboxEntry.lease_until) < at)))
        .order_by(col(OutboxEntry.id)).limit(limit)
    ).all()
    return [int(r[0]) for r in rows]


def lock_destination(session: Session, destination_id: int) -> bool:
    """PostgreSQL: take the destination's row lock, or False at once if another transaction has it
    (FOR UPDATE SKIP LOCKED), so that two sweeps never claim two entries of one destination.
    SQLite's BEGIN IMMEDIATE serializes the claims already."""
    row = session.execute(
        select(NotificationDestination.id).where(col(NotificationDestination.id) == destination_id)
        .with_for_update(skip_locked=True)
    ).first()
    return row is not None


def claim_outbox_entry(session: Session, entry: OutboxEntry, *, at: float, lease_s: float, token: str,
                       host: str, pid: int, start: float | None) -> bool:
    """F1: claim the entry as read (compare-and-set on its status and previous claim): of two
    processes racing for it one gets it. The lease lets a later sweep take it over when the
    claimer dies."""
    cond = [col(OutboxEntry.id) == entry.id, col(OutboxEntry.status) == entry.status]
    if entry.claim_token is None:
        cond.append(col(OutboxEntry.claim_token).is_(None))
    else:
        cond.append(col(OutboxEntry.claim_token) == entry.claim_token)
    result = session.execute(
        update(OutboxEntry).where(*cond).values(
            status="delivering", claim_token=token, lease_until=at + lease_s, claimed_by_host=host,
            claimed_by_pid=pid, claimed_by_start=start, updated_at=at)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def settle_outbox_entry(session: Session, entry_id: int, token: str, **values: Any) -> bool:
    """Record how a claimed entry's attempt ended, only if the claim is still ours: an entry is
    marked delivered at most once, by the one claim that sent it."""
    result = session.execute(
        update(OutboxEntry)
        .where(col(OutboxEntry.id) == entry_id, col(OutboxEntry.claim_token) == token,
               col(OutboxEntry.status) == "delivering")
        .values(claim_token=None, lease_until=None, updated_at=now(), **values)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def settle_late_delivery(session: Session, entry_id: int, *, at: float) -> bool:
    """Issue 19 item 1: a receiver answered 2xx after the command had given the attempt up (its
    claim released, the entry pending for a retry): the entry is delivered after all, unless
    another claim has it by now (then that claim's attempt decides), so it is not sent twice."""
    result = session.execute(
        update(OutboxEntry)
        .where(col(OutboxEntry.id) == entry_id, col(OutboxEntry.status) == "pending",
               col(OutboxEntry.claim_token).is_(None))
        .values(status="delivered", delivered_at=at, last_error=None, updated_at=at)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def get_outbox_entry(session: Session, entry_id: int) -> OutboxEntry:
    entry = session.get(OutboxEntry, entry_id)
    if entry is None:
        raise NotFound(f"unknown outbox entry {entry_id}")
    return entry


def outbox_entries(session: Session, *, statuses: Iterable[str] | None = None, ids: Iterable[int] | None = None,
                   workspace_id: int | None = None, kind: str | None = None,
                   limit: int = 1000) -> Sequence[OutboxEntry]:
    query = select(OutboxEntry)
    if kind is not None:
        query = query.where(col(OutboxEntry.kind) == kind)
    if statuses is not None:
        query = query.where(col(OutboxEntry.status).in_(list(statuses)))
    if ids is not None:
        query = query.where(col(OutboxEntry.id).in_(list(ids)))
    if workspace_id is not None:
        query = query.where(col(OutboxEntry.workspace_id) == workspace_id)
    return session.exec(query.order_by(col(OutboxEntry.id).desc()).limit(limit)).all()


def add_delivery(session: Session, delivery: Delivery) -> None:
    session.add(delivery)


def deliveries(session: Session, *, destination_id: int | None = None, failed_only: bool = False,
               limit: int = 1000) -> Sequence[Delivery]:
    query = select(Delivery)
    if destination_id is not None:
        query = query.where(col(Delivery.destination_id) == destination_id)
    if failed_only:
        query = query.where(col(Delivery.result).not_in(["delivered", "verified"]))
    return session.exec(query.order_by(col(Delivery.id).desc()).limit(limit)).all()


def dismiss_pending_entries(session: Session, destination_id: int, why: str) -> int:
    """Entries of a destination that will not be sent (deleted or disabled) are dismissed, never
    left waiting. One being sent right now finishes and is recorded as it ends."""
    result = session.execute(
        update(OutboxEntry)
        .where(col(OutboxEntry.destination_id) == destination_id, col(OutboxEntry.status) == "pending")
        .values(status="dismissed", last_error=why, updated_at=now())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def forget_destination(session: Session, destination_id: int) -> None:
    """A destination whose creation was refused leaves nothing behind (X4), not even its log."""
    session.execute(delete(Delivery).where(col(Delivery.destination_id) == destination_id))
    destination = session.get(NotificationDestination, destination_id)
    if destination is not None:
        session.delete(destination)


def requeue_outbox_entry(session: Session, entry: OutboxEntry, at: float) -> None:
    """`outbox retry`: the entry is due now, with a new day of retries, and is handed to this
    command's deliverer like an entry it wrote."""
    entry.status, entry.next_attempt_at, entry.give_up_at, entry.updated_at = "pending", at, at + GIVE_UP_AFTER_S, at
    session.add(entry)
    session.flush()
    session.info.setdefault("outbox_written", []).append(entry.id)


def outbox_work_waiting(session: Session, at: float) -> int:
    """How many entries a sweep may have to send: pending ones due now, and ones being delivered
    (their claimer may be gone)."""
    return int(session.execute(
        select(func.count()).select_from(OutboxEntry)
        .where(((col(OutboxEntry.status) == "pending") & (col(OutboxEntry.next_attempt_at) <= at))
               | (col(OutboxEntry.status) == "delivering"))
    ).scalar() or 0)


# -- drift (F5) -----------------------------------------------------------------------------------


def drift_of(session: Session, workspace_id: int) -> WorkspaceDrift | None:
    return session.get(WorkspaceDrift, workspace_id)


def drift_facts(session: Session, workspace_id: int) -> tuple[list[TaskFacts], TaskFacts | None]:
    """What `domain.drift.skip_reason()` needs: the workspace's live tasks, and its last task
    that is not a drift check."""
    live = [TaskFacts(int(i), str(k), str(s)) for i, k, s in session.execute(
        select(Task.id, Task.kind, Task.status)
        .where(col(Task.workspace_id) == workspace_id,
               col(Task.status).in_([Status.PENDING, Status.RUNNING, Status.APPLY_PENDING]))
        .order_by(col(Task.id))
    ).all()]
    last = session.execute(
        select(Task.id, Task.kind, Task.status)
        .where(col(Task.workspace_id) == workspace_id, col(Task.kind) != "drift_check")
        .order_by(col(Task.id).desc()).limit(1)
    ).first()
    return live, (TaskFacts(int(last[0]), str(last[1]), str(last[2])) if last else None)


def record_drift(session: Session, workspace_id: int, task_id: int, resources: Sequence[DriftedResource],
                 at: float) -> bool:
    """F5: the check's result replaces the workspace's drift record; its drift notifications are
    written in the same transaction when the drifted set is new or changed compared with the
    last recorded check. True if they were."""
    row = drift_of(session, workspace_id)
    previous = None if row is None or row.cleared_at is not None else row.fingerprint
    current = fingerprint(resources)
    if row is None:
        row = WorkspaceDrift(workspace_id=workspace_id, task_id=task_id, checked_at=at)
    row.task_id, row.checked_at, row.fingerprint = task_id, at, current
    row.resources_json = json.dumps([r.as_json() for r in resources], separators=(",", ":"))
    row.cleared_at, row.cleared_by_task_id = None, None
    session.add(row)
    session.flush()
    if not notify_drift(previous, current):
        return False
    write_drift_follow_ups(session, task_id, [r.as_json() for r in resources])
    return True


def clear_drift(session: Session, task_id: int) -> bool:
    """F5: the applied task clears its workspace's drift record if the check came before the
    apply's plan (whose refresh saw what the check saw). A check made after that plan stays:
    the saved plan applied did not know of it."""
    task = session.execute(
        select(Task).where(col(Task.id) == task_id).execution_options(populate_existing=True)
    ).scalar_one()
    made = task.planned_at if task.planned_at is not None else task.started_at
    result = session.execute(
        update(WorkspaceDrift)
        .where(col(WorkspaceDrift.workspace_id) == task.workspace_id, col(WorkspaceDrift.cleared_at).is_(None),
               col(WorkspaceDrift.fingerprint).is_not(None), col(WorkspaceDrift.checked_at) <= (made or now()))
        .values(cleared_at=now(), cleared_by_task_id=task_id)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def write_drift_follow_ups(session: Session, task_id: int, drifted: list[dict[str, Any]]) -> list[int]:
    """F1, F5: the `drift_detected` notifications of a drift check, one per destination that
    chose the event; keyed by the check task, so a check writes them once."""
    task = session.execute(select(Task).where(col(Task.id) == task_id)).scalar_one()
    destinations = destinations_for(session, task.workspace_id, Event.DRIFT_DETECTED)
    if not destinations:
        return []
    ws_name = session.execute(select(Workspace.name).where(col(Workspace.id) == task.workspace_id)).scalar()
    t = now()
    facts = Facts(event=Event.DRIFT_DETECTED, task_id=task_id, task_kind=task.kind, status=str(task.status),
                  workspace_id=task.workspace_id, workspace_name=str(ws_name), created_at=task.created_at,
                  updated_at=t, actor=task_actor(task), plan_hash=task.plan_hash, drift=drifted,
                  message=task_message(task)).as_json()
    return _notification_entries(session, task, destinations, Event.DRIFT_DETECTED, 1, facts, t)
