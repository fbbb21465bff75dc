"""Pools and their freeze windows (SPEC S1, S4): `iacctl pool create|list|show|freeze|unfreeze`."""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from iacctl.domain.durations import format_duration, parse_duration
from iacctl.domain.freeze import check_window, format_instant, parse_instant
from iacctl.domain.names import check_name, did_you_mean
from iacctl.errors import NotFound, Refused, UsageError
from iacctl.services.app import App
from iacctl.store import repo
from iacctl.store.models import FreezeWindow, Pod, Pool, Workspace

# Pool names of Kubernetes pools end up in pod names and label values (DNS-1123 labels).
_KUBE_POOL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
KUBE_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
ON_LOST_CONTEXT = ("replan", "warmup")


def create_pool(
    app: App, name: str, *, backend: str, namespace: str | None, image: str | None, context: str | None,
    service_account: str | None, slots_per_pod: int, min_pods: int, max_pods: int, work_root: str | None,
    on_lost_context: str, scale_down_delay: str, warmup_lifetime: str | None, warmup_retries: int | None,
    cpu: str | None, memory: str | None,
) -> dict[str, Any]:
    """S1: a new pool. Everything is checked before anything is written (X4)."""
    check_name("pool", name)
    if backend not in ("kubernetes", "local"):
        raise UsageError(f"unknown backend {backend!r}: use kubernetes")
    if backend == "local":
        raise UsageError("there is one local pool, `local`; create kubernetes pools with --backend kubernetes")
    if not _KUBE_POOL.match(name):
        raise UsageError(f"invalid pool name {name!r} for a kubernetes pool: lowercase letters, digits and "
                         "'-', at most 40, starting and ending with a letter or digit")
    if not namespace or not KUBE_NAME.match(namespace):
        raise UsageError("--namespace is required: a Kubernetes namespace name (lowercase)")
    if not image or any(c.isspace() for c in image):
        raise UsageError("--image is required: the runner image (terraform, sh and tar in it)")
    if service_account is not None and not KUBE_NAME.match(service_account):
        raise UsageError(f"invalid --service-account {service_account!r}")
    if not 1 <= slots_per_pod <= 64:
        raise UsageError("--slots-per-pod must be between 1 and 64")
    if min_pods < 0 or max_pods < 1 or min_pods > max_pods or max_pods > 10000:
        raise UsageError("--min-pods and --max-pods: 0 <= min <= max, 1 <= max <= 10000")
    if work_root is not None and (not work_root.startswith("/") or work_root.rstrip("/") in ("", "/")
                                  or any(c.isspace() or c in "'\"\\$`" for c in work_root)):
        raise UsageError(f"--work-root must be an absolute path inside the pod (not /), got {work_root!r}")
    if on_lost_context not in ON_LOST_CONTEXT:
        raise UsageError(f"--on-lost-context must be replan or warmup, not {on_lost_context!r}")
    if warmup_retries is not None and not 1 <= warmup_retries <= 100:
        raise UsageError("--warmup-retries must be between 1 and 100")
    resources: dict[str, dict[str, str]] = {}
    for flag, key, value in (("--cpu", "cpu", cpu), ("--memory", "memory", memory)):
        if value is None:
            continue
        if not _QUANTITY.match(value):
            raise UsageError(f"invalid {flag} {value!r}: a Kubernetes quantity such as 500m or 2Gi")
        resources.setdefault("requests", {})[key] = value
        resources.setdefault("limits", {})[key] = value
    delay = parse_duration(scale_down_delay)
    lifetime = parse_duration(warmup_lifetime) if warmup_lifetime else None
    check_context(context)
    from iacctl.runtimes.kubernetes import KubeSpec

    spec = KubeSpec(namespace=namespace, image=image, context=context, service_account=service_account,
                    resources=resources)
    try:
        with app.store.write() as session:
            if repo.find_pool(session, name) is not None:
                raise UsageError(f"pool {name!r} already exists")
            pool = Pool(name=name, backend=backend, slots_per_pod=slots_per_pod, min_pods=min_pods,
                        max_pods=max_pods, scale_down_delay_s=delay, on_lost_context=on_lost_context,
                        work_root=work_root.rstrip("/") if work_root else None, spec_json=spec.to_json(),
                        created_at=repo.now())
            if lifetime is not None:
                pool.warmup_lifetime_s = lifetime
            if warmup_retries is not None:
                pool.warmup_retry_limit = warmup_retries
            session.add(pool)
    except IntegrityError:
        raise UsageError(f"pool {name!r} already exists") from None
    return pool_view(app, name)


def check_context(context: str | None) -> None:
    """Issue 9: a named kube context must exist in the kubeconfig now, not at the first plan."""
    if context is None:
        return
    from iacctl.runtimes.base import RuntimeError_
    from iacctl.runtimes.kubernetes import kube_contexts

    try:
        known = kube_contexts()
    except RuntimeError_ as exc:
        raise UsageError(f"--context {context}: {exc}") from None
    if known is None:
        raise UsageError(f"--context {context}: there is no kubeconfig (set KUBECONFIG or write ~/.kube/config)")
    if context not in known:
        names = ", ".join(known) or "none"
        raise UsageError(f"kube context {context!r} is not in the kubeconfig (its contexts: {names})"
                         + did_you_mean(context, known))


def delete_pool(app: App, name: str) -> dict[str, Any]:
    """Issue 9: remove a pool; refused (exit 5) while workspaces use it or it has pods."""
    with app.store.write() as session:
        pool = repo.get_pool(session, name)
        if pool.backend == "local":
            raise Refused("the local pool is this machine; it cannot be deleted")
        users = session.exec(select(Workspace.name).where(Workspace.pool_id == pool.id)
                             .order_by(col(Workspace.name))).all()
        if users:
            raise Refused(f"pool {name} is used by workspace(s) {', '.join(users)}; move or delete them first")
        pods = session.exec(select(Pod.name).where(Pod.pool_id == pool.id).order_by(col(Pod.name))).all()
        if pods:
            raise Refused(f"pool {name} still has {len(pods)} pod(s) ({', '.join(pods[:3])}"
                          f"{', ...' if len(pods) > 3 else ''}); with no workspaces and --min-pods 0 its idle pods "
                          f"go once the scale-down delay has passed: iacctl pool set {name} --min-pods 0, then "
                          f"iacctl pods reconcile --pool {name}")
        repo.delete_pool(session, pool.id or 0)
    return {"name": name, "deleted": True}


def windows_of(session: Session, pool_id: int) -> list[FreezeWindow]:
    return list(session.exec(
        select(FreezeWindow).where(FreezeWindow.pool_id == pool_id).order_by(col(FreezeWindow.starts_at))
    ).all())


def freeze(app: App, name: str, starts: str, ends: str, reason: str | None) -> dict[str, Any]:
    starts_at = parse_instant(starts, "--from")
    ends_at = parse_instant(ends, "--until")
    check_window(starts_at, ends_at)
    if ends_at <= repo.now():
        raise UsageError(f"the window ends in the past ({format_instant(ends_at)})")
    with app.store.write() as session:
        pool = repo.get_pool(session, name)
        if pool.backend != "kubernetes":
            raise UsageError(f"pool {name} is a {pool.backend} pool; freeze windows apply to kubernetes pools")
        window = FreezeWindow(pool_id=pool.id or 0, starts_at=starts_at, ends_at=ends_at, reason=reason,
                              created_at=repo.now())
        session.add(window)
        session.flush()
    return {"pool": name, "id": window.id, "from": format_instant(starts_at), "until": format_instant(ends_at),
            "reason": reason}


def unfreeze(app: App, name: str, window_id: int | None) -> dict[str, Any]:
    """Remove a freeze window (the given one, else every window not yet over)."""
    with app.store.write() as session:
        pool = repo.get_pool(session, name)
        windows = windows_of(session, pool.id or 0)
        if window_id is None:
            windows = [w for w in windows if w.ends_at > repo.now()]
        else:
            windows = [w for w in windows if w.id == window_id]
            if not windows:
                raise NotFound(f"pool {name} has no freeze window {window_id}")
        if not windows:
            raise Refused(f"pool {name} has no freeze window to remove")
        for w in windows:
            session.delete(w)
    return pool_view(app, name)


def pool_row_view(session: Session, pool: Pool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "name": pool.name, "backend": pool.backend, "slots_per_pod": pool.slots_per_pod,
        "min_pods": pool.min_pods, "max_pods": pool.max_pods,
        "plan_lifetime": format_duration(pool.plan_lifetime_s),
        "scale_down_delay": format_duration(pool.scale_down_delay_s),
        "on_lost_context": pool.on_lost_context,
    }
    if pool.backend == "kubernetes":
        spec = json.loads(pool.spec_json or "{}")
        view.update({
            "namespace": spec.get("namespace"), "image": spec.get("image"), "context": spec.get("context"),
            "service_account": spec.get("service_account"), "resources": spec.get("resources") or {},
            "work_root": pool.work_root or "/var/lib/iacctl",
            "warmup_lifetime": format_duration(pool.warmup_lifetime_s),
            "warmup_retry_limit": pool.warmup_retry_limit,
        })
        windows = windows_of(session, pool.id or 0)
        view["frozen"] = repo.frozen_now(session, pool.id or 0) is not None
        view["freeze_windows"] = [
            {"id": w.id, "from": format_instant(w.starts_at), "until": format_instant(w.ends_at),
             "reason": w.reason} for w in windows
        ]
    return view


def list_pools(app: App) -> list[dict[str, Any]]:
    with app.store.read() as session:
        return [pool_row_view(session, p) for p in session.exec(select(Pool).order_by(col(Pool.name))).all()]


def show_pool(app: App, name: str) -> dict[str, Any]:
    with app.store.read() as session:
        return pool_row_view(session, repo.get_pool(session, name))


def pool_view(app: App, name: str) -> dict[str, Any]:
    return show_pool(app, name)
