"""`iacctl notify ...` and `iacctl outbox ...` (SPEC F1, F3, X1, X2): notification destinations
compatible with HCP Terraform's notification configurations, their delivery log, and the outbox
that holds every follow-up until it is delivered, dead or dismissed.

Creating or enabling a destination, and `notify verify`, send HCP Terraform's verification
payload (a Slack message for Slack) and need a 2xx before anything is saved. Tokens and Slack URLs
are stored encrypted and never shown.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from iacctl.domain.names import check_name
from iacctl.domain.notifications import Event, parse_events
from iacctl.errors import IacctlError, Refused, UsageError
from iacctl.notify import payload, sender
from iacctl.services.app import App
from iacctl.services.inputs import check_url, read_secret_file
from iacctl.services.views import iso
from iacctl.store import repo
from iacctl.store.models import Delivery, NotificationDestination, OutboxEntry, Workspace

KINDS = ("generic", "slack")
# HCP Terraform allows 20 notification configurations per workspace; so does iacctl.
MAX_PER_WORKSPACE = 20
MASK = "********"


class VerificationFailed(IacctlError):
    """F3: the destination did not answer the verification request with a 2xx."""


def _masked_url(destination: NotificationDestination) -> str:
    """X2: a Slack webhook URL is its own secret (whoever has it can post): never shown."""
    if destination.kind != "slack":
        return destination.url or ""
    return f"(hidden: a Slack webhook URL is a secret) {MASK}"


def destination_view(d: NotificationDestination, workspace: str | None) -> dict[str, Any]:
    return {
        "name": d.name,
        "type": d.kind,
        "url": _masked_url(d),
        "token": MASK if d.token_secret else None,  # X2: whether there is one, never the token
        "events": d.events.split(","),
        "workspace": workspace,
        "enabled": d.enabled,
        "verified_at": iso(d.verified_at),
        "created_at": iso(d.created_at),
    }


def _workspace_names(app: App) -> dict[int, str]:
    with app.store.read() as session:
        return {w.id or 0: w.name for w in session.exec(select(Workspace)).all()}


def _verify(app: App, *, name: str, destination_id: int | None, kind: str, url: str, token: bytes | None) -> None:
    """F3: HCP's verification payload (Slack: a message saying notifications will arrive), 2xx
    or nothing is saved. The attempt goes into the delivery log."""
    if kind == "slack":
        body = payload.encode(payload.slack_verification(name))
        headers: dict[str, str] = {}
    else:
        body = payload.encode(payload.verification_payload(destination_id, name))
        headers = {payload.SIGNATURE_HEADER: payload.sign(body, token)} if token else {}
    attempt = sender.post(url, body, headers)
    ok = attempt.http_status is not None and 200 <= attempt.http_status < 300
    with app.store.write() as session:
        repo.add_delivery(session, Delivery(
            destination_id=destination_id, destination_name=name, event="verification", attempt=1, at=repo.now(),
            duration_ms=round(attempt.duration_s * 1000, 1), http_status=attempt.http_status, error=attempt.error,
            response_excerpt=attempt.excerpt, result="verified" if ok else "rejected"))
    if not ok:
        raise VerificationFailed(f"the verification request to {name} failed: {attempt.error}; it must be answered "
                                 "2xx")


def create(app: App, name: str, *, url: str, kind: str, token_file: str | None, events: str,
           workspace: str | None) -> dict[str, Any]:
    check_name("notification destination", name)
    if kind not in KINDS:
        raise UsageError(f"invalid --type {kind!r}: use generic or slack")
    check_url(url, "destination URL")
    try:
        chosen = parse_events(events)
    except ValueError as exc:
        raise UsageError(f"--events: {exc}") from None
    if kind == "slack" and token_file:
        raise UsageError("a Slack destination takes no --token-file: Slack does not check signatures")
    token = read_secret_file(token_file, "token") if token_file else None
    with app.store.read() as session:
        ws = repo.get_workspace(session, workspace) if workspace else None
        if repo.find_destination(session, name) is not None:
            raise UsageError(f"notification destination {name!r} already exists")
        if ws is not None and repo.count_destinations_of_workspace(session, ws.id or 0) >= MAX_PER_WORKSPACE:
            raise Refused(f"workspace {ws.name} has {MAX_PER_WORKSPACE} notification destinations already")
    cipher = app.store.cipher
    t = repo.now()
    # Saved disabled first, so that the verification request carries its id as HCP's does; it is
    # removed again unless the receiver answers 2xx (nothing is left of a refused destination).
    try:
        with app.store.write() as session:
            d = NotificationDestination(
                name=name, kind=kind, url=url if kind == "generic" else None,
                url_secret=cipher.encrypt_text(url) if kind == "slack" else None,
                token_secret=cipher.encrypt(token) if token else None,
                events=",".join(e.value for e in chosen), workspace_id=ws.id if ws else None, enabled=False,
                created_at=t, updated_at=t)
            session.add(d)
            session.flush()
            destination_id = d.id
    except IntegrityError:
        raise UsageError(f"notification destination {name!r} already exists") from None
    try:
        _verify(app, name=name, destination_id=destination_id, kind=kind, url=url, token=token)
    except BaseException:
        with app.store.write() as session:
            repo.forget_destination(session, destination_id or 0)
        raise
    with app.store.write() as session:
        d = repo.get_destination(session, name)
        d.enabled, d.verified_at = True, repo.now()
        session.add(d)
    return show(app, name)


def show(app: App, name: str) -> dict[str, Any]:
    with app.store.read() as session:
        d = repo.get_destination(session, name)
        ws = repo.workspace_by_id(session, d.workspace_id).name if d.workspace_id else None
    return destination_view(d, ws)


def list_destinations(app: App) -> list[dict[str, Any]]:
    names = _workspace_names(app)
    with app.store.read() as session:
        rows = repo.destinations(session)
    return [destination_view(d, names.get(d.workspace_id) if d.workspace_id else None) for d in rows]


def delete(app: App, name: str) -> int:
    with app.store.write() as session:
        d = repo.get_destination(session, name)
        dismissed = repo.dismiss_pending_entries(session, d.id or 0, f"destination {name} was deleted")
        session.delete(d)
    return dismissed


def set_enabled(app: App, name: str, enabled: bool) -> tuple[dict[str, Any], int]:
    """Enabling verifies first (F3, as HCP does); disabling dismisses what waits to be sent."""
    with app.store.read() as session:
        d = repo.get_destination(session, name)
    if enabled:
        verify(app, name)
    with app.store.write() as session:
        d = repo.get_destination(session, name)
        d.enabled, d.updated_at = enabled, repo.now()
        session.add(d)
        why = f"destination {name} was disabled"
        dismissed = 0 if enabled else repo.dismiss_pending_entries(session, d.id or 0, why)
    return show(app, name), dismissed


def verify(app: App, name: str) -> dict[str, Any]:
    with app.store.read() as session:
        d = repo.get_destination(session, name)
    cipher = app.store.cipher
    url = cipher.decrypt_text(d.url_secret) if d.url_secret else (d.url or "")
    token = cipher.decrypt(d.token_secret) if d.token_secret else None
    _verify(app, name=d.name, destination_id=d.id, kind=d.kind, url=url, token=token)
    with app.store.write() as session:
        current = repo.get_destination(session, name)
        current.verified_at = repo.now()
        session.add(current)
    return show(app, name)


def delivery_view(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "at": iso(d.at),
        "destination": d.destination_name,
        "event": d.event,
        "task": d.task_id,
        "outbox_entry": d.outbox_id,
        "attempt": d.attempt,
        "result": d.result,
        "http_status": d.http_status,
        "duration_ms": d.duration_ms,
        "error": d.error,
        "response": d.response_excerpt,
    }


def delivery_log(app: App, name: str | None, *, failed_only: bool) -> list[dict[str, Any]]:
    with app.store.read() as session:
        destination_id = repo.get_destination(session, name).id if name else None
        rows = repo.deliveries(session, destination_id=destination_id, failed_only=failed_only)
    return [delivery_view(d) for d in reversed(rows)]


# -- the outbox -----------------------------------------------------------------------------------

OUTBOX_STATUSES = ("pending", "delivering", "delivered", "dead", "dismissed")
OUTBOX_KINDS = ("notification", *repo.LOCAL_KINDS)


def entry_view(e: OutboxEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "kind": e.kind,
        "destination": e.destination_name,
        "task": e.task_id,
        "event": e.event,
        "status": e.status,
        "attempts": e.attempts,
        "next_attempt_at": iso(e.next_attempt_at) if e.status == "pending" else None,
        "give_up_at": iso(e.give_up_at) if e.status in ("pending", "delivering") else None,
        "delivered_at": iso(e.delivered_at),
        "last_http_status": e.last_http_status,
        "last_error": e.last_error,
        "key": e.key,
        "created_at": iso(e.created_at),
    }


def outbox_list(app: App, status: str | None, kind: str | None = None) -> list[dict[str, Any]]:
    if status is not None and status not in OUTBOX_STATUSES:
        raise UsageError(f"invalid --status {status!r}: use one of {', '.join(OUTBOX_STATUSES)}")
    if kind is not None and kind not in OUTBOX_KINDS:
        raise UsageError(f"invalid --kind {kind!r}: use one of {', '.join(OUTBOX_KINDS)}")
    with app.store.read() as session:
        rows = repo.outbox_entries(session, statuses=[status] if status else None, kind=kind, limit=200)
    return [entry_view(e) for e in reversed(rows)]


def outbox_retry(app: App, entry_id: int) -> dict[str, Any]:
    """A dead (or dismissed, or waiting) entry is due now again, with a new day of retries."""
    with app.store.write() as session:
        e = repo.get_outbox_entry(session, entry_id)
        if e.status == "delivered":
            raise Refused(f"outbox entry {entry_id} was delivered already")
        if e.status == "delivering":
            raise Refused(f"outbox entry {entry_id} is being delivered right now")
        if e.kind == "notification" and (e.destination_id is None
                                         or session.get(NotificationDestination, e.destination_id) is None):
            raise Refused(f"outbox entry {entry_id}'s destination {e.destination_name} was deleted")
        repo.requeue_outbox_entry(session, e, repo.now())  # sent by this command, at once
    return outbox_show(app, entry_id)


def outbox_dismiss(app: App, entry_id: int) -> dict[str, Any]:
    with app.store.write() as session:
        e = repo.get_outbox_entry(session, entry_id)
        if e.status in ("delivered", "delivering"):
            raise Refused(f"outbox entry {entry_id} is {e.status}; only pending or dead entries can be dismissed")
        e.status, e.updated_at = "dismissed", repo.now()
        e.last_error = (e.last_error + "; " if e.last_error else "") + "dismissed by user"
        session.add(e)
    return outbox_show(app, entry_id)


def outbox_show(app: App, entry_id: int) -> dict[str, Any]:
    with app.store.read() as session:
        return entry_view(repo.get_outbox_entry(session, entry_id))


def known_events() -> list[str]:
    return [e.value for e in Event]
