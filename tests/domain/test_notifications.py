"""Pure rules of follow-ups (SPEC F1, F3): every status change's event and its HCP Terraform
names, what an HTTP answer means, the retry schedule with jitter and Retry-After."""

from __future__ import annotations

import email.utils

import pytest

from iacctl.domain.lifecycle import ALLOWED, Status
from iacctl.domain.notifications import (
    GIVE_UP_AFTER_S,
    HCP,
    Event,
    Outcome,
    backoff,
    event_of,
    next_attempt_at,
    outcome_of,
    parse_events,
    parse_retry_after,
)


def test_every_allowed_status_change_is_an_event_or_deliberately_none() -> None:
    seen = {}
    for current, targets in ALLOWED.items():
        for target in targets:
            seen[(current, target)] = event_of(current, target)
    assert seen[(Status.PENDING, Status.RUNNING)] == Event.PLANNING
    assert seen[(Status.APPLY_PENDING, Status.RUNNING)] == Event.APPLYING
    assert seen[(Status.RUNNING, Status.APPLY_PENDING)] == Event.NEEDS_CONFIRMATION
    assert seen[(Status.RUNNING, Status.APPLIED)] == Event.APPLIED
    assert seen[(Status.APPLIED_STATE_ERROR, Status.APPLIED)] == Event.APPLIED
    assert seen[(Status.RUNNING, Status.APPLIED_STATE_ERROR)] == Event.FAILED
    assert seen[(Status.RUNNING, Status.PLANNED_AND_FINISHED)] == Event.PLANNED
    assert {seen[(s, Status.FAILED)] for s in (Status.PENDING, Status.RUNNING, Status.APPLY_PENDING)} == {Event.FAILED}
    assert {seen[(s, Status.CANCELLED)] for s in (Status.PENDING, Status.RUNNING, Status.APPLY_PENDING)} == \
        {Event.CANCELLED}
    # S5: going back to pending to plan again is not "created"; the planning that follows is an event.
    # Issue 10: a task whose pod went before Terraform started goes back to be placed again; its
    # next start is the event.
    back = {(Status.APPLY_PENDING, Status.PENDING), (Status.RUNNING, Status.PENDING)}
    assert {seen[k] for k in back} == {None}
    assert event_of(None, Status.PENDING) == Event.CREATED
    assert all(v is not None for k, v in seen.items() if k not in back)


def test_triggers_and_run_statuses_are_named_as_hcp_terraform_names_them() -> None:
    assert {e.value: (HCP[e].trigger, HCP[e].run_status) for e in Event} == {
        "created": ("run:created", "pending"),
        "planning": ("run:planning", "planning"),
        "needs_confirmation": ("run:needs_attention", "planned"),
        "applying": ("run:applying", "applying"),
        "applied": ("run:completed", "applied"),
        "planned": ("run:completed", "planned_and_finished"),
        "failed": ("run:errored", "errored"),
        "cancelled": ("run:errored", "canceled"),  # as HCP sends a cancelled run
        "drift_detected": ("assessment:drifted", "drifted"),
    }


def test_events_option_is_checked() -> None:
    assert parse_events("failed, applied,failed") == [Event.FAILED, Event.APPLIED]
    with pytest.raises(ValueError, match="unknown event 'done'"):
        parse_events("applied,done")
    with pytest.raises(ValueError, match="at least one"):
        parse_events(" , ")


@pytest.mark.parametrize(("code", "outcome"), [
    (200, Outcome.DELIVERED), (204, Outcome.DELIVERED), (None, Outcome.RETRY), (408, Outcome.RETRY),
    (425, Outcome.RETRY), (429, Outcome.RETRY), (500, Outcome.RETRY), (503, Outcome.RETRY), (400, Outcome.REJECTED),
    (401, Outcome.REJECTED), (404, Outcome.REJECTED), (410, Outcome.REJECTED), (302, Outcome.REJECTED),
])
def test_what_an_answer_means(code: int | None, outcome: Outcome) -> None:
    assert outcome_of(code) == outcome


def test_backoff_is_about_30s_2m_10m_30m_1h_then_hourly_with_jitter() -> None:
    assert [backoff(n, 0.0) for n in range(1, 9)] == [30, 120, 600, 1800, 3600, 3600, 3600, 3600]
    assert backoff(1, -1.0) == pytest.approx(24.0) and backoff(1, 1.0) == pytest.approx(36.0)
    assert backoff(2, 5.0) == pytest.approx(144.0)  # jitter is bounded
    # With hourly retries after the fifth, a day holds about 23 more attempts before the entry is dead.
    total, n = 0.0, 0
    while total + backoff(n + 1, 0.0) <= GIVE_UP_AFTER_S:
        n += 1
        total += backoff(n, 0.0)
    assert 25 <= n <= 28


def test_retry_after_is_honoured_in_seconds_or_as_a_date() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("7", now) == 7
    assert parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), now) == pytest.approx(90, abs=1)
    assert parse_retry_after("999999", now) == 3600  # at most an hour
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None
    assert next_attempt_at(1, now, 0.0, 7.0) == now + 7
    assert next_attempt_at(3, now, 0.0, None) == now + 600
