"""Pools, pods and slots as the user sees them (SPEC S1-S3): list, reconcile, pool settings."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from iacctl.domain.durations import format_duration, parse_duration
from iacctl.domain.slots import SlotState
from iacctl.errors import UsageError
from iacctl.services import queue
from iacctl.services.app import App
from iacctl.services.views import iso
from iacctl.store import repo
from iacctl.store.models import Pod, Pool, Slot


def list_pods(app: App, pool: str | None = None) -> list[dict[str, Any]]:
    with app.store.read() as session:
        query = select(Pod, Pool).join(Pool, col(Pool.id) == col(Pod.pool_id)).order_by(col(Pod.id))
        if pool is not None:
            query = query.where(Pool.id == repo.get_pool(session, pool).id)
        out = []
        for pod, pool_row in session.exec(query).all():
            slots = repo.slots_of_pod(session, pod.id or 0)
            out.append({
                "pool": pool_row.name, "name": pod.name, "status": pod.status,
                "created_at": iso(pod.created_at),
                "slots": [{"index": s.slot_index, "state": s.state, "task": s.task_id} for s in slots],
            })
        return out


def _pool_view(pool: Pool) -> dict[str, Any]:
    return {"name": pool.name, "backend": pool.backend, "slots_per_pod": pool.slots_per_pod,
            "min_pods": pool.min_pods, "max_pods": pool.max_pods,
            "plan_lifetime": format_duration(pool.plan_lifetime_s),
            "scale_down_delay": format_duration(pool.scale_down_delay_s),
            "on_lost_context": pool.on_lost_context}


def list_pools(app: App) -> list[dict[str, Any]]:
    with app.store.read() as session:
        return [_pool_view(p) for p in session.exec(select(Pool).order_by(col(Pool.name))).all()]


def show_pool(app: App, name: str) -> dict[str, Any]:
    with app.store.read() as session:
        return _pool_view(repo.get_pool(session, name))


def set_pool(app: App, name: str, *, slots_per_pod: int | None, plan_lifetime: str | None) -> dict[str, Any]:
    if slots_per_pod is not None and not 1 <= slots_per_pod <= 64:
        raise UsageError("--slots-per-pod must be between 1 and 64")
    lifetime = parse_duration(plan_lifetime) if plan_lifetime else None
    with app.store.write() as session:
        pool = repo.get_pool(session, name)
        if slots_per_pod is not None:
            pool.slots_per_pod = slots_per_pod
        if lifetime is not None:
            pool.plan_lifetime_s = lifetime
        session.add(pool)
    reconcile(app, name)
    queue.kick_queue(app)  # more slots may let queued tasks start
    return show_pool(app, name)


def reconcile(app: App, pool: str | None = None) -> list[dict[str, Any]]:
    """Make each pod's slots match the pool's slots per pod. Slots in use are never removed:
    a running or reserved slot above the number goes once it is idle. Idempotent."""
    changes: list[dict[str, Any]] = []
    with app.store.write() as session:
        pools = [repo.get_pool(session, pool)] if pool else session.exec(select(Pool)).all()
        for p in pools:
            for pod in repo.pods_of(session, p.id or 0):
                slots = {s.slot_index: s for s in repo.slots_of_pod(session, pod.id or 0)}
                for i in range(p.slots_per_pod):
                    if i not in slots:
                        session.add(Slot(pod_id=pod.id or 0, slot_index=i, state=SlotState.IDLE,
                                         updated_at=repo.now()))
                        changes.append({"pool": p.name, "pod": pod.name, "slot": i, "change": "added"})
                for i, s in slots.items():
                    if i >= p.slots_per_pod and s.state == SlotState.IDLE:
                        session.delete(s)
                        changes.append({"pool": p.name, "pod": pod.name, "slot": i, "change": "removed"})
    return changes
