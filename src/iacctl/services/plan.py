"""`iacctl plan` (SPEC L3, L4, E1): queue a plan of a workspace and, unless told not to wait,
run it here when its turn comes (services.queue)."""

from __future__ import annotations

from pathlib import Path

from iacctl.domain.lifecycle import Status, TaskKind
from iacctl.errors import StoreError, UsageError
from iacctl.executor import terraform as tf
from iacctl.executor.progress import Reporter
from iacctl.executor.snapshot import archive_directory, store_snapshot
from iacctl.runtimes import local
from iacctl.services import ending, outbox, queue
from iacctl.services.app import App, current_actor
from iacctl.store import repo
from iacctl.store.models import Task


def plan_workspace(
    app: App, name: str, *, plan_only: bool, wait: bool, reporter: Reporter, wait_timeout: float | None = None,
    message: str | None = None,
) -> Task:
    """Queue a plan of the workspace and, unless `wait` is false, run it here when its turn
    comes. Returns the task as it ended (or as queued)."""
    actor = current_actor(message)
    with app.store.read() as session:
        ws = repo.get_workspace(session, name)
    # X4: refuse what cannot work before writing anything.
    source = Path(ws.source_dir)
    if not source.is_dir():
        raise UsageError(f"workspace {name}'s directory {source} does not exist; point the workspace at its "
                         f"configuration with: iacctl workspace set {name} --dir DIR")
    tf.find_binary(ws.terraform_bin, ws.terraform_version, reporter.note)
    notice = outbox.dead_notice(app.store, ws.id or 0, ws.name)
    if notice:
        reporter.note(notice)  # F1: a dead follow-up is said until it is retried or dismissed
    _check_secrets(app, ws.id or 0)
    host, pid, start = local.this_process()
    kind = TaskKind.PLAN if plan_only else TaskKind.PLAN_AND_APPLY
    # Issue 18 item 1: the configuration is this command's, taken now and stored with the task:
    # whichever machine runs the plan (or a re-plan, or the apply) uses it, not its own checkout.
    data, digest = archive_directory(source)
    with app.store.write() as session:
        t = repo.now()
        snapshot = store_snapshot(session, app.store.cipher, ws.id or 0, data, digest)
        # heartbeat_at: while the task is pending it is its waiting command's (issue 18 item 5),
        # which other machines judge by it (they cannot see its pid).
        task = Task(workspace_id=ws.id or 0, kind=kind, status=Status.PENDING, created_at=t, updated_at=t,
                    pool_id=ws.pool_id, config_snapshot_id=snapshot.id,
                    creator_host=host if wait else None, creator_pid=pid if wait else None,
                    creator_start=start if wait else None, heartbeat_at=t if wait else None,
                    created_by=actor.to_json())
        session.add(task)
        session.flush()
        repo.add_event(session, task.id or 0, "status", None, Status.PENDING,
                       f"{kind} queued for workspace {name} by {actor.said()}")
        repo.write_follow_ups(session, task.id or 0, None, Status.PENDING)  # F3: `created`
    task_id = task.id or 0
    reporter.note(f"task {task_id}: {kind} of workspace {name} queued")
    if not wait:
        # S3, issue 10 item 4: the pool scales to every queued task, this one included.
        queue.kick_queue(app, reporter)
        return queue.get_task(app, task_id)
    try:
        return queue.run_when_turn(app, task_id, reporter, wait_timeout=wait_timeout)
    except StoreError as exc:
        raise StoreError(_left_behind(app, task_id, str(exc))).about(task_id) from exc


def _left_behind(app: App, task_id: int, said: str) -> str:
    """Issue 19 item 4: the store said no while this command waited for or ran its task. A
    task still queued is cancelled now if the store lets us; else its command is gone when we
    exit, and the queue and the sweep cancel it (queue._left_behind): it never runs by itself."""
    said = said.replace("; nothing was changed", "")
    try:
        task = queue.get_task(app, task_id)
        if task.status == Status.PENDING:
            ending.end_waiting(app, task_id, Status.CANCELLED, f"the store said no while it waited: {said}")
            return f"{said}; task {task_id} was cancelled: it never runs"
    except Exception:
        return (f"{said}; task {task_id} could not be ended here: it never runs by itself (its command is "
                "gone), and the next iacctl command or `iacctl pods recover` ends it")
    return f"{said}; task {task_id} is {task.status}: see iacctl tasks show {task_id}"


def _check_secrets(app: App, workspace_id: int) -> None:
    """X4: a key that cannot open the workspace's sensitive variables (and their former values,
    which the task masks) is found before a task is written, not halfway through one."""
    with app.store.read() as session:
        repo.values_to_mask(session, app.store.cipher, workspace_id)
