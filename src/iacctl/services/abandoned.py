"""Queued tasks whose command is gone (issue 13 item 2): a task queued by a command that waits
for it (`iacctl plan`, or `confirm-apply` re-planning) is that command's to run. If the command
exits before the task ever starts (it failed, was killed, its terminal closed), nobody may start
the task later: the user saw the command end, so it ends `cancelled`, with the reason.

Tasks queued with --no-wait have no creator and are started by whoever frees their turn.
"""

from __future__ import annotations

from iacctl.domain.lifecycle import Status
from iacctl.runtimes import local
from iacctl.services.app import App
from iacctl.store import repo
from iacctl.store.models import Task

ABANDONED = "its command exited before it started"


def creator_gone(task: Task) -> bool:
    """The task was queued by a waiting command (creator set) that is no longer running here.
    A creator on another machine is not judged (process_alive says None)."""
    if task.creator_pid is None:
        return False
    return local.process_alive(task.creator_host, task.creator_pid, task.creator_start) is False


def cancel_abandoned(app: App, task_id: int) -> bool:
    """End a still-pending abandoned task cancelled; True if this call did it."""
    with app.store.write() as session:
        task = repo.get_task(session, task_id)
        if task.status != Status.PENDING or not creator_gone(task):
            return False
        repo.transition(session, task_id, Status.PENDING, Status.CANCELLED, ABANDONED, error=ABANDONED)
    return True
