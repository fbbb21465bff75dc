"""Kubernetes pools' pods in the store and in the cluster (SPEC S3, S4, S5, S7):
`iacctl pods reconcile`, the scale-up a waiting task asks for, and the first step of the sweep.

One pod list call per pool (label selector) and bulk store queries, never a round trip per pod
(item 10: pools of 1,000 pods). Decisions are made in one write transaction holding the pool's
row (FOR UPDATE; BEGIN IMMEDIATE on SQLite), so two processes reconciling together do not both
create the missing pods. A pod row is written (`creating`) before the pod is created in the
API, so a pod in the API without a row is an orphan and is deleted. The pods are listed, and
the pods to delete deleted, while the pool's row is held (issue 18 item 3), so two machines
reconciling at once never see one pod two ways.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from iacctl.domain.admission import Blocker, admit
from iacctl.domain.freeze import format_instant
from iacctl.domain.lifecycle import Status
from iacctl.domain.scaling import PodLoad, desired_pods, idle_since, pods_to_create, pods_to_delete, warmup_expired
from iacctl.domain.slots import PodStatus, SlotState
from iacctl.errors import BackendError, BackendRefused
from iacctl.runtimes.base import ClusterRefused, PodBackend, PodInfo, RuntimeError_
from iacctl.services.app import App
from iacctl.store import repo
from iacctl.store.models import Pod, Pool, Slot, Task

CREATING = PodStatus.CREATING
# A change that says the cluster refuses the pool's pods and will go on refusing (issue 10 item 6).
REFUSED = "refused"
# Blockers that more slots would lift: such a task is demand for a pod (S3).
WANTS_A_SLOT = (None, Blocker.NO_CAPACITY, Blocker.RESERVED_CAPACITY, Blocker.PLAN_EXPIRED)
# A pod row still `creating` this long after it was written belongs to a process that died.
START_TIMEOUT_S = 300.0


def _change(pool: str, pod: str | None, change: str, detail: str) -> dict[str, Any]:
    return {"pool": pool, "pod": pod, "change": change, "detail": detail}


def reconcile_pool(app: App, name: str) -> list[dict[str, Any]]:
    """Bring a Kubernetes pool's pods to what S3/S4 want. Prints nothing; returns the changes.
    Idempotent: run again at once, it changes nothing."""
    with app.store.read() as session:
        pool = repo.get_pool(session, name)
    runtime = app.pod_backend_for(pool)
    changes: list[dict[str, Any]] = []
    delete_in_api: list[str] = []
    create: list[str] = []
    with app.store.write() as session:
        pool = session.exec(select(Pool).where(Pool.name == name).with_for_update()).one()
        pool_id = pool.id or 0
        # Issue 18 item 3: the pods are listed under the pool's lock, and the pods it deletes are
        # deleted before it is released, so a reconcile on another machine waiting for the lock
        # lists what this one left: it never reports a pod this one scaled down as an orphan.
        listed_at = repo.now()
        try:
            api_pods = runtime.list_pods()
        except ClusterRefused as exc:
            raise BackendRefused(f"pool {name}: {exc}") from None
        except RuntimeError_ as exc:
            raise BackendError(f"pool {name}: {exc}") from None
        now = repo.now()
        window = repo.frozen_now(session, pool_id, now)
        pods = list(repo.pods_of(session, pool_id))
        slots = _slots_by_pod(session, [p.id or 0 for p in pods])
        known = {p.name for p in pods}
        for pod in pods:
            info = api_pods.get(pod.name)
            if pod.status in (PodStatus.READY, CREATING) and pod.created_at < listed_at:
                vanished = info is None and (pod.status == PodStatus.READY or now - pod.created_at > START_TIMEOUT_S)
                if vanished or (info is not None and not info.alive):
                    why = ("gone from the API" if info is None
                           else f"{info.phase}{' (deleting)' if info.deleting else ''}")
                    pod.status = PodStatus.LOST
                    session.add(pod)
                    changes.append(_change(name, pod.name, "lost", f"pod is {why}"))
                    if info is not None:
                        delete_in_api.append(pod.name)
            elif pod.status == PodStatus.LOST and info is not None and not info.deleting:
                # Marked lost where it was found (a failed exec, a task's runner): a failed or
                # evicted pod still in the API is deleted, so its pod count is right (S3).
                delete_in_api.append(pod.name)
            if window is not None and pod.status in (PodStatus.READY, CREATING):
                # S4: entering a freeze window deletes every pod, reserved ones too.
                pod.status = PodStatus.LOST
                session.add(pod)
                delete_in_api.append(pod.name)
                changes.append(_change(name, pod.name, "deleted",
                                       f"freeze window until {format_instant(window[1])}"))
        if window is not None and pool.frozen_until != window[1]:
            pool.frozen_until = window[1]
            session.add(pool)
            reset = _reset_warmups(session, pool_id)
            changes.append(_change(name, None, "frozen", f"until {format_instant(window[1])}; "
                                                          f"{reset} warm-up(s) reset"))
        elif window is None and pool.frozen_until is not None:
            pool.frozen_until = None
            session.add(pool)
            changes.append(_change(name, None, "unfrozen", "the freeze window is over"))
        # Lost pods keep their rows while a task still holds one of their slots (the sweep
        # re-plans or fails that task); idle slots and then the row go.
        for pod in pods:
            if pod.status != PodStatus.LOST:
                continue
            pod_slots = slots.get(pod.id or 0, [])
            for s in pod_slots:
                if s.state == SlotState.IDLE:
                    session.delete(s)
            if all(s.state == SlotState.IDLE for s in pod_slots):
                session.flush()  # the slots first: they refer to the pod
                session.delete(pod)
        for api_name, info in api_pods.items():
            if api_name not in known and not info.deleting:
                delete_in_api.append(api_name)
                changes.append(_change(name, api_name, "orphan_deleted", "pod of this pool with no record"))
        live = [p for p in pods if p.status in (PodStatus.READY, CREATING)]
        loads = []
        busy_total = 0
        for pod in live:
            pod_slots = slots.get(pod.id or 0, [])
            busy = sum(1 for s in pod_slots if s.state != SlotState.IDLE)
            busy_total += busy
            if pod.status == PodStatus.READY:
                since = idle_since(busy > 0, [s.updated_at for s in pod_slots], pod.created_at)
                if since != pod.idle_since:
                    pod.idle_since = since
                    session.add(pod)
            loads.append(PodLoad(pod.name, busy, pod.idle_since, ready=pod.status == PodStatus.READY))
        waiting = 0 if window else waiting_tasks(session, pool)
        desired = desired_pods(busy_total, waiting, pool.slots_per_pod, pool.min_pods, pool.max_pods,
                               frozen=window is not None)
        for _ in range(pods_to_create(loads, desired)):
            pod_name = runtime.new_pod_name()
            session.add(Pod(pool_id=pool_id, name=pod_name, status=CREATING, created_at=repo.now()))
            create.append(pod_name)
        by_name = {p.name: p for p in live}
        for pod_name in pods_to_delete(loads, desired, now, pool.scale_down_delay_s):
            pod = by_name[pod_name]
            for s in slots.get(pod.id or 0, []):
                session.delete(s)
            session.flush()
            session.delete(pod)
            delete_in_api.append(pod_name)
            changes.append(_change(name, pod_name, "scaled_down",
                                   f"idle since {format_instant(pod.idle_since or now)}"))
        session.flush()
        for pod_name in dict.fromkeys(delete_in_api):
            try:
                runtime.delete_pod(pod_name)
            except RuntimeError_ as exc:
                changes.append(_change(name, pod_name, "error", f"cannot delete: {exc}"))
    if create:
        changes += _start_pods(app, name, runtime, create)
    return changes


def _slots_by_pod(session: Session, pod_ids: Sequence[int]) -> dict[int, list[Slot]]:
    out: dict[int, list[Slot]] = {}
    if not pod_ids:
        return out
    for s in session.exec(select(Slot).where(col(Slot.pod_id).in_(list(pod_ids)))).all():
        out.setdefault(s.pod_id, []).append(s)
    return out


def waiting_tasks(session: Session, pool: Pool) -> int:
    """Tasks of the pool that could start if they had a slot (S3: queued work gets a pod), as
    the admission rule judges them, and apply_pending tasks waiting for a warm-up slot (S6). A
    few queries whatever the number of queued tasks (item 10)."""
    pending = session.exec(select(Task).where(Task.pool_id == pool.id, Task.status == Status.PENDING)).all()
    facts = repo.admission_facts(session, pending)
    now = repo.now()
    count = sum(1 for f in facts.values() if admit(f, now).blocker in WANTS_A_SLOT)
    if pool.on_lost_context == "warmup":
        count += needs_warmup_slot(session, pool)
    return count


def needs_warmup_slot(session: Session, pool: Pool) -> int:
    """How many apply_pending tasks of the pool need a new slot for a warm-up (S3 counts them)."""
    rows = session.exec(
        select(Task, Pod)
        .join(Slot, col(Slot.id) == col(Task.slot_id), isouter=True)
        .join(Pod, col(Pod.id) == col(Slot.pod_id), isouter=True)
        .where(Task.pool_id == pool.id, Task.status == Status.APPLY_PENDING)
    ).all()
    now = repo.now()
    count = 0
    for task, pod in rows:
        if task.warmup_attempts >= pool.warmup_retry_limit:
            continue
        if pod is None or pod.status != PodStatus.READY or warmup_expired(task.warmup_status,
                                                                          task.warmup_expires_at, now):
            count += 1
    return count


def _reset_warmups(session: Session, pool_id: int) -> int:
    """S4: a freeze resets warm-ups (their slots go with the pods)."""
    result = session.execute(
        update(Task)
        .where(col(Task.pool_id) == pool_id, col(Task.status) == Status.APPLY_PENDING,
               col(Task.warmup_status).is_not(None))
        .values(**repo.WARMUP_CLEARED)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _start_pods(app: App, name: str, runtime: PodBackend, names: list[str]) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = []
    started: list[str] = []
    for pod_name in names:
        try:
            runtime.create_pod(pod_name)
            started.append(pod_name)
        except ClusterRefused as exc:
            # Issue 10 item 6: the next pod would be refused the same way; say it once.
            changes.append(_change(name, pod_name, REFUSED, str(exc)))
            break
        except RuntimeError_ as exc:
            changes.append(_change(name, pod_name, "error", f"cannot create: {exc}"))
    seen: dict[str, PodInfo] = {}
    if started:
        try:
            seen = runtime.wait_running(started)
        except RuntimeError_ as exc:
            changes.append(_change(name, None, "error", f"cannot watch the new pods: {exc}"))
    phases = {n: p.phase for n, p in seen.items()}
    failed: list[str] = []
    with app.store.write() as session:
        pool = repo.get_pool(session, name)
        rows = {p.name: p for p in session.exec(select(Pod).where(col(Pod.name).in_(names))).all()}
        for pod_name in names:
            row = rows.get(pod_name)
            if row is None:
                continue
            if phases.get(pod_name) == "Running" and row.status == CREATING:
                row.status = PodStatus.READY
                row.idle_since = None
                session.add(row)
                session.flush()
                for i in range(pool.slots_per_pod):
                    session.add(Slot(pod_id=row.id or 0, slot_index=i, state=SlotState.IDLE,
                                     updated_at=repo.now()))
                changes.append(_change(name, pod_name, "created", f"{pool.slots_per_pod} slots"))
            elif row.status == CREATING:
                session.delete(row)
                failed.append(pod_name)
                info = seen.get(pod_name)
                if info is not None and info.stuck is not None:
                    changes.append(_change(name, pod_name, REFUSED, f"pod {pod_name} cannot start: {info.stuck}"))
                elif pod_name in started:  # the others were refused or failed: said above
                    changes.append(_change(name, pod_name, "failed_to_start",
                                           f"pod is {phases.get(pod_name, 'not created')}"))
    for pod_name in failed:
        try:
            runtime.delete_pod(pod_name)
        except RuntimeError_:
            pass
    return changes


def mark_pod_lost(app: App, pool: str, pod: str) -> None:
    """S5, issue 10 item 2: a pod found gone outside a reconcile takes no new task."""
    with app.store.write() as session:
        repo.mark_pod_lost(session, pool, pod)


def refusal(changes: list[dict[str, Any]]) -> str | None:
    """The first refusal among a reconcile's changes (issue 10 item 6), or None."""
    return next((c["detail"] for c in changes if c["change"] == REFUSED), None)


def pool_of_task(app: App, task: Task) -> Pool | None:
    with app.store.read() as session:
        return session.get(Pool, task.pool_id) if task.pool_id else None
