"""`iacctl cancel` (SPEC E1, E2): a queued or waiting task ends at once; a running one is asked
to stop gracefully (its process interrupts Terraform and ends the task); a running task whose
process is gone is ended as the sweep would."""

from __future__ import annotations

import contextlib
import time

from iacctl.config import heartbeat_timeout
from iacctl.domain.durations import format_duration
from iacctl.domain.lifecycle import Status, is_terminal
from iacctl.errors import Refused, TaskFailed, TransitionConflict
from iacctl.executor.progress import Reporter
from iacctl.services import ending, outbox, queue
from iacctl.services.app import App, current_actor
from iacctl.store import repo
from iacctl.store.models import Task

CANCEL_WAIT_SECONDS = 600.0


def cancel(app: App, task_id: int, *, wait: bool, reporter: Reporter, message: str | None = None) -> Task:
    task = queue.get_task(app, task_id)
    with app.store.read() as session:
        ws = repo.workspace_by_id(session, task.workspace_id)
    notice = outbox.dead_notice(app.store, ws.id or 0, ws.name)
    if notice:
        reporter.note(notice)  # F1: said until the dead follow-up is retried or dismissed
    return _cancel(app, task_id, wait=wait, reporter=reporter, message=message)


def _cancel(app: App, task_id: int, *, wait: bool, reporter: Reporter, message: str | None) -> Task:
    actor = current_actor(message)
    task = queue.get_task(app, task_id)
    status = Status(task.status)
    if is_terminal(status):
        raise Refused(f"task {task_id} is already {status}")
    if status in (Status.PENDING, Status.APPLY_PENDING):
        outcome = ending.end_waiting(app, task_id, Status.CANCELLED, f"cancelled by {actor.said()}", by=actor)
        if outcome != Status.CANCELLED and not is_terminal(outcome):
            return _cancel(app, task_id, wait=wait, reporter=reporter, message=message)  # it started meanwhile
        queue.kick_queue(app)
        return queue.get_task(app, task_id)
    # Running: ask its process (it interrupts Terraform and goes through the termination path).
    with app.store.write() as session:
        repo.update_task(session, task_id, cancel_requested_at=repo.now(), cancelled_by=actor.to_json())
        repo.add_event(session, task_id, "note", None, None, f"cancel requested by {actor.said()}")
        repo.announce_cancel(session, task_id)
    # Issue 18 item 3: a runner on another machine is judged by its heartbeat, as the sweep does;
    # once it is dead, Terraform is stopped where it runs (in the pod; on another machine's slot
    # by that machine's sweep) and the task ends cancelled here.
    if ending.runner_gone(task):
        _end_dead(app, task, actor.said())
        return queue.get_task(app, task_id)
    if not wait:
        return queue.get_task(app, task_id)
    reporter.note(f"task {task_id} is {task.stage}: asked its process to stop; waiting")
    deadline = time.monotonic() + CANCEL_WAIT_SECONDS
    while time.monotonic() < deadline:
        task = queue.get_task(app, task_id)
        if is_terminal(Status(task.status)):
            break
        if task.status == Status.RUNNING and ending.runner_gone(task):
            _end_dead(app, task, actor.said())
        time.sleep(0.3)
    task = queue.get_task(app, task_id)
    if task.status != Status.CANCELLED:
        if is_terminal(Status(task.status)):
            raise Refused(f"task {task_id} ended {task.status} before the cancel took effect")
        raise TaskFailed(f"task {task_id} has not stopped yet (stage {task.stage})")
    return task


def _end_dead(app: App, task: Task, by: str) -> None:
    why = "its process was gone"
    if ending.runner_elsewhere(task):
        why = (f"its process on {task.runner_host} sent no heartbeat for {format_duration(heartbeat_timeout())} "
               "(IACCTL_HEARTBEAT_TIMEOUT)")
    with contextlib.suppress(TransitionConflict):
        ending.end_abandoned(app, task.id or 0, f"cancelled by {by}; {why}", Status.CANCELLED)
