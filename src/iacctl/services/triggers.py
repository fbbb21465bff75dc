"""`iacctl workspace trigger add|list|remove` (SPEC F4): which workspaces a workspace follows.

Adding checks everything before writing (X4): both workspaces exist, it is not the workspace
itself, at most 20 sources, and no loop of any length (domain.triggers). The check and the
insert are one write transaction (SQLite's BEGIN IMMEDIATE serializes writers; on PostgreSQL an
advisory lock is taken before the edges are read), so two adds racing cannot close a loop
between them.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from iacctl.domain.actors import actor_view
from iacctl.domain.triggers import MAX_SOURCES, loop_closed_by
from iacctl.errors import NotFound, Refused, UsageError
from iacctl.services.app import App, current_actor
from iacctl.services.views import iso
from iacctl.store import repo
from iacctl.store.models import RunTrigger, Workspace


def _view(trigger: RunTrigger, workspace: str, source: str) -> dict[str, Any]:
    by = actor_view(trigger.created_by)
    return {"workspace": workspace, "source": source, "only_if_changed": trigger.only_if_changed,
            "created_at": iso(trigger.created_at), "created_by": by["display"] if by else None}


def add(app: App, name: str, source: str, *, only_if_changed: bool) -> dict[str, Any]:
    if name == source:
        raise UsageError(f"workspace {name} cannot follow itself: its apply would queue its own plan, forever")
    actor = current_actor()
    with app.store.write() as session:
        ws = repo.get_workspace(session, name)
        src = repo.get_workspace(session, source)
        repo.lock_trigger_graph(session)
        existing = repo.find_trigger(session, ws.id or 0, src.id or 0)
        if existing is not None:
            # Idempotent, so a script can run it again; the flag is what it says now.
            existing.only_if_changed = only_if_changed
            session.add(existing)
            return {**_view(existing, name, source), "added": False}
        count = len(repo.sources_of(session, ws.id or 0))
        if count >= MAX_SOURCES:
            raise Refused(f"workspace {name} already follows {count} workspaces, the most it may (remove one with: "
                          f"iacctl workspace trigger remove {name} --source WORKSPACE)")
        loop = loop_closed_by(repo.trigger_edges(session), source, name)
        if loop is not None:
            raise Refused(f"workspace {name} cannot follow {source}: that would close a loop of run triggers "
                          f"({' -> '.join(loop)}), and each apply would queue the next plan forever")
        trigger = RunTrigger(workspace_id=ws.id or 0, source_workspace_id=src.id or 0, only_if_changed=only_if_changed,
                             created_at=repo.now(), created_by=actor.to_json())
        session.add(trigger)
        session.flush()
        return {**_view(trigger, name, source), "added": True}


def _rows(session: Session, ws: Workspace) -> list[dict[str, Any]]:
    return [_view(t, ws.name, source) for t, source in repo.sources_of(session, ws.id or 0)]


def list_sources(app: App, name: str) -> list[dict[str, Any]]:
    """The workspaces the workspace follows."""
    with app.store.read() as session:
        return _rows(session, repo.get_workspace(session, name))



def remove(app: App, name: str, source: str) -> dict[str, Any]:
    with app.store.write() as session:
        ws = repo.get_workspace(session, name)
        src = repo.get_workspace(session, source)
        trigger = repo.find_trigger(session, ws.id or 0, src.id or 0)
        if trigger is None:
            raise NotFound(f"workspace {name} does not follow {source}")
        view = _view(trigger, name, source)
        session.delete(trigger)
    return view
