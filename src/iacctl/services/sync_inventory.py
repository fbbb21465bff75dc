"""Syncing the inventory (SPEC F2, F1; seed 002 H6): the outbox entry an apply wrote becomes the
workspace's inventory rows, and, when an inventory URL is configured, a signed POST of them.

A sync takes the workspace's `syncing` status with a compare-and-set, recording its process and
start time; reads the state version (decrypted here only, X1), keeps each resource's identity and
`id` attribute and nothing else (X2); POSTs the records when a URL is set; then writes the rows,
marks the entry done and goes back to `idle` in one transaction. A sync applies only a state
serial newer than the last one synced. A process killed in the middle leaves `syncing` behind:
the sweep resets it when its process is gone or after SYNC_TIMEOUT_S (H6), and the entry, whose
claimer is gone, is handled again.

Uses the store only, never the App (the outbox, below the App, calls it).
"""

from __future__ import annotations

import json
import random
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from iacctl.crypto import Cipher
from iacctl.domain.inventory import Resource, diff, newer, resources_of_state
from iacctl.domain.notifications import Outcome, next_attempt_at, outcome_of
from iacctl.notify import payload, sender
from iacctl.runtimes import local
from iacctl.services.follow_ups import ClaimLost, Handled
from iacctl.store import repo
from iacctl.store.db import Store
from iacctl.store.models import (
    InventoryEndpoint,
    InventoryResource,
    InventorySync,
    OutboxEntry,
    StateVersion,
    Workspace,
)

# H6: far longer than a sync takes (a POST gives up after 15 s), so a live sync is never reset.
SYNC_TIMEOUT_S = 600.0
# Another sync of the same workspace is under way: this one is tried again soon.
BUSY_RETRY_S = 5.0
PAYLOAD_KIND = "inventory"


def stuck(row: InventorySync, at: float) -> str | None:
    """H6: why a `syncing` status is left behind (its process is gone, or it is past the
    timeout), or None while it may still be under way."""
    if row.status != "syncing":
        return None
    if local.process_alive(row.sync_host, row.sync_pid, row.sync_start) is False:
        return f"its process ({row.sync_host} pid {row.sync_pid}) is gone"
    if row.sync_started_at is not None and at - row.sync_started_at > SYNC_TIMEOUT_S:
        return f"it has been syncing for more than {SYNC_TIMEOUT_S:g} s"
    return None


def _settle(session: Session, entry: OutboxEntry, token: str, **values: Any) -> None:
    if not repo.settle_outbox_entry(session, entry.id or 0, token, attempts=entry.attempts + 1,
                                    last_http_status=values.pop("last_http_status", None), **values):
        raise ClaimLost


def _release(session: Session, workspace_id: int, mine: tuple[str, int, float | None], **values: Any) -> bool:
    """syncing -> idle, only when the sync is still this process's (the sweep may have reset it)."""
    host, pid, _start = mine
    result = session.execute(
        update(InventorySync)
        .where(col(InventorySync.workspace_id) == workspace_id, col(InventorySync.status) == "syncing",
               col(InventorySync.sync_host) == host, col(InventorySync.sync_pid) == pid)
        .values(status="idle", syncing_serial=None, sync_started_at=None, sync_host=None, sync_pid=None,
                sync_start=None, updated_at=repo.now(), **values)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def records(workspace: str, workspace_id: int, task_id: int | None, serial: int, lineage: str | None,
            resources: list[Resource], removed: list[str], at: float) -> bytes:
    """The body POSTed to the inventory URL: compact JSON, signed over these exact bytes."""
    return payload.encode({
        "payload_version": 1, "kind": PAYLOAD_KIND, "workspace_name": workspace, "workspace_id": f"ws-{workspace_id}",
        "task_id": task_id, "serial": serial, "lineage": lineage, "synced_at": payload.iso8601(at),
        "resources": [r.as_dict() for r in resources], "removed": removed,
    })


def handle(store: Store, entry: OutboxEntry, token: str) -> Handled:
    facts = json.loads(entry.facts_json)
    mine = local.this_process()
    ws_id = entry.workspace_id or 0
    try:
        with store.write() as session:
            at = repo.now()
            ws = session.get(Workspace, ws_id)
            if ws is None:
                why = "its workspace was deleted"
                _settle(session, entry, token, status="dismissed", last_error=why)
                return Handled("dismissed", why)
            version = session.get(StateVersion, facts["state_version_id"]) if facts.get("state_version_id") else None
            if version is None or version.workspace_id != ws_id:
                version = repo.latest_state_version(session, ws_id)
            if version is None:
                why = f"workspace {ws.name} has no state version to sync"
                _settle(session, entry, token, status="dismissed", last_error=why)
                return Handled("dismissed", why)
            sync = repo.inventory_sync_row(session, ws_id)
            if not newer(version.serial, sync.synced_serial):
                why = (f"state serial {version.serial} is not newer than the last synced one ({sync.synced_serial}): "
                       "not applied")
                _settle(session, entry, token, status="dismissed", last_error=why)
                return Handled("dismissed", why)
            if sync.status == "syncing":
                why = f"another inventory sync of workspace {ws.name} is under way"
                nxt = at + BUSY_RETRY_S
                _settle(session, entry, token, status="pending", next_attempt_at=nxt, last_error=why)
                return Handled("retry", why, nxt)
            taken = session.execute(
                update(InventorySync).where(col(InventorySync.id) == sync.id, col(InventorySync.status) == "idle")
                .values(status="syncing", syncing_serial=version.serial, sync_started_at=at, sync_host=mine[0],
                        sync_pid=mine[1], sync_start=mine[2], updated_at=at)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                raise ClaimLost
            present = [str(a) for a in session.execute(
                select(InventoryResource.address).where(col(InventoryResource.workspace_id) == ws_id,
                                                        col(InventoryResource.removed_at).is_(None))).scalars()]
            endpoint = session.exec(select(InventoryEndpoint).order_by(col(InventoryEndpoint.id))).first()
            name, serial, blob = ws.name, version.serial, version.data_secret
    except ClaimLost:
        return Handled("late", "its claim ended before it was handled; the next claimer handles it")

    try:
        state = json.loads(store.cipher.decrypt(blob))
        in_state = resources_of_state(state)
    except Exception as exc:
        # A state that cannot be read will not be readable later either: said, never retried.
        why = f"state serial {serial} of workspace {name} cannot be read: {type(exc).__name__}"
        try:
            with store.write() as session:
                _release(session, ws_id, mine, last_error=why)
                _settle(session, entry, token, status="dead", last_error=why)
        except ClaimLost:
            return Handled("late", why)
        return Handled("dead", why)
    change = diff(present, in_state)
    if endpoint is not None:
        failure = _post(store, endpoint, records(name, ws_id, entry.task_id, serial, state.get("lineage"), in_state,
                                                 change.removed, repo.now()))
        if failure is not None:
            error, status = failure
            at = repo.now()
            again = next_attempt_at(entry.attempts + 1, at, random.uniform(-1.0, 1.0), None)
            try:
                with store.write() as session:
                    _release(session, ws_id, mine, last_error=f"inventory URL: {error}")
                    if again > entry.give_up_at:
                        _settle(session, entry, token, status="dead", last_http_status=status,
                                last_error=f"inventory URL: {error}; gave up")
                        return Handled("dead", f"inventory URL: {error}; gave up")
                    _settle(session, entry, token, status="pending", next_attempt_at=again, last_http_status=status,
                            last_error=f"inventory URL: {error}")
            except ClaimLost:
                return Handled("late", f"inventory URL: {error}; recorded after its claim had ended")
            return Handled("retry", f"inventory URL: {error}; next attempt in {max(0, round(again - at))}s", again)
    try:
        with store.write() as session:
            at = repo.now()
            _write_rows(session, store.cipher, ws_id, serial, change.added, change.kept, change.removed, at)
            if not _release(session, ws_id, mine, synced_serial=serial, synced_at=at, last_error=None):
                raise ClaimLost  # the sweep took it for stuck: a new sync does it
            _settle(session, entry, token, status="delivered", delivered_at=at, last_error=None)
    except ClaimLost:
        return Handled("late", "its sync was reset before it finished; the next sync does it")
    return Handled("delivered", f"workspace {name} serial {serial}: {len(change.added)} added, "
                                f"{len(change.kept)} kept, {len(change.removed)} removed")


def _post(store: Store, endpoint: InventoryEndpoint, body: bytes) -> tuple[str, int | None] | None:
    headers = {}
    if endpoint.hmac_key_secret:
        headers[payload.SIGNATURE_HEADER] = payload.sign(body, store.cipher.decrypt(endpoint.hmac_key_secret))
    attempt = sender.post(endpoint.url, body, headers)
    if outcome_of(attempt.http_status) == Outcome.DELIVERED:
        return None
    return attempt.error or f"HTTP {attempt.http_status}", attempt.http_status


def _write_rows(session: Session, cipher: Cipher, workspace_id: int, serial: int, added: list[Resource],
               kept: list[Resource], removed: list[str], at: float) -> None:
    rows = {r.address: r for r in session.exec(
        select(InventoryResource).where(InventoryResource.workspace_id == workspace_id)).all()}
    for res in added + kept:
        row = rows.get(res.address)
        if row is None:
            row = InventoryResource(workspace_id=workspace_id, address=res.address, mode=res.mode, type=res.type,
                                    name=res.name, serial=serial, first_seen=at, last_seen=at)
        elif row.removed_at is not None:
            row.first_seen, row.removed_at = at, None  # back after a removal: a new object
        row.module, row.mode, row.type, row.name = res.module, res.mode, res.type, res.name
        row.index_key, row.provider = res.index, res.provider
        row.resource_id_secret = cipher.encrypt_text(res.resource_id) if res.resource_id is not None else None
        row.serial, row.last_seen = serial, at
        session.add(row)
    for address in removed:
        row = rows.get(address)
        if row is not None:
            row.removed_at = at
            session.add(row)
