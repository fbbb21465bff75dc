"""State versions (SPEC E8): listing, pulling, and storing the state an apply left behind."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from iacctl.domain.lifecycle import Status
from iacctl.errors import NotFound, Refused, StoreError
from iacctl.executor.termination import add_state_version, kept_state_path, state_serial
from iacctl.services.app import App
from iacctl.services.views import iso
from iacctl.store import repo
from iacctl.store.models import StateVersion


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
