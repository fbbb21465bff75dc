"""Pools, pods and slots as the user sees them (SPEC S1-S3): list, reconcile, pool settings."""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import col, select

from iacctl.config import heartbeat_timeout
from iacctl.domain.durations import parse_duration
from iacctl.domain.slots import PodStatus, SlotState
from iacctl.errors import Refused, UsageError
from iacctl.runtimes import local
from iacctl.services import queue, scaling
from iacctl.services.app import App
from iacctl.services.pools import KUBE_NAME, check_context, show_pool
from iacctl.services.views import iso
from iacctl.store import repo
from iacctl.store.models import Pod, Pool, Slot


def list_pods(app: App, pool: str | None = None) -> list[dict[str, Any]]:
    with app.store.read() as session:
        query = select(Pod, Pool).join(Pool, col(Pool.id) == col(Pod.pool_id)).order_by(col(Pod.id))
        slot_query = select(Slot).join(Pod, col(Pod.id) == col(Slot.pod_id)).order_by(col(Slot.slot_index))
        if pool is not None:
            pool_id = repo.get_pool(session, pool).id
            query = query.where(Pool.id == pool_id)
            slot_query = slot_query.where(Pod.pool_id == pool_id)
        # Two queries whatever the number of pods (item 10: 1,000 pods).
        slots_by_pod: dict[int, list[Slot]] = {}
        for s in session.exec(slot_query).all():
            slots_by_pod.setdefault(s.pod_id, []).append(s)
        out = []
        me, now, timeout = local.machine(), repo.now(), heartbeat_timeout()
        for pod, pool_row in session.exec(query).all():
            slots = slots_by_pod.get(pod.id or 0, [])
            view: dict[str, Any] = {
                "pool": pool_row.name, "name": pod.name, "status": pod.status,
                "created_at": iso(pod.created_at), "idle_since": iso(pod.idle_since),
                "slots": [{"index": s.slot_index, "state": s.state, "task": s.task_id} for s in slots],
            }
            if pool_row.backend == "local":
                # Issue 18 item 4: each machine its own pod; one silent past the heartbeat timeout is
                # offline, and its places count for nobody.
                alive = pod.machine == me or (pod.heartbeat_at is not None and now - pod.heartbeat_at <= timeout)
                if pod.status == PodStatus.READY and not alive:
                    view["status"] = "offline"
                # (The heartbeat's time itself is not shown: it changes with every command.)
                view.update({"machine": pod.machine, "this_machine": pod.machine == me,
                             "places": (pod.slots_per_pod or pool_row.slots_per_pod) if alive else 0})
            out.append(view)
        return out


def set_pool(app: App, name: str, *, slots_per_pod: int | None, plan_lifetime: str | None,
             max_pods: int | None = None, min_pods: int | None = None, context: str | None = None,
             image: str | None = None, namespace: str | None = None) -> dict[str, Any]:
    if image is not None and (not image or any(c.isspace() for c in image)):
        raise UsageError("--image must be an image reference (the runner image: terraform, sh and tar in it)")
    if namespace is not None and not KUBE_NAME.match(namespace):
        raise UsageError(f"invalid --namespace {namespace!r}: a Kubernetes namespace name (lowercase)")
    if slots_per_pod is not None and not 1 <= slots_per_pod <= 64:
        raise UsageError("--slots-per-pod must be between 1 and 64")
    if max_pods is not None and not 1 <= max_pods <= 10000:
        raise UsageError("--max-pods must be between 1 and 10000")
    if min_pods is not None and not 0 <= min_pods <= 10000:
        raise UsageError("--min-pods must be between 0 and 10000")
    lifetime = parse_duration(plan_lifetime) if plan_lifetime else None
    if context is not None:
        check_context(context)  # issue 9: before anything is written
    with app.store.write() as session:
        pool = repo.get_pool(session, name)
        if context is not None:
            if pool.backend != "kubernetes":
                raise UsageError(f"pool {name} is a {pool.backend} pool: it has no kube context")
            spec = json.loads(pool.spec_json or "{}")
            spec["context"] = context
            pool.spec_json = json.dumps(spec)
        if min_pods is not None:
            if pool.backend == "local":
                raise UsageError("the local pool is this machine, one pod; set its --slots-per-pod instead")
            if min_pods > (max_pods if max_pods is not None else pool.max_pods):
                raise UsageError(f"--min-pods must be at most the pool's max pods ({pool.max_pods})")
            pool.min_pods = min_pods
        if max_pods is not None:
            if pool.backend == "local":
                raise UsageError("the local pool is this machine, one pod; set its --slots-per-pod instead")
            if max_pods < (min_pods if min_pods is not None else pool.min_pods):
                raise UsageError(f"--max-pods must be at least the pool's min pods ({pool.min_pods})")
            pool.max_pods = max_pods
        if image is not None or namespace is not None:
            # Issue 10 item 6: the fix for an image that cannot be pulled or a namespace that
            # does not exist. New pods get it; pods already running keep theirs.
            if pool.backend == "local":
                raise UsageError("the local pool is this machine: it has no image or namespace")
            spec = json.loads(pool.spec_json or "{}")
            if namespace is not None and namespace != spec.get("namespace") and any(
                    p.status in (PodStatus.READY, PodStatus.CREATING) for p in repo.pods_of(session, pool.id or 0)):
                raise Refused(f"pool {name} has pods in namespace {spec.get('namespace')}; move it once it has "
                              f"none (iacctl pool set {name} --max-pods 1, then wait for its tasks to end)")
            spec.update({k: v for k, v in (("image", image), ("namespace", namespace)) if v is not None})
            pool.spec_json = json.dumps(spec, sort_keys=True)
        if slots_per_pod is not None:
            pool.slots_per_pod = slots_per_pod
            if pool.backend == "local" and app.local_pod_id is not None:
                # Issue 18 item 4: the local pool's places are each machine's: this sets this
                # machine's (and the number a machine using the store for the first time gets).
                mine = session.get(Pod, app.local_pod_id)
                if mine is not None:
                    mine.slots_per_pod = slots_per_pod
                    session.add(mine)
        if lifetime is not None:
            pool.plan_lifetime_s = lifetime
        session.add(pool)
    reconcile(app, name)
    queue.kick_queue(app)  # more slots may let queued tasks start
    return show_pool(app, name)


def reconcile(app: App, pool: str | None = None) -> list[dict[str, Any]]:
    """Kubernetes pools: pods scaled to the desired number (S3, S4; services.scaling). Every
    pool: each ready pod's slots made to match the pool's slots per pod. Slots in use are never
    removed: a running or reserved slot above the number goes once it is idle. Idempotent."""
    changes: list[dict[str, Any]] = []
    with app.store.read() as session:
        pools = [repo.get_pool(session, pool)] if pool else list(session.exec(select(Pool)).all())
    for p in pools:
        if p.backend == "kubernetes":
            changes += scaling.reconcile_pool(app, p.name)
    with app.store.write() as session:
        pools = [repo.get_pool(session, pool)] if pool else list(session.exec(select(Pool)).all())
        for p in pools:
            # One query for the pool's slots, not one per pod (item 10: 1,000 pods).
            by_pod: dict[int, dict[int, Slot]] = {}
            for s in session.exec(select(Slot).join(Pod, col(Pod.id) == col(Slot.pod_id))
                                  .where(col(Pod.pool_id) == p.id)).all():
                by_pod.setdefault(s.pod_id, {})[s.slot_index] = s
            for pod in repo.pods_of(session, p.id or 0):
                if pod.status != "ready":
                    continue
                slots = by_pod.get(pod.id or 0, {})
                count = pod.slots_per_pod or p.slots_per_pod  # issue 18 item 4: a machine's own count
                for i in range(count):
                    if i not in slots:
                        session.add(Slot(pod_id=pod.id or 0, slot_index=i, state=SlotState.IDLE,
                                         updated_at=repo.now()))
                        changes.append({"pool": p.name, "pod": pod.name, "change": "slot_added",
                                        "detail": f"slot {i} added"})
                for i, s in slots.items():
                    if i >= count and s.state == SlotState.IDLE:
                        session.delete(s)
                        changes.append({"pool": p.name, "pod": pod.name, "change": "slot_removed",
                                        "detail": f"slot {i} removed"})
    return changes
