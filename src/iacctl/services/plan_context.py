"""A plan's context (SPEC S5, S6): the reserved slot and work directory of a task waiting for
confirmation. Whether it is lost, planning again when it is (S5), and warm-up (S6).

Warm-up (seed 001): a pool with `on_lost_context = warmup` does not re-plan an
apply_pending task whose plan context is lost; it reserves a new slot and prepares it from the
store (work directory, init, plan restored, hash verified), marked `ready` before the user
confirms. A ready warm-up expires after the pool's warm-up lifetime and is prepared again; after
the retry limit of attempts the task falls back to re-planning (S5).

Slots move in one transaction: the new slot is claimed (compare-and-set) and every other slot
the task held is freed, so a task never holds two slots.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import Session, col

from iacctl.domain.durations import format_duration
from iacctl.domain.lifecycle import Status
from iacctl.domain.scaling import WARMUP_READY, warmup_expired
from iacctl.domain.slots import PodStatus, SlotState
from iacctl.errors import BackendError
from iacctl.executor.progress import Reporter, SilentReporter
from iacctl.executor.run import TaskRun
from iacctl.runtimes import local
from iacctl.runtimes.base import RuntimeError_, SlotPlace
from iacctl.services import scaling
from iacctl.services.app import App
from iacctl.store import repo
from iacctl.store.models import Pod, Pool, Slot, Task

READY = WARMUP_READY
WARMING = "warming"
FAILED = "failed"


def lost(app: App, task: Task) -> str | None:
    """S5: why the task's plan context (its reserved slot and work directory) is lost, or None
    when it is intact."""
    with app.store.read() as session:
        slot = session.get(Slot, task.slot_id) if task.slot_id else None
        pod = session.get(Pod, slot.pod_id) if slot else None
        pool = session.get(Pool, pod.pool_id) if pod else None
    if slot is None or pod is None or pool is None:
        return "its slot is gone"
    if slot.task_id != task.id or slot.state != SlotState.RESERVED:
        return f"slot {slot.id} is no longer reserved for it"
    if pod.status != PodStatus.READY:
        return f"pod {pod.name} is gone"
    if pool.backend == "local" and pod.machine is not None and pod.machine != local.machine():
        # Issue 18 item 2: a slot of another machine's local pod is on that machine's disk, which
        # this one cannot see: not this machine's to judge lost. Its plan is rebuilt here from
        # the store when confirmed here (move_here, in the confirmation's transaction).
        return None
    runtime = app.runtime_for(pool)
    try:
        alive = runtime.pod_alive(pod.name)
    except RuntimeError_ as exc:
        raise BackendError(f"cannot check pod {pod.name}: {exc}") from None
    if not alive:
        scaling.mark_pod_lost(app, pool.name, pod.name)
        return f"pod {pod.name} is gone"
    try:
        exists = runtime.work_dir_exists(SlotPlace(pool.name, pod.name, slot.slot_index))
    except RuntimeError_ as exc:
        raise BackendError(f"cannot check slot {slot.slot_index} of pod {pod.name}: {exc}") from None
    if not exists:
        return f"the work directory of slot {pool.name}/{pod.name}/slot-{slot.slot_index} is gone"
    return None


def move_here(session: Session, task: Task, pod_id: int, note: str) -> bool:
    """Issue 18 item 2: the task's reservation moves to a slot of this machine's local pod
    `pod_id` (a new slot row if every one is taken: only running tasks count against a
    machine's places). The slot on the other machine is freed in the same transaction; its
    directory there is removed when that machine next looks (its sweep removes the directories
    of idle slots, or its next use of the slot resets it). The apply then rebuilds the work
    directory here from the store (E6). Rows only: it runs inside the confirmation's own
    transaction, so that the move and the confirmation are one decision (two runners confirming
    at once never move the plan back and forth). False if no slot could be had."""
    before = repo.slot_place(session, task.slot_id)
    slot = repo.claim_slot(session, task.pool_id or 0, task.id or 0, grow=True, pod_id=pod_id)
    if slot is None:
        return False
    session.execute(
        update(Slot).where(col(Slot.task_id) == task.id, col(Slot.id) != slot.id)
        .values(state=SlotState.IDLE, task_id=None, updated_at=repo.now())
    )
    repo.set_slot_state(session, slot.id or 0, task.id or 0, SlotState.RUNNING, SlotState.RESERVED)
    repo.update_task(session, task.id or 0, slot_id=slot.id, pod_id=slot.pod_id)
    repo.add_event(session, task.id or 0, "note", None, None,
                   f"{note}: from slot {before} to slot {repo.slot_place(session, slot.id)}")
    task.slot_id, task.pod_id = slot.id, slot.pod_id
    return True


def reset_to_pending(session: Session, task: Task, reason: str) -> None:
    """S5: back to pending to plan again, with slot, pod, start time and error cleared; the
    transition frees slot and lock, which the new plan takes again when it waits for confirmation."""
    repo.transition(
        session, task.id or 0, Status.APPLY_PENDING, Status.PENDING, reason,
        slot_id=None, pod_id=None, plan_slot_id=None, started_at=None, error=None, stage=None,
        plan_hash=None, planned_at=None, runner_host=None, runner_pid=None, runner_start=None,
        creator_host=None, creator_pid=None, creator_start=None, replans=task.replans + 1,
        **repo.WARMUP_CLEARED,
    )


def expired(task: Task) -> bool:
    return warmup_expired(task.warmup_status, task.warmup_expires_at, repo.now())


def move_to_new_slot(app: App, task_id: int, note: str, *, warming: bool) -> bool:
    """Claim an idle slot of the task's pool for it (scaling up if there is none), free the
    slots it held, and keep the new one reserved. False if no slot could be had."""
    for attempt in range(2):
        with app.store.write() as session:
            task = repo.get_task(session, task_id)
            if task.status != Status.APPLY_PENDING or task.confirmed_at is not None:
                return False
            slot = repo.claim_idle_slot(session, task.pool_id or 0, task_id)
            if slot is not None:
                session.execute(
                    update(Slot).where(col(Slot.task_id) == task_id, col(Slot.id) != slot.id)
                    .values(state=SlotState.IDLE, task_id=None, updated_at=repo.now())
                )
                repo.set_slot_state(session, slot.id or 0, task_id, SlotState.RUNNING, SlotState.RESERVED)
                fields: dict[str, object] = {"slot_id": slot.id, "pod_id": slot.pod_id}
                if warming:
                    fields.update(warmup_status=WARMING, warmup_slot_id=slot.id, warmup_at=repo.now(),
                                  warmup_expires_at=None, warmup_attempts=task.warmup_attempts + 1,
                                  warmup_error=None)
                repo.update_task(session, task_id, **fields)
                place = repo.slot_place(session, slot.id)
                repo.add_event(session, task_id, "note", None, None, f"{note}: slot {place}")
                return True
            pool = session.get(Pool, task.pool_id)
        if attempt == 0 and pool is not None:
            try:
                scaling.reconcile_pool(app, pool.name)
            except BackendError:
                return False
    return False


def warm_up(app: App, task_id: int, reporter: Reporter | None = None) -> str | None:
    """One warm-up attempt for the task: None when it is ready, else why not."""
    if not move_to_new_slot(app, task_id, "warm-up", warming=True):
        return "no slot for the warm-up"
    with app.store.read() as session:
        task = repo.get_task(session, task_id)
        pool = session.get(Pool, task.pool_id)
    runtime = app.runtime_for_pool_id(task.pool_id or 0)
    run = TaskRun(app.store, runtime, task_id, reporter or SilentReporter())
    error = run.warm_up()
    lifetime = pool.warmup_lifetime_s if pool else 1800.0
    with app.store.write() as session:
        current = repo.get_task(session, task_id)
        if current.status != Status.APPLY_PENDING or current.warmup_slot_id != task.slot_id:
            return "the task changed during its warm-up"
        if error is None:
            repo.update_task(session, task_id, warmup_status=READY, warmup_expires_at=repo.now() + lifetime,
                             warmup_error=None)
            repo.add_event(session, task_id, "note", None, None,
                           f"warm-up ready (attempt {current.warmup_attempts}); "
                           f"it expires in {format_duration(lifetime)}")
        else:
            repo.update_task(session, task_id, warmup_status=FAILED, warmup_error=error)
            repo.add_event(session, task_id, "note", None, None,
                           f"warm-up attempt {current.warmup_attempts} failed: {error}")
    if error is not None:
        with app.store.read() as session:
            place = repo.slot_place(session, task.slot_id)
        if place is not None:
            try:
                runtime.remove_work_dir(place)
            except Exception:
                pass
    return error


def retries_left(app: App, task: Task) -> bool:
    with app.store.read() as session:
        pool = session.get(Pool, task.pool_id)
    return pool is not None and task.warmup_attempts < pool.warmup_retry_limit
