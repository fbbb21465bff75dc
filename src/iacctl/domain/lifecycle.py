"""The task lifecycle (SPEC L1-L7): statuses, stages and the one table of allowed transitions.

Pure data and checks. The store's `transition()` is the only code that changes a task's status,
and it asks `check_transition()` first.
"""

from __future__ import annotations

from enum import StrEnum

from iacctl.errors import TransitionRefused


class Status(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    APPLY_PENDING = "apply_pending"
    PLANNED_AND_FINISHED = "planned_and_finished"
    APPLIED = "applied"
    APPLIED_STATE_ERROR = "applied_state_error"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskKind(StrEnum):
    PLAN = "plan"  # speculative: never locks, never applies
    PLAN_AND_APPLY = "plan_and_apply"
    # F5: a refresh-only plan of what the infrastructure is now; speculative like `plan` (never
    # locks, never applies), and its result is recorded on the workspace.
    DRIFT_CHECK = "drift_check"


SPECULATIVE = frozenset({TaskKind.PLAN, TaskKind.DRIFT_CHECK})


class Stage(StrEnum):
    # L2 plan stages
    FETCHING = "fetching"
    INIT = "init"
    PRE_PLAN = "pre_plan"
    PLANNING = "planning"
    SAVING_PLAN = "saving_plan"
    POST_PLAN = "post_plan"
    # L2 apply stages (init again, skippable with the plan's slot, E6)
    RESTORING_PLAN = "restoring_plan"
    PRE_APPLY = "pre_apply"
    APPLYING = "applying"
    SAVING_STATE = "saving_state"
    POST_APPLY = "post_apply"


TERMINAL = frozenset({
    Status.PLANNED_AND_FINISHED, Status.APPLIED, Status.APPLIED_STATE_ERROR, Status.FAILED,
    Status.CANCELLED,
})
ALLOWED: dict[Status, frozenset[Status]] = {
    # E3: a task can fail before it ever runs (workspace gone, no work directory).
    Status.PENDING: frozenset({Status.RUNNING, Status.CANCELLED, Status.FAILED}),
    Status.RUNNING: frozenset({
        Status.PENDING,  # issue 10 item 2: its pod was gone before Terraform started; placed again
        Status.APPLY_PENDING, Status.PLANNED_AND_FINISHED, Status.APPLIED,
        Status.APPLIED_STATE_ERROR, Status.FAILED, Status.CANCELLED,
    }),
    Status.APPLY_PENDING: frozenset({
        Status.RUNNING,  # confirm-apply
        Status.PENDING,  # S5: the plan context is lost; plan again
        Status.CANCELLED,
        Status.FAILED,
    }),
    # E8: the apply worked but its state was not stored; `iacctl state save-applied` stores it.
    Status.APPLIED_STATE_ERROR: frozenset({Status.APPLIED}),
    Status.PLANNED_AND_FINISHED: frozenset(),
    Status.APPLIED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
}


def check_transition(current: Status, target: Status) -> None:
    if target not in ALLOWED[current]:
        raise TransitionRefused(f"a task cannot go from {current} to {target}")


def is_terminal(status: Status) -> bool:
    return status in TERMINAL
