"""What a task's status change does besides changing its status (SPEC L7, E2, E8, C5, F1-F5),
as named effects keyed by the change. `store.repo.transition` applies them, in this order, in
the status change's own transaction; nobody else decides them.

A pure rule: no store, no Terraform. The order matters: slots and lock are settled before the
follow-ups are written, so that a notification never announces a task that still holds them.
"""

from __future__ import annotations

from enum import StrEnum

from iacctl.domain.lifecycle import Status, is_terminal


class Effect(StrEnum):
    TAKE_LOCK = "take_lock"  # L5: a plan waiting for confirmation holds its workspace's lock
    RESERVE_SLOT = "reserve_slot"  # S2, E6: its slot stays reserved, with the plan's work directory
    USE_RESERVED_SLOT = "use_reserved_slot"  # E6: the confirmed apply runs in the reserved slot
    LOCK_FOR_APPLY = "lock_for_apply"  # L5: the lock's reason says the task is applying
    FREE_SLOTS = "free_slots"  # E2: every slot the task holds, running or reserved, becomes idle
    KEEP_LOCK = "keep_lock"  # S5, E8: the workspace stays locked, with the reason an operator reads
    RELEASE_LOCK = "release_lock"  # L5: the workspace lock the task holds is released
    END_RUN_TASK_RESULTS = "end_run_task_results"  # C5: results still waiting end, their tokens revoked
    CLEAR_DRIFT = "clear_drift"  # F5: an apply clears the drift recorded before its plan
    NOTIFY = "notify"  # F1, F3: the outbox entries of the event this change is
    APPLY_FOLLOW_UPS = "apply_follow_ups"  # F2, F4: the apply's inventory sync and run triggers


def gives_back(target: Status) -> bool:
    """Whether a change to `target` gives back what the task held (slots and lock): it ends, or
    it goes back to be planned again (S5)."""
    return is_terminal(target) or target == Status.PENDING


def touches_lock(expected: Status, target: Status) -> bool:
    """Whether the change takes the workspace lock or changes its reason (not only at the end)."""
    return (expected, target) in ((Status.RUNNING, Status.APPLY_PENDING), (Status.APPLY_PENDING, Status.RUNNING))


def effects(expected: Status, target: Status, *, keep_lock: bool = False,
            keep_slot: bool = False) -> tuple[Effect, ...]:
    """The effects of the change `expected` -> `target`, in the order they are applied.

    `keep_lock`: the caller gives a reason the lock must stay (a pod lost while applying, an
    apply cancelled part-way); applied_state_error always keeps it (E8: the state is not stored).
    `keep_slot`: the task's Terraform may still run in its slot on another machine, whose sweep
    frees the slot once it has saved what is there (issue 18 item 3)."""
    done: list[Effect] = []
    if (expected, target) == (Status.RUNNING, Status.APPLY_PENDING):
        done += [Effect.TAKE_LOCK, Effect.RESERVE_SLOT]
    if (expected, target) == (Status.APPLY_PENDING, Status.RUNNING):
        done += [Effect.USE_RESERVED_SLOT, Effect.LOCK_FOR_APPLY]
    if gives_back(target):
        if not keep_slot:
            done.append(Effect.FREE_SLOTS)
        keeps = keep_lock or target == Status.APPLIED_STATE_ERROR
        done.append(Effect.KEEP_LOCK if keeps else Effect.RELEASE_LOCK)
    if is_terminal(target):
        done.append(Effect.END_RUN_TASK_RESULTS)
    if target == Status.APPLIED:
        done.append(Effect.CLEAR_DRIFT)
    done.append(Effect.NOTIFY)
    if target == Status.APPLIED:
        done.append(Effect.APPLY_FOLLOW_UPS)
    return tuple(done)


def kept_lock_reason(task_id: int, target: Status, given: str | None) -> str | None:
    """The reason the lock stays, as the operator reads it; None when it is released."""
    if given is not None:
        return given
    if target == Status.APPLIED_STATE_ERROR:
        return f"task {task_id} applied but its state is not stored"
    return None
