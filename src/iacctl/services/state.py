"""State versions (SPEC E8): listing, pulling, and storing the state an apply left behind."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from iacctl.domain.lifecycle import Status
from iacctl.errors import IacctlError, NotFound, Refused, StoreError
from iacctl.executor.termination import add_state_version, kept_state_path, state_serial, whole_state
from iacctl.runtimes.base import RuntimeError_
from iacctl.services import ending
from iacctl.services.app import App
from iacctl.services.views import iso
from iacctl.store import repo
from iacctl.store.models import Pod, StateVersion


def _view(v: StateVersion) -> dict[str, Any]:
    return {"id": v.id, "serial": v.serial, "sha256": v.sha256, "size": v.size,
            "partial": v.partial, "task": v.task_id, "created_at": iso(v.created_at)}


def versions(app: App, workspace: str) -> list[dict[str, Any]]:
    with app.store.read() as session:
        ws = repo.get_workspace(session, workspace)
        rows = session.exec(
            select(StateVersion).where(StateVersion.workspace_id == ws.id).order_by(col(StateVersion.id))
        ).all()
        return [_view(v) for v in rows]


def pull(app: App, workspace: str, version_id: int | None) -> bytes:
    with app.store.read() as session:
        ws = repo.get_workspace(session, workspace)
        if version_id is None:
            version = repo.latest_state_version(session, ws.id or 0)
            if version is None:
                raise NotFound(f"workspace {workspace} has no state yet")
        else:
            version = session.get(StateVersion, version_id)
            if version is None or version.workspace_id != ws.id:
                raise NotFound(f"workspace {workspace} has no state version {version_id}")
    return app.store.cipher.decrypt(version.data_secret)


def save_applied(app: App, task_id: int) -> dict[str, Any]:
    """E8: store the state an applied_state_error task left, then end it applied and unlock."""
    with app.store.read() as session:
        task = repo.get_task(session, task_id)
    if task.status != Status.APPLIED_STATE_ERROR:
        raise Refused(f"task {task_id} is {task.status}, not applied_state_error")
    kept = kept_state_path(app.settings.work_root, task_id)
    try:
        data = kept.read_bytes()
    except OSError:
        raise StoreError(f"the kept state file {kept} cannot be read") from None
    try:
        state_serial(data)
    except ValueError:
        raise StoreError(f"the kept state file {kept} is not a Terraform state") from None
    with app.store.write() as session:
        version = add_state_version(session, app.store, task.workspace_id, task_id, data, partial=False)
        repo.transition(session, task_id, Status.APPLIED_STATE_ERROR, Status.APPLIED,
                        f"state re-saved as version {version.id}", state_version_id=version.id,
                        error=None)
        result = _view(version)
    kept.unlink(missing_ok=True)
    return result


def save_partial(app: App, task_id: int) -> dict[str, Any]:
    """Issue 13 item 6: store the state of an apply that stopped part-way and whose state could
    not be read whole then (a full disk, a killed Terraform), from the work directory kept for
    it, once there is room; then unlock the workspace and remove the kept directory."""
    with app.store.read() as session:
        task = repo.get_task(session, task_id)
    if ending.left_here(task):
        # Issue 18 item 3: another machine ended it while its Terraform ran here: stop what is
        # left of it and keep its work directory first (the sweep here does the same).
        ending.settle_left_here(app, task_id)
    with app.store.read() as session:
        task = repo.get_task(session, task_id)
        ws = repo.workspace_by_id(session, task.workspace_id)
        pod = session.get(Pod, task.pod_id) if task.pod_id is not None else None
    if task.status not in (Status.FAILED, Status.CANCELLED, Status.APPLIED_STATE_ERROR):
        raise Refused(f"task {task_id} is {task.status}, not failed, cancelled or applied_state_error")
    if ws.locked_by_task_id != task_id:
        raise Refused(f"workspace {ws.name} is not locked by task {task_id}: nothing to save")
    runtime = app.runtime_for_pool_id(task.pool_id or 0)
    pod_name = pod.name if pod is not None else ""
    try:
        data, _source = whole_state(lambda name: runtime.read_kept_file(pod_name, task_id, name), None)
    except ValueError as exc:
        raise IacctlError(f"task {task_id}'s kept state still cannot be read whole ({exc}); free space and try "
                          f"again, or push a state you trust and run: iacctl workspace unlock {ws.name}") from None
    except RuntimeError_ as exc:
        raise IacctlError(f"task {task_id}'s kept work directory cannot be read: {exc}") from None
    if data is None:
        raise IacctlError(f"task {task_id} has no kept state file; inspect the infrastructure, then run: "
                          f"iacctl workspace unlock {ws.name}")
    with app.store.write() as session:
        version = add_state_version(session, app.store, task.workspace_id, task_id, data, partial=True)
        repo.unlock_workspace(session, task.workspace_id, task_id=task_id)
        result = _view(version)
    runtime.remove_kept_dir(pod_name, task_id)
    return result
