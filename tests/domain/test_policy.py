"""domain.policy: what each status change of a task does besides changing it, one row per change
the lifecycle allows (no store, no Terraform)."""

from __future__ import annotations

import pytest

from iacctl.domain.lifecycle import ALLOWED, Status
from iacctl.domain.policy import Effect, effects, kept_lock_reason

S = Status
FREE, KEEP, RELEASE = Effect.FREE_SLOTS, Effect.KEEP_LOCK, Effect.RELEASE_LOCK
END, CLEAR, NOTIFY, APPLY = Effect.END_RUN_TASK_RESULTS, Effect.CLEAR_DRIFT, Effect.NOTIFY, Effect.APPLY_FOLLOW_UPS
TAKE, RESERVE, USE, APPLYING = Effect.TAKE_LOCK, Effect.RESERVE_SLOT, Effect.USE_RESERVED_SLOT, Effect.LOCK_FOR_APPLY

# Every change the lifecycle allows, with what it must do (no keep_lock, no keep_slot given).
TABLE: dict[tuple[Status, Status], tuple[Effect, ...]] = {
    (S.PENDING, S.RUNNING): (NOTIFY,),  # its slot and lock are taken by the start itself
    (S.PENDING, S.CANCELLED): (FREE, RELEASE, END, NOTIFY),
    (S.PENDING, S.FAILED): (FREE, RELEASE, END, NOTIFY),
    (S.RUNNING, S.PENDING): (FREE, RELEASE, NOTIFY),  # placed again, its pod gone before Terraform
    (S.RUNNING, S.APPLY_PENDING): (TAKE, RESERVE, NOTIFY),  # L5: never waits without the lock; E6
    (S.RUNNING, S.PLANNED_AND_FINISHED): (FREE, RELEASE, END, NOTIFY),
    (S.RUNNING, S.APPLIED): (FREE, RELEASE, END, CLEAR, NOTIFY, APPLY),
    (S.RUNNING, S.APPLIED_STATE_ERROR): (FREE, KEEP, END, NOTIFY),  # E8: the state is not stored
    (S.RUNNING, S.FAILED): (FREE, RELEASE, END, NOTIFY),
    (S.RUNNING, S.CANCELLED): (FREE, RELEASE, END, NOTIFY),
    (S.APPLY_PENDING, S.RUNNING): (USE, APPLYING, NOTIFY),  # confirm-apply: the reserved slot is the apply's
    (S.APPLY_PENDING, S.PENDING): (FREE, RELEASE, NOTIFY),  # S5: plan again
    (S.APPLY_PENDING, S.CANCELLED): (FREE, RELEASE, END, NOTIFY),
    (S.APPLY_PENDING, S.FAILED): (FREE, RELEASE, END, NOTIFY),
    (S.APPLIED_STATE_ERROR, S.APPLIED): (FREE, RELEASE, END, CLEAR, NOTIFY, APPLY),  # state save-applied
}


def test_the_table_lists_every_change_the_lifecycle_allows() -> None:
    assert set(TABLE) == {(a, b) for a, targets in ALLOWED.items() for b in targets}


@pytest.mark.parametrize(("change", "expected"), sorted(TABLE.items()),
                         ids=[f"{a}->{b}" for a, b in sorted(TABLE)])
def test_each_change_has_its_effects_in_order(change: tuple[Status, Status], expected: tuple[Effect, ...]) -> None:
    assert effects(*change) == expected


def test_a_reason_to_keep_the_lock_keeps_it_and_a_kept_slot_is_not_freed() -> None:
    # A pod lost while applying, an apply cancelled part-way: the caller names why the lock stays.
    assert effects(S.RUNNING, S.CANCELLED, keep_lock=True) == (FREE, KEEP, END, NOTIFY)
    assert kept_lock_reason(7, S.CANCELLED, "task 7's apply was cancelled part-way") == \
        "task 7's apply was cancelled part-way"
    # Issue 18 item 3: an apply ended by another machine's sweep while its Terraform ran here.
    assert effects(S.RUNNING, S.APPLIED_STATE_ERROR, keep_lock=True, keep_slot=True) == (KEEP, END, NOTIFY)
    assert kept_lock_reason(7, S.APPLIED_STATE_ERROR, None) == "task 7 applied but its state is not stored"
    assert kept_lock_reason(7, S.FAILED, None) is None
