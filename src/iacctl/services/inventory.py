"""`iacctl inventory list` and `iacctl inventory endpoint set|show|remove` (SPEC F2): the
resources the workspaces' states hold, as the syncs after each apply recorded them
(services.sync_inventory), and the URL they are also POSTed to."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from iacctl.crypto import Cipher
from iacctl.errors import NotFound
from iacctl.services.app import App
from iacctl.services.inputs import check_url, read_secret_file
from iacctl.services.views import iso
from iacctl.store import repo
from iacctl.store.models import InventoryEndpoint, InventoryResource, InventorySync

MASK = "********"


def _view(r: InventoryResource, workspace: str, cipher: Cipher) -> dict[str, Any]:
    resource_id = cipher.decrypt_text(r.resource_id_secret) if r.resource_id_secret is not None else None
    return {"workspace": workspace, "address": r.address, "module": r.module, "type": r.type, "name": r.name,
            "index": r.index_key, "provider": r.provider, "mode": r.mode, "id": resource_id, "serial": r.serial,
            "first_seen": iso(r.first_seen), "last_seen": iso(r.last_seen), "removed_at": iso(r.removed_at)}


def list_resources(app: App, workspace: str | None, *, rtype: str | None,
                   include_removed: bool) -> list[dict[str, Any]]:
    with app.store.read() as session:
        ws_id = repo.get_workspace(session, workspace).id if workspace is not None else None
        rows = repo.inventory_rows(session, workspace_id=ws_id, rtype=rtype, include_removed=include_removed)
        return [_view(r, name, app.store.cipher) for r, name in rows]


def sync_status(app: App, workspace: str) -> dict[str, Any]:
    with app.store.read() as session:
        ws = repo.get_workspace(session, workspace)
        row = session.exec(select(InventorySync).where(InventorySync.workspace_id == ws.id)).first()
    if row is None:
        return {"workspace": workspace, "status": "never synced", "serial": None, "synced_at": None, "error": None}
    return {"workspace": workspace, "status": row.status, "serial": row.synced_serial, "synced_at": iso(row.synced_at),
            "syncing_serial": row.syncing_serial, "error": row.last_error}


def _endpoint_view(e: InventoryEndpoint | None) -> dict[str, Any] | None:
    if e is None:
        return None
    # X2: whether there is a key, never the key.
    return {"url": e.url, "hmac_key": MASK if e.hmac_key_secret else None, "updated_at": iso(e.updated_at)}


def set_endpoint(app: App, url: str, key_file: str | None) -> dict[str, Any] | None:
    checked = check_url(url, "inventory URL")
    key = read_secret_file(key_file, "HMAC key") if key_file else None
    with app.store.write() as session:
        t = repo.now()
        row = session.exec(select(InventoryEndpoint).order_by(col(InventoryEndpoint.id))).first()
        if row is None:
            row = InventoryEndpoint(url=checked, created_at=t, updated_at=t)
        row.url, row.updated_at = checked, t
        row.hmac_key_secret = app.store.cipher.encrypt(key) if key else None
        session.add(row)
        session.flush()
        return _endpoint_view(row)


def show_endpoint(app: App) -> dict[str, Any] | None:
    with app.store.read() as session:
        return _endpoint_view(session.exec(select(InventoryEndpoint).order_by(col(InventoryEndpoint.id))).first())


def remove_endpoint(app: App) -> None:
    with app.store.write() as session:
        rows = session.exec(select(InventoryEndpoint)).all()
        if not rows:
            raise NotFound("no inventory URL is set")
        for row in rows:
            session.delete(row)
