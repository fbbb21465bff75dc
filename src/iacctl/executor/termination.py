"""The one way a task ends when it does not succeed (SPEC E2, seed 002 O1), and the way an apply
whose state could not be stored ends (E8, O5).

Used by the executor in the running process, by `iacctl cancel` for tasks that are not running,
and by the recovery sweep for tasks whose process is gone (S8). In that order it: keeps a
partial state, writes the last log line, removes the work directory, and in one transaction
sets the status, revokes waiting run-task tokens, releases the slot and the lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from sqlmodel import Session

from iacctl.domain.lifecycle import Stage, Status, is_terminal
from iacctl.executor import terraform as tf
from iacctl.executor.tasklog import TaskLog
from iacctl.runtimes.base import Runtime, RuntimeError_, SlotPlace
from iacctl.store import repo
from iacctl.store.db import Store
from iacctl.store.models import StateVersion


class Cancelled(Exception):
    """Raised inside the executor when a cancel is acted on."""


# Stages after which Terraform may have changed real infrastructure: the state in the work
# directory must be kept (E2 "a cancelled apply keeps its partial state").
APPLY_TOUCHED = frozenset({Stage.APPLYING, Stage.SAVING_STATE, Stage.POST_APPLY})


def state_serial(data: bytes) -> int:
    doc = json.loads(data)
    if not isinstance(doc, dict) or "serial" not in doc:
        raise ValueError("not a Terraform state file")
    return int(doc["serial"])


def add_state_version(session: Session, store: Store, workspace_id: int, task_id: int, data: bytes, *,
                      partial: bool) -> StateVersion:
    """E8: a new state version, encrypted. Only serial, size and hash stay readable (X1: the
    lineage and everything else of the state are inside the encrypted blob)."""
    return repo.add_state_version(
        session,
        StateVersion(
            workspace_id=workspace_id, serial=state_serial(data), sha256=hashlib.sha256(data).hexdigest(),
            size=len(data), partial=partial, task_id=task_id, created_at=repo.now(),
            data_secret=store.cipher.encrypt(data),
        ),
    )


def save_work_dir_state(
    store: Store, runtime: Runtime, task_id: int, place: SlotPlace, *, partial: bool
) -> int | None:
    """Store the work directory's terraform.tfstate as a new state version if it differs from
    the workspace's latest. Returns the new version id, or None when there was nothing new."""
    try:
        data = runtime.read_file(place, tf.STATE_FILE)
    except RuntimeError_:
        return None
    if not data:
        return None
    return store_state_if_new(store, task_id, data, partial=partial)


STATE_FILES = (tf.ERRORED_STATE_FILE, tf.STATE_FILE)


def whole_state(read: Callable[[str], bytes | None], printed: bytes | None) -> tuple[bytes | None, str]:
    """The newest whole state an apply that stopped part-way left: the one Terraform printed
    because it could not write it, else errored.tfstate, else terraform.tfstate. (None, "")
    when there is no state file at all; ValueError naming each unreadable file (issue 13)."""
    if printed is not None:
        return printed, "from Terraform's output: it could not write its state file"
    problems = []
    for name in STATE_FILES:
        data = read(name)
        if not data:
            if data is not None:
                problems.append(f"{name} is empty")
            continue
        try:
            state_serial(data)
        except ValueError as exc:
            problems.append(f"{name} cannot be read whole: {exc}")
            continue
        return data, (f"from {name}" if name != tf.STATE_FILE else "")
    if problems:
        raise ValueError("; ".join(problems))
    return None, ""


def save_partial_state(store: Store, runtime: Runtime, task_id: int, place: SlotPlace,
                       printed: bytes | None) -> tuple[int | None, str]:
    """E2: keep the state of an apply that stopped part-way as a partial state version."""
    data, source = whole_state(lambda name: runtime.read_file(place, name), printed)
    if data is None:
        return None, ""
    return store_state_if_new(store, task_id, data, partial=True), source


def store_state_if_new(store: Store, task_id: int, data: bytes, *, partial: bool) -> int | None:
    digest = hashlib.sha256(data).hexdigest()
    with store.write() as session:
        task = repo.get_task(session, task_id)
        latest = repo.latest_state_version(session, task.workspace_id)
        if latest is not None and latest.sha256 == digest:
            return None
        return add_state_version(session, store, task.workspace_id, task_id, data, partial=partial).id


def end_task(
    store: Store,
    runtime: Runtime,
    task_id: int,
    outcome: Status,
    error: str,
    *,
    log: TaskLog | None,
    place: SlotPlace | None,
    keep_lock_reason: str | None = None,
) -> Status:
    """E2: end a task failed or cancelled. Idempotent: a task already terminal is left as is."""
    with store.read() as session:
        task = repo.get_task(session, task_id)
    if is_terminal(Status(task.status)):
        return Status(task.status)
    notes: list[str] = []
    keep_dir = False
    if place is not None and task.stage in APPLY_TOUCHED:
        try:
            version_id, source = save_partial_state(
                store, runtime, task_id, place, log.printed_state if log is not None else None)
            if version_id is not None:
                notes.append(f"partial state saved as state version {version_id}"
                             + (f" ({source})" if source else ""))
        except Exception as exc:
            # Issue 13 item 6: iacctl does not hold the real state, so the workspace must not
            # be unlocked, nor the files that may still hold the state be removed.
            keep_dir = True
            notes.append(f"the partial state could not be saved: {exc}")
            keep_lock_reason = keep_lock_reason or (
                f"task {task_id} stopped during {task.stage} and its state could not be saved ({exc}); the "
                f"infrastructure may be partly changed: once there is room, run: iacctl state save-partial {task_id}")
    if keep_dir and place is not None:
        kept = None
        with contextlib.suppress(Exception):
            kept = runtime.keep_work_dir(place, task_id)
        notes.append(f"the workspace stays locked; the work directory is kept at {kept}; once there is room, "
                     f"store its state with: iacctl state save-partial {task_id}" if kept else
                     "the workspace stays locked; no work directory is left to save a state from")
    message = error + ("; " + "; ".join(notes) if notes else "")
    if log is not None:
        message = log.redact(message)  # X2: the task's error is shown and notified as it is
        with contextlib.suppress(Exception):
            log.note(f"task {outcome}: {message}", show=False)
            log.flush()
    if place is not None and not keep_dir:
        with contextlib.suppress(Exception):
            runtime.remove_work_dir(place)
    def attempt(session: Session) -> Status:
        # Rows only: a deadlock runs it again (issue 18 item 6, Store.transaction).
        task = repo.get_task(session, task_id)
        current = Status(task.status)
        if is_terminal(current):
            return current
        # The one end of a task: slot, lock (or its kept reason) and run-task tokens go with it.
        repo.transition(session, task_id, current, outcome, message, keep_lock=keep_lock_reason, error=message)
        return outcome

    return store.transaction(attempt)


def kept_state_path(work_root: Path, task_id: int) -> Path:
    return work_root / "kept" / f"task-{task_id}.tfstate"


def keep_applied_state(
    store: Store, runtime: Runtime, task_id: int, place: SlotPlace, log: TaskLog, work_root: Path,
    error: str,
) -> Status:
    """E8/O5: the apply worked but its state was not stored. Keep the state file outside the
    slot, keep the workspace locked (its stored state is behind reality), free the slot, and end
    the task applied_state_error with the command that stores the state again."""
    data = None
    with contextlib.suppress(RuntimeError_):
        data = runtime.read_file(place, tf.STATE_FILE)
    kept = kept_state_path(work_root, task_id)
    if data is not None:
        kept.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        message = (f"the apply finished but its state was not stored ({error}); the state file is "
                   f"kept at {kept}; store it with: iacctl state save-applied {task_id}")
    else:
        message = f"the apply finished but its state was not stored ({error}) and no state file is left"
    message = log.redact(message)  # X2: the task's error is shown and notified as it is
    with contextlib.suppress(Exception):
        log.note(message, show=False)
        log.flush()
    runtime.remove_work_dir(place)
    with store.write() as session:
        task = repo.get_task(session, task_id)
        repo.transition(session, task_id, Status(task.status), Status.APPLIED_STATE_ERROR, message,
                        keep_lock=f"task {task_id} applied but its state is not stored", error=message)
    return Status.APPLIED_STATE_ERROR
