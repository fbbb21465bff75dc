"""The one admission rule (issue "Nothing waits forever", items 1, 2, 3, 6): who may start, and if
not, what it waits for and the way out. A table over every reason; no store, no Terraform."""

from __future__ import annotations

import time

import pytest

from iacctl.domain.admission import (
    APPLY,
    AdmissionFacts,
    Blocker,
    LiveTask,
    PoolFacts,
    SlotUse,
    admit,
    clock,
    plan_expired,
)

NOW = 1_900_000_000.0
LOCAL = PoolFacts(name="local", backend="local", slots_per_pod=3, max_pods=1, live_pods=1, idle_slots=3)
KUBE = PoolFacts(name="k8s", backend="kubernetes", slots_per_pod=2, max_pods=2, live_pods=1, idle_slots=1,
                 uses=(SlotUse(7, "running", "running"),))


def facts(**kw: object) -> AdmissionFacts:
    base: dict[str, object] = {"task_id": 20, "kind": "plan_and_apply", "workspace": "net", "pool": LOCAL}
    base.update(kw)
    return AdmissionFacts(**base)  # type: ignore[arg-type]


def uses(*states: tuple[int, str]) -> tuple[SlotUse, ...]:
    return tuple(SlotUse(i, "apply_pending" if s == "reserved" else "running", s) for i, s in states)


CASES = [
    # (name, facts, blocker or None to start, words the message must hold)
    ("free local pool", facts(), None, ()),
    ("turn taken by a plan waiting for confirmation",
     facts(others=(LiveTask(19, "apply_pending", NOW - 60, planned_at=NOW - 60),)), Blocker.TURN_TAKEN,
     ("task 19 (apply_pending since ", "holds workspace net", "iacctl confirm-apply 19", "iacctl cancel 19")),
    ("turn taken by a running task", facts(others=(LiveTask(19, "running", NOW - 5),)), Blocker.TURN_TAKEN,
     ("task 19 (running since ", "iacctl cancel 19")),
    ("an older queued task goes first", facts(others=(LiveTask(18, "pending", NOW - 5),)), Blocker.TURN_TAKEN,
     ("task 18 (queued since ", "ahead of it in workspace net")),
    ("a younger queued task does not block", facts(others=(LiveTask(21, "pending", NOW),)), None, ()),
    ("an expired plan holding the turn is discarded",
     facts(others=(LiveTask(19, "apply_pending", NOW - 90, planned_at=NOW - 90),), plan_lifetime_s=60.0),
     Blocker.PLAN_EXPIRED, ("task 19's plan expired after 1m",)),
    ("a confirmed plan never expires under its apply",
     facts(others=(LiveTask(19, "apply_pending", NOW - 90, planned_at=NOW - 90, confirmed=True),),
           plan_lifetime_s=60.0), Blocker.TURN_TAKEN, ("task 19",)),
    ("lock held by an operator", facts(lock_holder="user ana", lock_reason="maintenance"), Blocker.LOCK_HELD,
     ("locked by user ana (maintenance)", "iacctl workspace unlock net")),
    ("its own lock does not block", facts(lock_task_id=20, lock_holder="task 20"), None, ()),
    ("a speculative plan ignores turn and lock",
     facts(kind="plan", others=(LiveTask(19, "running", NOW),), lock_holder="user ana"), None, ()),
    ("frozen pool", facts(pool=PoolFacts("k8s", "kubernetes", 2, 2, 1, 1, freeze_windows=((NOW - 10, NOW + 3600),))),
     Blocker.FROZEN, ("pool k8s is frozen until ", "iacctl pool unfreeze k8s")),
    ("a freeze window that ended", facts(pool=PoolFacts("k8s", "kubernetes", 2, 2, 1, 1,
                                                        freeze_windows=((NOW - 10, NOW - 1),))), None, ()),
    ("local: all running places in use",
     facts(pool=PoolFacts("local", "local", 3, 1, 1, 0, uses=uses((4, "running"), (5, "running"), (6, "running")))),
     Blocker.NO_CAPACITY, ("all 3 running places of pool local are in use (tasks 4, 5, 6)",
                           "--slots-per-pod N")),
    ("local: 20 plans waiting for confirmation take no running place",
     facts(pool=PoolFacts("local", "local", 3, 1, 1, 0, uses=uses(*[(i, "reserved") for i in range(1, 21)]))),
     None, ()),
    ("kubernetes: no idle slot, the pool may grow",
     facts(pool=PoolFacts("k8s", "kubernetes", 2, 3, 1, 0, uses=uses((1, "running"), (2, "reserved")))),
     Blocker.NO_CAPACITY, ("no free slot in pool k8s; a pod is added for it (1 of at most 3)",)),
    ("kubernetes at its maximum, slots held by reserved plans",
     facts(pool=PoolFacts("k8s", "kubernetes", 2, 1, 1, 0, uses=uses((3, "reserved"), (4, "reserved")))),
     Blocker.RESERVED_CAPACITY, ("at its maximum of 1 pod(s)", "waiting for confirmation: tasks 3, 4",
                                 "iacctl confirm-apply 3", "iacctl cancel 3", "--max-pods")),
    ("kubernetes at its maximum, slots running",
     facts(pool=PoolFacts("k8s", "kubernetes", 1, 1, 1, 0, uses=uses((3, "running")))),
     Blocker.NO_CAPACITY, ("running: task 3", "a running task ends", "--max-pods")),
    ("kubernetes with an idle slot", facts(pool=KUBE), None, ()),
]


@pytest.mark.parametrize(("name", "case", "blocker", "words"), CASES, ids=[c[0] for c in CASES])
def test_admission(name: str, case: AdmissionFacts, blocker: Blocker | None, words: tuple[str, ...]) -> None:
    decision = admit(case, NOW)
    assert decision.start is (blocker is None), decision
    assert decision.blocker == blocker
    for word in words:
        assert word in (decision.waiting_for or ""), (word, decision.waiting_for)
    if blocker is Blocker.PLAN_EXPIRED:
        assert decision.expired_task == 19
    if blocker is not None:
        # Durations in human units, never fractions of an hour.
        assert " h)" not in (decision.waiting_for or "")


def test_the_turn_holder_is_named_before_the_lock_it_holds() -> None:
    case = facts(others=(LiveTask(19, "apply_pending", NOW, planned_at=NOW),), lock_task_id=19,
                 lock_holder="task 19", lock_reason="task 19 waits for confirm-apply")
    assert admit(case, NOW).blocker is Blocker.TURN_TAKEN


def test_a_running_task_goes_before_an_older_queued_one() -> None:
    case = facts(others=(LiveTask(15, "pending", NOW), LiveTask(19, "running", NOW)))
    assert "task 19 (running" in (admit(case, NOW).waiting_for or "")


def test_a_confirmed_apply_on_the_local_pool_needs_a_running_place() -> None:
    full = PoolFacts("local", "local", 1, 1, 1, 0, uses=uses((4, "running"), (20, "reserved")))
    assert admit(facts(pool=full, wants=APPLY), NOW).blocker is Blocker.NO_CAPACITY
    free = PoolFacts("local", "local", 1, 1, 1, 0, uses=uses((20, "reserved")))
    assert admit(facts(pool=free, wants=APPLY), NOW).start
    # Its own turn and lock are its own: an apply is not blocked by them.
    mine = facts(pool=free, wants=APPLY, lock_task_id=20, others=(LiveTask(18, "pending", NOW),))
    assert admit(mine, NOW).start


def test_a_confirmed_apply_on_kubernetes_uses_its_reserved_slot() -> None:
    full = PoolFacts("k8s", "kubernetes", 1, 1, 1, 0, uses=uses((20, "reserved")))
    assert admit(facts(pool=full, wants=APPLY), NOW).start


def test_plan_expiry() -> None:
    assert plan_expired(None, 60, NOW)
    assert plan_expired(NOW - 61, 60, NOW)
    assert not plan_expired(NOW - 59, 60, NOW)


def test_clock_is_a_time_of_day() -> None:
    assert clock(NOW) == time.strftime("%H:%M", time.localtime(NOW))


def test_a_plans_lifetime_is_the_workspaces_else_the_pools_else_a_day() -> None:
    from iacctl.domain.admission import DEFAULT_PLAN_LIFETIME_S, plan_lifetime

    assert plan_lifetime(600.0, 3600.0) == 600.0
    assert plan_lifetime(None, 3600.0) == 3600.0
    assert plan_lifetime(None, None) == DEFAULT_PLAN_LIFETIME_S == 86400.0
