"""Following run triggers (SPEC F4, F1): the outbox entry an apply of a source workspace wrote
becomes a queued plan of each workspace that follows it.

Everything one entry does (tasks queued or joined, notes on the source task, the entry marked
done) is one transaction, so a crash anywhere leaves either all of it or none, and the entry is
handled again by the sweep: a trigger never queues twice, never goes missing. The queued tasks
wait for a runner (services.queue.kick_queue, called by whoever handled the entry) and for a
confirmation: a triggered plan is never applied by itself.

Uses the store only, never the App (the outbox, below the App, calls it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlmodel import Session

from iacctl.crypto import Cipher
from iacctl.domain.actors import Actor, actor_view
from iacctl.domain.lifecycle import Status, TaskKind
from iacctl.domain.triggers import Source, beyond_hop_limit, describe, hop_limit_reason, merged, next_hop, task_hops
from iacctl.errors import IacctlError
from iacctl.executor.snapshot import archive_directory, store_snapshot
from iacctl.runtimes import local
from iacctl.services.follow_ups import ClaimLost, Handled
from iacctl.store import repo
from iacctl.store.db import Store
from iacctl.store.models import OutboxEntry, Task, Workspace


def sources_of_task(task: Task) -> list[Source]:
    if not task.trigger_sources:
        return []
    return [Source(int(s["task"]), str(s["workspace"]), int(s["hop"])) for s in json.loads(task.trigger_sources)]


def _actor(source: Task, workspace: str) -> str:
    """Issue 9, F4: a triggered task is created by the run trigger, on behalf of whoever applied
    its source (confirmed it, else created it)."""
    who = actor_view(source.confirmed_by) or actor_view(source.created_by) or {}
    user = str(who.get("user") or "iacctl")
    host = str(who.get("host") or local.hostname())
    return Actor(user=user, host=host, identity=f"run trigger of workspace {workspace}",
                 run=f"task {source.id}").to_json()


def _note(session: Session, task_id: int, text: str) -> None:
    repo.add_event(session, task_id, "note", None, None, text)


def _queue(session: Session, cipher: Cipher, source: Task, src: Source,
           follower: dict[str, Any]) -> tuple[int | None, str]:
    """Queue (or join) the follower's triggered plan; its id (None if nothing was queued) and
    what was done, in words."""
    name = str(follower["workspace"])
    ws = repo.lock_workspace_row(session, int(follower["workspace_id"]))
    if ws is None:
        return None, f"workspace {name} was deleted before its plan could be queued: nothing queued"
    waiting = repo.waiting_triggered_task(session, ws.id or 0)
    if waiting is not None:
        before = sources_of_task(waiting)
        after = merged(before, src)
        if after != before:
            repo.update_task(session, waiting.id or 0, trigger_sources=json.dumps([s.as_dict() for s in after]),
                             trigger_hops=task_hops(after))
            _note(session, waiting.id or 0, f"also follows the apply of workspace {src.workspace} (task {src.task}); "
                                            f"it follows {describe(after)}")
        return waiting.id, f"workspace {name}'s triggered plan, task {waiting.id}, not started yet, follows it too"
    t = repo.now()
    task = Task(workspace_id=ws.id or 0, kind=TaskKind.PLAN_AND_APPLY, status=Status.PENDING, created_at=t,
                updated_at=t, pool_id=ws.pool_id, created_by=_actor(source, src.workspace),
                trigger_sources=json.dumps([src.as_dict()]), trigger_hops=src.hop,
                config_snapshot_id=_snapshot_now(session, cipher, ws))
    session.add(task)
    session.flush()
    task_id = task.id or 0
    repo.add_event(session, task_id, "status", None, Status.PENDING,
                   f"plan_and_apply queued for workspace {name} by the run trigger of workspace {src.workspace} "
                   f"(task {src.task} applied); it waits for confirmation")
    repo.write_follow_ups(session, task_id, None, Status.PENDING)  # F3: `created`
    return task_id, f"queued task {task_id} in workspace {name}"


def _snapshot_now(session: Session, cipher: Cipher, ws: Workspace) -> int | None:
    """Issue 18 item 1, F4: the follower's configuration as it is when its plan is queued (as HCP
    Terraform queues a triggered run with the workspace's latest configuration), so that whichever
    machine runs the plan, and when, plans the same thing. None when its directory is not on this
    machine: the machine that runs the plan takes it then."""
    try:
        data, digest = archive_directory(Path(ws.source_dir))
    except IacctlError:
        return None
    return store_snapshot(session, cipher, ws.id or 0, data, digest).id


def handle(store: Store, entry: OutboxEntry, token: str) -> Handled:
    facts = json.loads(entry.facts_json)
    try:
        with store.write() as session:
            source = session.get(Task, entry.task_id) if entry.task_id is not None else None
            done: dict[str, Any] = {"attempts": entry.attempts + 1, "last_http_status": None}
            if source is None:
                why = "its source task is gone (its workspace was deleted)"
                if not repo.settle_outbox_entry(session, entry.id or 0, token, status="dismissed", last_error=why,
                                                **done):
                    raise ClaimLost
                return Handled("dismissed", why)
            hop = next_hop(facts.get("hops"))
            src = Source(source.id or 0, str(facts["source_workspace"]), hop)
            said: list[str] = []
            queued: list[int] = []
            if beyond_hop_limit(hop):
                reason = hop_limit_reason(src.workspace, src.task, hop)
                _note(session, src.task, reason)
                said.append(reason)
            else:
                for follower in facts["followers"]:
                    if follower["only_if_changed"] and not facts["changed"]:
                        text = (f"run trigger to workspace {follower['workspace']} skipped: it follows only applies "
                                "that change resources or outputs, and this one changed none")
                        _note(session, src.task, text)
                        said.append(text)
                        continue
                    task_id, text = _queue(session, store.cipher, source, src, follower)
                    _note(session, src.task, f"run trigger: {text}")
                    said.append(text)
                    if task_id is not None:
                        queued.append(task_id)
            detail = "; ".join(said) or "no workspace follows it any more"
            if not repo.settle_outbox_entry(session, entry.id or 0, token, status="delivered",
                                            delivered_at=repo.now(), last_error=None, **done):
                raise ClaimLost
    except ClaimLost:
        return Handled("late", "its claim ended before it was handled; the next claimer handles it")
    return Handled("delivered", detail, queued=tuple(queued))
