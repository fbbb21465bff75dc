"""Ending a task from outside the process that runs it (SPEC E2, E3, L6, S5, S8): a task whose
runner is gone (the sweep, `cancel`, a forced unlock), a plan waiting for confirmation that is
cancelled or discarded because it expired.

Every way goes through `executor.termination.end_task()` (partial state, log, work directory)
and so through `repo.transition()`, the one end of a task that frees its slot and lock.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from iacctl.config import heartbeat_timeout
from iacctl.domain.actors import Actor
from iacctl.domain.admission import plan_lifetime
from iacctl.domain.durations import format_duration
from iacctl.domain.lifecycle import Stage, Status, is_terminal
from iacctl.domain.slots import SlotPlace
from iacctl.executor.binaries import product
from iacctl.executor.progress import SilentReporter
from iacctl.executor.tasklog import TaskLog
from iacctl.executor.termination import APPLY_TOUCHED, end_task, keep_applied_state, save_work_dir_state
from iacctl.runtimes import local
from iacctl.runtimes.base import CommandState, PodBackend, Runtime, RuntimeError_
from iacctl.services.app import App
from iacctl.store import repo
from iacctl.store.models import Pool, Slot, Task

_FINISHED_APPLY = frozenset({Stage.SAVING_STATE, Stage.POST_APPLY})
# How long the owning machine's sweep lets Terraform of a runner judged dead elsewhere finish
# stopping (the kernel sent it SIGINT when its runner died, a heartbeat timeout ago at least).
_LEFT_HERE_GRACE_S = 5.0


def runner_gone(task: Task) -> bool:
    """Whether a running task's runner is dead: by its pid on this machine, by its heartbeat on
    another (issue 18 item 3: IACCTL_HEARTBEAT_TIMEOUT, the one timeout every machine uses)."""
    alive = local.process_alive(task.runner_host, task.runner_pid, task.runner_start)
    if alive is None:
        return task.heartbeat_at is None or repo.now() - task.heartbeat_at > heartbeat_timeout()
    return not alive


def runner_elsewhere(task: Task) -> bool:
    """The task's runner is (or was) on another machine sharing the store."""
    return task.runner_pid is not None and not local.on_this_machine(task.runner_host)


def end_waiting(app: App, task_id: int, outcome: Status, reason: str, *, by: Actor | None = None) -> Status:
    """End a task that is not running (pending, or apply_pending with its work directory in a
    reserved slot): the slot's directory is removed, slot and lock freed (E2). Returns the
    status it has after: a task that started meanwhile is left to its process.

    The directory goes inside the writing transaction, before the slot is freed: a task
    confirmed at the same moment finds the task cancelled, and a task claiming the freed slot
    makes its directory after, never before, the removal."""
    with app.store.read() as session:
        pool_id = repo.get_task(session, task_id).pool_id
    runtime = app.runtime_for_pool_id(pool_id or 0)
    with app.store.write() as session:
        task = repo.get_task(session, task_id)
        current = Status(task.status)
        if current not in (Status.PENDING, Status.APPLY_PENDING):
            return current
        place = repo.slot_place(session, task.slot_id)
        if place is not None:
            with contextlib.suppress(RuntimeError_, OSError):
                runtime.remove_work_dir(place)
        cancelled_by = by.to_json() if by is not None and outcome == Status.CANCELLED else None
        if cancelled_by is not None:
            repo.transition(session, task_id, current, outcome, reason, error=reason, cancelled_by=cancelled_by)
        else:
            repo.transition(session, task_id, current, outcome, reason, error=reason)
    return outcome


def discard_expired(app: App, task_id: int) -> bool:
    """L6, seed 002 M7: a plan waiting for confirmation past its lifetime is discarded (task
    cancelled, lock and slot freed) instead of blocking its workspace. True if it was."""
    with app.store.read() as session:
        task = repo.get_task(session, task_id)
        ws = repo.workspace_by_id(session, task.workspace_id)
        pool = session.get(Pool, ws.pool_id)
    if task.status != Status.APPLY_PENDING or task.confirmed_at is not None:
        return False
    lifetime = plan_lifetime(ws.plan_lifetime_s, pool.plan_lifetime_s if pool else None)
    reason = (f"plan expired after {format_duration(lifetime)} without confirmation; "
              f"plan again with: iacctl plan {ws.name}")
    return end_waiting(app, task_id, Status.CANCELLED, reason) == Status.CANCELLED


def end_abandoned(app: App, task_id: int, reason: str, outcome: Status = Status.FAILED) -> Status:
    """End a running task whose process is gone, as its own process would have (E2, S8)."""
    with app.store.read() as session:
        task = repo.get_task(session, task_id)
        place = repo.slot_place(session, task.slot_id)
    if is_terminal(Status(task.status)):
        return Status(task.status)
    runtime = app.runtime_for_pool_id(task.pool_id or 0)
    finished_apply = task.stage in _FINISHED_APPLY
    pods = runtime.pod_backend()
    if pods is None and runner_elsewhere(task):
        # Issue 18 item 3: its slot directory is on the runner's machine, not here.
        return _end_elsewhere(app, task, reason, outcome)
    if pods is not None:
        # Terraform ran detached in the pod; its files say how it ended.
        settled = _settle_in_pod(app, runtime, pods, task, place, reason, outcome)
        if settled is not None:
            return settled
        finished_apply = finished_apply or task.stage == Stage.APPLYING
    elif task.child_pid and local.on_this_machine(task.runner_host):
        # The kernel already sent it SIGINT when its parent died; wait for it to write its state.
        with app.store.read() as session:
            ws = repo.workspace_by_id(session, task.workspace_id)
            binary = ws.terraform_bin or (product() if ws.terraform_version else "terraform")
        local.stop_orphan(task.child_pid, Path(binary).name)
    if finished_apply and place is not None:
        return _store_finished_apply(app, runtime, task_id, place, reason)
    return end_task(app.store, runtime, task_id, outcome, reason, log=None, place=place)


def _store_finished_apply(app: App, runtime: Runtime, task_id: int, place: SlotPlace, reason: str) -> Status:
    """The apply itself finished before the process died: store its state, never call it failed."""
    try:
        version_id = save_work_dir_state(app.store, runtime, task_id, place, partial=False)
    except Exception as exc:
        with app.store.read() as session:
            workspace_id = repo.get_task(session, task_id).workspace_id
            secrets = repo.values_to_mask(session, app.store.cipher, workspace_id)  # X2
        log = TaskLog(app.store, task_id, SilentReporter(), secrets)
        return keep_applied_state(app.store, runtime, task_id, place, log, app.settings.work_root,
                                  f"{reason}; {exc}")
    with app.store.write() as session:
        task = repo.get_task(session, task_id)
        if task.status != Status.RUNNING:
            return Status(task.status)
        version = version_id or repo.latest_state_version_id(session, task.workspace_id)
        repo.transition(session, task_id, Status.RUNNING, Status.APPLIED,
                        f"{reason}; the apply had finished and its state is stored", state_version_id=version)
    runtime.remove_work_dir(place)
    return Status.APPLIED


def _settle_in_pod(app: App, runtime: Runtime, pods: PodBackend, task: Task, place: SlotPlace | None,
                   reason: str, outcome: Status) -> Status | None:
    """A Kubernetes task whose runner is gone: None when its apply ended 0 in the pod (the
    caller stores the state and ends it applied), else how it ended, or RUNNING while Terraform
    still applies in the pod (a later sweep settles it)."""
    task_id = task.id or 0
    state = pods.command_state(place) if place is not None else CommandState(pod_gone=True)
    if state.pod_gone and place is not None:
        with app.store.write() as session:
            repo.mark_pod_lost(session, place.pool, place.pod)  # issue 10 item 2: at once
    if state.pod_gone:
        keep = None
        message = f"{reason}; its pod is gone"
        if task.stage in APPLY_TOUCHED:
            with app.store.read() as session:
                ws = repo.workspace_by_id(session, task.workspace_id)
            keep = (f"task {task_id}'s pod was lost during {task.stage}: the infrastructure may be partly "
                    f"changed and its state was not stored; inspect it, then run: iacctl workspace unlock {ws.name}")
            message += "; the workspace stays locked until an operator unlocks it"
        return end_task(app.store, runtime, task_id, Status.FAILED, message, log=None, place=place,
                        keep_lock_reason=keep)
    if task.stage == Stage.APPLYING and state.running and outcome != Status.CANCELLED:
        return Status.RUNNING
    if state.running and place is not None:
        pods.stop_command(place)  # E1: SIGINT, wait, then kill what is left
        state = pods.command_state(place)
    if task.stage == Stage.APPLYING and state.exit_code == 0:
        return None
    if task.stage in _FINISHED_APPLY:
        return None
    return end_task(app.store, runtime, task_id, outcome, reason, log=None, place=place)


def _end_elsewhere(app: App, task: Task, reason: str, outcome: Status) -> Status:
    """Issue 18 item 3: a task of this machine's kind of slot (a local pod) whose runner died on
    another machine. Its work directory, and in it whatever state its apply left, is on that
    machine's disk: this machine cannot read it. An apply that may have changed infrastructure
    ends applied_state_error (or cancelled, when a cancel was asked for) with the lock kept and a
    reason that names the machine and the way to recover, never failed and unlocked. The pid of
    its Terraform stays recorded so that the owning machine's sweep stops what is left of it and
    saves the partial state (settle_left_here)."""
    task_id = task.id or 0
    machine = task.runner_host or "another machine"
    with app.store.read() as session:
        ws = repo.workspace_by_id(session, task.workspace_id)
    keep = None
    message = reason
    if task.stage in APPLY_TOUCHED:
        outcome = Status.CANCELLED if outcome == Status.CANCELLED else Status.APPLIED_STATE_ERROR
        recover = (f"on {machine} run `iacctl pods recover` or `iacctl state save-partial {task_id}` to store "
                   f"the partial state it left there, or push a state you trust with `iacctl state push {ws.name}` "
                   f"and then `iacctl workspace unlock {ws.name}`")
        keep = f"task {task_id}'s apply died on {machine} during {task.stage}; its state is there: {recover}"
        message = (f"{reason}; its apply ran on {machine}, whose work directory this machine cannot read: the "
                   f"infrastructure may be partly changed and its state is not stored; the workspace stays "
                   f"locked; {recover}")
    with app.store.write() as session:
        current = repo.get_task(session, task_id)
        if current.status != Status.RUNNING:
            return Status(current.status)
        # child_pid stays: the owning machine's sweep ends that process group (settle_left_here).
        # So does the slot: a task of that machine taking it would reset the directory that holds
        # the partial state before that sweep stores it.
        repo.transition(session, task_id, Status.RUNNING, outcome, message, keep_lock=keep, error=message,
                        child_pid=current.child_pid, keep_slot=current.child_pid is not None)
    return outcome


def left_here(task: Task) -> bool:
    """A task ended by another machine while its Terraform ran on this one (see _end_elsewhere)."""
    return (is_terminal(Status(task.status)) and task.child_pid is not None and task.runner_pid is not None
            and local.on_this_machine(task.runner_host))


def settle_left_here(app: App, task_id: int) -> tuple[str, str | None] | None:
    """Issue 18 item 3, on the machine that ran it: a task another machine ended while its runner
    here was dead. Before its slot is freed or reused here: end the whole process group of its
    Terraform (provisioner commands still running), then, for an apply, move the slot's work
    directory aside, where `iacctl state save-partial` stores the partial state it holds. What
    was done and where the directory is kept (None if it is not), or None if the task was not
    one of these."""
    with app.store.read() as session:
        task = repo.get_task(session, task_id)
        ws = repo.workspace_by_id(session, task.workspace_id)
        place = repo.slot_place(session, task.slot_id)
    if not left_here(task) or task.child_pid is None:
        return None
    binary = ws.terraform_bin or (product() if ws.terraform_version else "terraform")
    local.stop_orphan(task.child_pid, Path(binary).name, grace_seconds=_LEFT_HERE_GRACE_S)
    local.end_group(task.child_pid, grace_seconds=1.0)
    done = [f"stopped what was left of its Terraform (process group {task.child_pid})"]
    runtime = app.runtime_for_pool_id(task.pool_id or 0)
    kept = None
    if task.stage in APPLY_TOUCHED and place is not None:
        with app.store.write() as session:
            slot = session.get(Slot, task.slot_id) if task.slot_id is not None else None
            if slot is not None:
                session.refresh(slot, with_for_update=True)  # a task claiming it meanwhile waits
            holder = session.get(Task, slot.task_id) if slot is not None and slot.task_id not in (None, task_id) \
                else None
            # A task that took the slot on this machine since owns its directory now.
            if holder is None or not local.on_this_machine(holder.runner_host):
                kept = runtime.keep_work_dir(place, task_id)
        if kept is not None:
            done.append(f"its work directory is kept at {kept}")
    if task.stage in APPLY_TOUCHED and kept is None:
        done.append("its work directory is gone from this machine: inspect the infrastructure, push a state you "
                    f"trust with `iacctl state push {ws.name}`, then `iacctl workspace unlock {ws.name}`")
    detail = "; ".join(done)
    with app.store.write() as session:
        repo.update_task(session, task_id, child_pid=None)
        repo.release_slot_of(session, task_id)  # kept for this moment by _end_elsewhere
        repo.add_event(session, task_id, "note", None, None, f"on {local.machine()}: {detail}")
    return detail, kept
