"""Looking at tasks: list, show (with history, L7, who acted and stage times), logs (E4), the
saved plan for review (issue 9), and the values shell completion offers."""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, select
from sqlmodel import col

from iacctl.domain.actors import actor_view
from iacctl.domain.lifecycle import Status, is_terminal
from iacctl.domain.plans import ChangeCounts, ResourceChange, masked, redact_plan, resource_changes, resource_drift
from iacctl.domain.review import Review, RunTaskOutcome, plan_text
from iacctl.domain.timeline import Event, stage_times
from iacctl.errors import EXIT_CHANGES, EXIT_FAILED, EXIT_OK, Refused, TaskCancelled, TaskFailed, UsageError
from iacctl.services.app import App
from iacctl.services.views import iso
from iacctl.store import repo
from iacctl.store.models import Pod, Pool, Slot, Task, TaskEvent, TaskLog, Workspace

_COLUMNS: tuple[Any, ...] = tuple(col(c) for c in (
    Task.id, Task.kind, Task.status, Task.stage, Task.error, Task.created_at, Task.started_at,
    Task.finished_at, Task.plan_hash, Task.planned_at, Task.has_changes, Task.add_count,
    Task.change_count, Task.destroy_count, Task.replace_count, Task.output_count, Task.apply_path,
    Task.state_version_id, Task.confirmed_at, Task.replans, Task.cancel_requested_at,
    Task.slot_id, Task.plan_slot_id, Task.warmup_status, Task.warmup_attempts, Task.warmup_expires_at,
    Task.warmup_error, Task.move_count,
))


def _row_view(row: Any) -> dict[str, Any]:
    # Positional unpacking of the row: attribute access per field is slow for big listings.
    (task_id, kind, status, stage, error, created_at, started_at, finished_at, plan_hash, planned_at,
     has_changes, add, change, destroy, replace, outputs, apply_path, state_version_id, confirmed_at,
     replans, cancel_requested_at, _slot_id, _plan_slot_id, warmup_status, warmup_attempts, warmup_expires_at,
     warmup_error, moves, workspace, pool, pod, slot) = row
    counts = None
    if add is not None:
        counts = {"add": add, "change": change, "destroy": destroy, "replace": replace, "outputs": outputs}
    return {
        "id": task_id,
        "workspace": workspace,
        "kind": kind,
        "status": status,
        "stage": stage,
        "error": error,
        "plan_hash": plan_hash,
        "has_changes": has_changes,
        "changes": counts,
        # Issue 19 item 7: resources the plan only moves (moved blocks): a change with no count above.
        "moves": moves,
        "pool": pool,
        "pod": pod,
        "slot": slot,
        "apply_path": apply_path,
        "state_version": state_version_id,
        "replans": replans,
        # S6: the warm-up of a lost plan context, when the pool prepares one.
        "warmup": None if warmup_status is None else {
            "status": warmup_status, "attempts": warmup_attempts, "expires_at": iso(warmup_expires_at),
            "error": warmup_error,
        },
        "cancel_requested": cancel_requested_at is not None,
        "created_at": iso(created_at),
        "started_at": iso(started_at),
        "planned_at": iso(planned_at),
        "confirmed_at": iso(confirmed_at),
        "finished_at": iso(finished_at),
    }


def _query() -> Any:
    return (
        select(*_COLUMNS, col(Workspace.name).label("workspace"), col(Pool.name).label("pool"),
               col(Pod.name).label("pod"), col(Slot.slot_index))
        .join(Workspace, col(Workspace.id) == col(Task.workspace_id))
        # A finished task keeps showing the slot its plan ran in.
        .outerjoin(Slot, col(Slot.id) == func.coalesce(Task.slot_id, Task.plan_slot_id))
        .outerjoin(Pod, col(Pod.id) == col(Slot.pod_id))
        .outerjoin(Pool, col(Pool.id) == col(Pod.pool_id))
    )


def list_tasks(app: App, *, workspace: str | None = None, status: str | None = None,
               limit: int | None = None) -> list[dict[str, Any]]:
    if status is not None and status not in {s.value for s in Status}:
        raise UsageError(f"unknown status {status!r}: one of {', '.join(s.value for s in Status)}")
    if limit is not None and limit < 1:
        raise UsageError("--limit must be at least 1")
    query = _query()
    with app.store.read() as session:
        if workspace is not None:
            ws = repo.get_workspace(session, workspace)
            query = query.where(col(Task.workspace_id) == ws.id)
        if status is not None:
            query = query.where(col(Task.status) == status)
        query = query.order_by(col(Task.id).desc())
        if limit is not None:
            query = query.limit(limit)
        rows = session.execute(query).all()
    views = [_row_view(r) for r in rows]
    views.reverse()
    return views


def show(app: App, task_id: int) -> dict[str, Any]:
    # Issue 23: the task and what the listing's row lacks in one statement, then its history and
    # its run-task results: three statements whatever the task.
    more = (Task.runner_host, Task.runner_pid, Task.created_by, Task.confirmed_by, Task.cancelled_by,
            Task.trigger_sources, Task.trigger_hops)
    with app.store.read() as session:
        row = session.execute(_query().add_columns(*more).where(col(Task.id) == task_id)).first()
        if row is None:
            repo.get_task(session, task_id)  # raises NotFound
        assert row is not None
        view = _row_view(row[:-len(more)])
        runner_host, runner_pid, created_by, confirmed_by, cancelled_by, sources, hops = row[-len(more):]
        events = session.execute(
            select(TaskEvent).where(col(TaskEvent.task_id) == task_id).order_by(col(TaskEvent.id))
        ).scalars().all()
        run_task_results = repo.results_of_task(session, task_id)
    view["runner"] = {"host": runner_host, "pid": runner_pid} if runner_pid is not None else None
    # Issue 9: who created, confirmed or cancelled it, and what they said.
    view["created_by"] = actor_view(created_by)
    view["confirmed_by"] = actor_view(confirmed_by)
    view["cancelled_by"] = actor_view(cancelled_by)
    # F4: the applies a triggered task follows (None: queued by hand), and its place in the chain.
    view["triggered_by"] = json.loads(sources) if sources else None
    view["trigger_hops"] = hops
    view["stages"] = [
        # A stage still going has no duration yet (the view stays the same between two looks).
        {"stage": st.stage, "started_at": iso(st.started_at),
         "duration_s": None if st.running else round(st.seconds, 2), "running": st.running}
        for st in stage_times([Event(e.at, e.kind, e.to_value) for e in events], now=repo.now(),
                              running=view["status"] == Status.RUNNING)
    ]
    from iacctl.services.runtasks import result_view  # issue 20: not on a listing's path

    view["run_task_results"] = [result_view(r) for r in run_task_results]
    view["history"] = [
        {"at": iso(e.at), "kind": e.kind, "from": e.from_value, "to": e.to_value, "reason": e.reason}
        for e in events
    ]
    return view


def logs(app: App, task_id: int, *, follow: bool = False) -> Iterator[tuple[float, str]]:
    """The task's log lines (with the time each was written) in order; with `follow`, keep
    reading until the task ends or waits for confirmation."""
    with app.store.read() as session:
        repo.get_task(session, task_id)
    cipher = app.store.cipher
    seq = 0
    while True:
        with app.store.read() as session:
            rows = session.execute(
                select(col(TaskLog.seq), col(TaskLog.at), col(TaskLog.line_secret))
                .where(col(TaskLog.task_id) == task_id, col(TaskLog.seq) > seq)
                .order_by(col(TaskLog.seq))
            ).all()
            status = Status(repo.get_task(session, task_id).status)
        for s, at, blob in rows:
            seq = s
            yield at, cipher.decrypt_text(blob)
        if not follow or (not rows and (is_terminal(status) or status == Status.APPLY_PENDING)):
            return
        if not rows:
            time.sleep(0.3)


def exit_code(app: App, task_id: int) -> int:
    """SPEC C3, for `tasks logs --follow`: the exit code the task's own command gives for how it
    ended (a failure or a cancel is raised, so the command prints its one line)."""
    view = show(app, task_id)
    status = Status(view["status"])
    if status == Status.FAILED:
        raise TaskFailed(f"task {task_id} failed at stage {view['stage']}: {view['error']}")
    if status == Status.CANCELLED:
        raise TaskCancelled(f"task {task_id} cancelled: {view['error']}")
    if status == Status.APPLIED_STATE_ERROR:
        raise TaskFailed(view["error"] or f"task {task_id} applied, but its state was not stored")
    if status == Status.APPLY_PENDING or (status == Status.PLANNED_AND_FINISHED and view["has_changes"]):
        return EXIT_CHANGES
    return EXIT_OK if is_terminal(status) else EXIT_FAILED


def _plan_of(app: App, session: Any, task: Task) -> dict[str, Any] | None:
    """The task's saved plan JSON as Terraform gave it (not yet masked), or None."""
    artifact = repo.plan_artifact_of(session, task.id or 0)
    if artifact is None:
        return None
    return dict(json.loads(zlib.decompress(app.store.cipher.decrypt(artifact.plan_json_secret))))


def _no_saved_plan(task: Task) -> Refused:
    return Refused(f"task {task.id} has no saved plan to review (it is {task.status}"
                   + (f", stage {task.stage}" if task.stage else "") + "); a plan is saved once Terraform "
                   "has planned (stage saving_plan)")


def _stored_plan(app: App, task_id: int) -> tuple[Task, dict[str, Any], list[str]]:
    with app.store.read() as session:
        task = repo.get_task(session, task_id)
        plan = _plan_of(app, session, task)
        if plan is None:
            raise _no_saved_plan(task)
        secrets = repo.values_to_mask(session, app.store.cipher, task.workspace_id)  # X2, issue 24 item 4
    return task, plan, secrets


def plan_json(app: App, task_id: int) -> dict[str, Any]:
    """The stored plan JSON as `terraform show -json` gave it, sensitive values masked (X2)."""
    _, doc, secrets = _stored_plan(app, task_id)
    return redact_plan(doc, secrets)


def review(app: App, task_id: int, *, need_plan: bool = True) -> Review:
    """Issue 9, issue 24: what the task's saved plan changes, resource by resource, with the
    counts, who planned it and why, its run tasks and Terraform's own plan text; read from the
    store, so it works after the work directory is gone. With `need_plan`, a task without a
    saved plan is refused; without it, the review says what happened instead (a failed plan)."""
    with app.store.read() as session:
        task = repo.get_task(session, task_id)
        raw = _plan_of(app, session, task)
        if raw is None and need_plan:
            raise _no_saved_plan(task)
        secrets = repo.values_to_mask(session, app.store.cipher, task.workspace_id)  # X2, issue 24 item 4
        workspace = repo.workspace_by_id(session, task.workspace_id).name
        results = repo.results_of_task(session, task_id)
        # Terraform's text is the output of the last planning stage (a re-plan's, when there was
        # one); a task that failed before it planned shows the output of the stage it failed in.
        stages = select(func.max(TaskEvent.at)).where(col(TaskEvent.task_id) == task_id, col(TaskEvent.kind) == "stage")
        started = session.execute(stages.where(col(TaskEvent.to_value) == "planning")).scalar()
        if started is None:
            started = session.execute(stages).scalar()
        ended = None if started is None else session.execute(
            select(func.min(TaskEvent.at)).where(col(TaskEvent.task_id) == task_id, col(TaskEvent.at) > started,
                                                 col(TaskEvent.kind).in_(("stage", "status")))).scalar()
        window = select(col(TaskLog.line_secret)).where(col(TaskLog.task_id) == task_id)
        if started is not None:
            window = window.where(col(TaskLog.at) >= started)
        if ended is not None:
            window = window.where(col(TaskLog.at) < ended)
        blobs = session.execute(window.order_by(col(TaskLog.seq))).scalars().all() if started is not None else []
    from iacctl.runtasks.stage import describe  # issue 20: not on a listing's path

    cipher = app.store.cipher
    # The log was masked when written; masked again with today's values (X2).
    text = masked(list(plan_text(cipher.decrypt_text(b) for b in blobs)), secrets)
    counts = None
    changes: tuple[ResourceChange, ...] = ()
    drift: tuple[ResourceChange, ...] = ()
    if raw is not None:
        counts = ChangeCounts(task.add_count or 0, task.change_count or 0, task.destroy_count or 0,
                              task.replace_count or 0, task.output_count or 0)
        # Both read from the plan as stored (a masked value compares equal to another masked one,
        # which would hide a changed sensitive attribute); their texts mask what Terraform marks
        # sensitive and the workspace's secrets (X2). F5: a drift check's finding is its drift.
        changes = tuple(resource_changes(raw, secrets))
        drift = tuple(resource_drift(raw, secrets))
    creator, confirmer, canceller = (actor_view(a) for a in (task.created_by, task.confirmed_by,
                                                             task.cancelled_by))
    return Review(
        task=task_id, workspace=workspace, kind=task.kind, status=str(task.status), stage=task.stage,
        error=masked(task.error, secrets) if task.error else None,
        plan_hash=task.plan_hash if raw is not None else None, planned_at=iso(task.planned_at),
        created_by=creator["display"] if creator else None, message=creator["message"] if creator else None,
        confirmed_by=confirmer["display"] if confirmer else None,
        cancelled_by=canceller["display"] if canceller else None,
        counts=counts, moves=task.move_count or 0, changes=changes, drift=drift,
        run_tasks=tuple(RunTaskOutcome(r.run_task_name, r.stage, r.status, r.enforcement, describe(r))
                        for r in results),
        plan_text=tuple(text),
    )


COMPLETION_TASKS = 200
_LIVE = (Status.PENDING, Status.RUNNING, Status.APPLY_PENDING)


def completion(app: App, kind: str) -> list[tuple[str, str]]:
    """Issue 10: what shell completion offers for a workspace name, a task id (with its
    status; only the tasks the command can act on) or a status: (value, description) pairs."""
    if kind == "status":
        return [(s.value, "") for s in Status]
    with app.store.read() as session:
        if kind == "workspace":
            rows = session.execute(select(col(Workspace.name), col(Workspace.source_dir))
                                   .order_by(col(Workspace.name))).all()
            return [(str(name), str(source)) for name, source in rows]
        query = (select(col(Task.id), col(Task.status), col(Task.kind), col(Workspace.name))
                 .join(Workspace, col(Workspace.id) == col(Task.workspace_id)))
        if kind == "apply_pending_task":
            query = query.where(col(Task.status) == Status.APPLY_PENDING)
        elif kind == "live_task":
            query = query.where(col(Task.status).in_(list(_LIVE)))
        elif kind != "task":
            raise UsageError(f"nothing to complete for {kind!r}")
        rows = session.execute(query.order_by(col(Task.id).desc()).limit(COMPLETION_TASKS)).all()
    return [(str(task_id), f"{status} ({kind_} of {workspace})") for task_id, status, kind_, workspace in rows]
