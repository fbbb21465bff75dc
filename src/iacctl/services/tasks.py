"""Looking at tasks: list, show (with history, L7), logs (E4)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, select
from sqlmodel import col

from iacctl.domain.lifecycle import Status, is_terminal
from iacctl.errors import UsageError
from iacctl.services.app import App
from iacctl.services.runtasks import result_view
from iacctl.services.views import iso
from iacctl.store import repo
from iacctl.store.models import Pod, Pool, Slot, Task, TaskEvent, TaskLog, Workspace

_COLUMNS: tuple[Any, ...] = tuple(col(c) for c in (
    Task.id, Task.kind, Task.status, Task.stage, Task.error, Task.created_at, Task.started_at,
    Task.finished_at, Task.plan_hash, Task.planned_at, Task.has_changes, Task.add_count,
    Task.change_count, Task.destroy_count, Task.replace_count, Task.output_count, Task.apply_path,
    Task.state_version_id, Task.confirmed_at, Task.replans, Task.cancel_requested_at,
    Task.slot_id, Task.plan_slot_id, Task.warmup_status, Task.warmup_attempts, Task.warmup_expires_at,
    Task.warmup_error,
))


def _row_view(row: Any) -> dict[str, Any]:
    # Positional unpacking of the row: attribute access per field is slow for big listings.
    (task_id, kind, status, stage, error, created_at, started_at, finished_at, plan_hash, planned_at,
     has_changes, add, change, destroy, replace, outputs, apply_path, state_version_id, confirmed_at,
     replans, cancel_requested_at, _slot_id, _plan_slot_id, warmup_status, warmup_attempts, warmup_expires_at,
     warmup_error, workspace, pool, pod, slot) = row
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
    with app.store.read() as session:
        row = session.execute(_query().where(col(Task.id) == task_id)).first()
        if row is None:
            repo.get_task(session, task_id)  # raises NotFound
        assert row is not None
        view = _row_view(row)
        events = session.execute(
            select(TaskEvent).where(col(TaskEvent.task_id) == task_id).order_by(col(TaskEvent.id))
        ).scalars().all()
        task = repo.get_task(session, task_id)
        run_task_results = repo.results_of_task(session, task_id)
    view["runner"] = ({"host": task.runner_host, "pid": task.runner_pid}
                      if task.runner_pid is not None else None)
    view["run_task_results"] = [result_view(r) for r in run_task_results]
    view["history"] = [
        {"at": iso(e.at), "kind": e.kind, "from": e.from_value, "to": e.to_value, "reason": e.reason}
        for e in events
    ]
    return view


def logs(app: App, task_id: int, *, follow: bool = False) -> Iterator[str]:
    """The task's log lines in order; with `follow`, keep reading until the task stops running."""
    with app.store.read() as session:
        repo.get_task(session, task_id)
    cipher = app.store.cipher
    seq = 0
    while True:
        with app.store.read() as session:
            rows = session.execute(
                select(col(TaskLog.seq), col(TaskLog.line_secret))
                .where(col(TaskLog.task_id) == task_id, col(TaskLog.seq) > seq)
                .order_by(col(TaskLog.seq))
            ).all()
            status = Status(repo.get_task(session, task_id).status)
        for s, blob in rows:
            seq = s
            yield cipher.decrypt_text(blob)
        if not follow or (not rows and (is_terminal(status) or status == Status.APPLY_PENDING)):
            return
        if not rows:
            time.sleep(0.3)
