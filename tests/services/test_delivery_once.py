"""Issue 19 items 1 and 2: one delivery per event and destination, the command's budget kept
for every delivery it started, and a failing destination that delays only itself. Real
receivers on 127.0.0.1 (tests/fixtures/receivers.py), the real `iacctl` commands, real Terraform."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from tests.conftest import Env
from tests.fixtures.receivers import Receiver, running_receiver

BUDGET_S = 3.0


def _create(env: Env, receiver: Receiver, name: str, events: str) -> None:
    env.ok("notify", "create", name, "--url", receiver.url, "--events", events)


def _deliveries(env: Env, *args: str) -> list[dict[str, Any]]:
    return env.ok("notify", "deliveries", *args, "--json").json()  # type: ignore[no-any-return]


def test_each_answering_destination_gets_each_event_once_and_a_hanging_one_is_given_up_at_the_budget(
        env: Env) -> None:
    env.workspace("net")
    env.vars["IACCTL_FOLLOW_UP_BUDGET"] = f"{BUDGET_S:g}"
    # One event per command and destination: the 1.5 s receiver answers well within the budget.
    events = "needs_confirmation,applied"
    with running_receiver("slow", delay=0.1) as fast, running_receiver("slow", delay=1.5) as slow, \
            running_receiver("never") as hang:
        _create(env, fast, "fast", events)
        _create(env, slow, "slow", events)
        _create(env, hang, "hang", events)
        lines: list[str] = []
        for i in range(5):  # 10 commands: 5 plans and their confirmations
            env.ok("workspace", "var", "set", "net", "region", f"r{i}")
            plan = env.ok("plan", "net", "-q", code=2)
            confirm = env.ok("confirm-apply", str(i + 1), "-q")
            lines += plan.err.splitlines() + confirm.err.splitlines()
        expected = 5 * 2  # needs_confirmation and applied of 5 tasks
        for receiver in (fast, slow):
            got = receiver.wait_for(expected, timeout=10)
            time.sleep(0.5)
            got = receiver.notifications()
            ids = Counter(g.payload["iacctl"]["event_id"] for g in got)
            assert len(ids) == expected and set(ids.values()) == {1}, ids
        time.sleep(0.5)
        # How long each request to the hanging receiver was held open before iacctl let go.
        held = [r.closed_at - r.at for r in hang.notifications() if r.closed_at is not None]
    # No "not delivered yet" for the destinations that answered; the hanging one is said.
    warnings = [x for x in lines if "not delivered yet" in x]
    assert warnings and all("fast (" not in x and "slow (" not in x for x in warnings), warnings
    assert all("hang (" in x for x in warnings)
    assert any("no answer within the command's budget of 3 s" in x for x in warnings)
    for name in ("fast", "slow"):
        log = _deliveries(env, name)
        assert Counter(d["result"] for d in log) == {"verified": 1, "delivered": expected}, log
    # The hanging receiver is given up at the budget after the command ends, never before (the
    # upper bound is loose: a loaded machine closes the connection a little late, which no user
    # notices; being given up early, as issue 19 saw at 0.4 s, is what must not happen).
    abandoned = [d for d in _deliveries(env, "hang") if d["result"] == "abandoned"]
    assert len(abandoned) >= 10 and len(held) == len(abandoned)
    assert all(BUDGET_S - 0.5 <= s <= BUDGET_S + 3 for s in held), held


def test_a_failing_destination_holds_back_no_later_event_and_the_next_command_sends_its_retry(env: Env) -> None:
    env.workspace("net")
    with running_receiver("script", script=[(503, {})]) as receiver:
        _create(env, receiver, "ops", "planned")
        first = env.run("plan", "net", "--plan-only", "-q")
        assert first.code == 2 and "ops (task 1 planned, entry 1, pending): HTTP 503" in first.err
        # Task 2's event goes at once, not behind task 1's, which waits for its retry (~30 s).
        second = env.run("plan", "net", "--plan-only", "-q")
        assert second.code == 2 and "not delivered yet" not in second.err
        assert [g.payload["run_id"] for g in receiver.wait_for(2)] == ["run-1", "run-2"]
        outbox = env.ok("outbox", "list", "--json").json()
        assert sorted((e["id"], e["status"]) for e in outbox) == [(1, "pending"), (2, "delivered")]
        # A command that only reads sends nothing; the next one that writes sends the due retry:
        # no cron, no `pods recover`.
        _time_passes(env)
        env.ok("workspace", "list")
        assert len(receiver.notifications()) == 2
        env.ok("workspace", "var", "set", "net", "region", "eu-west-3")
        got = receiver.wait_for(3)
    assert [(g.payload["run_id"], g.payload["iacctl"]["attempt"]) for g in got] == [
        ("run-1", 1), ("run-2", 1), ("run-1", 2)]
    # The time in each payload tells the receiver the order the changes happened in.
    times = {g.payload["run_id"]: g.payload["notifications"][0]["run_updated_at"] for g in got}
    assert times["run-1"] < times["run-2"]
    assert {e["status"] for e in env.ok("outbox", "list", "--json").json()} == {"delivered"}


def _time_passes(env: Env) -> None:
    """The clock moves on: every pending entry is due now."""
    from sqlalchemy import update
    from sqlmodel import col

    from iacctl.store.models import OutboxEntry

    app = env.app()
    try:
        with app.store.write() as session:
            session.execute(update(OutboxEntry).where(col(OutboxEntry.status) == "pending").values(next_attempt_at=0))
    finally:
        app.close()
