"""Follow-ups and notifications as pure rules (SPEC F1, F3, E2): which status change is which
event, how HCP Terraform names it, what an HTTP answer means for an outbox entry, and when the
next attempt is due. No I/O, no clock: callers pass the time and the random jitter.
"""

from __future__ import annotations

import email.utils
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from iacctl.domain.lifecycle import Status


class Event(StrEnum):
    """A task event of a workspace that a destination can subscribe to (F3)."""

    CREATED = "created"
    PLANNING = "planning"
    NEEDS_CONFIRMATION = "needs_confirmation"
    APPLYING = "applying"
    APPLIED = "applied"
    # A task that ended planned_and_finished (no changes, or a speculative plan): HCP Terraform
    # sends run:completed for it too, so receivers written for HCP expect it.
    PLANNED = "planned"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # F5: a drift check found a drifted set that is new or changed since the last check.
    DRIFT_DETECTED = "drift_detected"


@dataclass(frozen=True)
class HcpNaming:
    trigger: str
    run_status: str
    message: str


# F3: the triggers, run statuses and messages HCP Terraform sends for the same moment of a run. A
# cancelled run is run:errored with run_status "canceled", as HCP sends it.
HCP: dict[Event, HcpNaming] = {
    Event.CREATED: HcpNaming("run:created", "pending", "Run Created"),
    Event.PLANNING: HcpNaming("run:planning", "planning", "Run Planning"),
    Event.NEEDS_CONFIRMATION: HcpNaming("run:needs_attention", "planned", "Run Needs Attention"),
    Event.APPLYING: HcpNaming("run:applying", "applying", "Run Applying"),
    Event.APPLIED: HcpNaming("run:completed", "applied", "Run Applied"),
    Event.PLANNED: HcpNaming("run:completed", "planned_and_finished", "Run Planned and Finished"),
    Event.FAILED: HcpNaming("run:errored", "errored", "Run Errored"),
    Event.CANCELLED: HcpNaming("run:errored", "canceled", "Run Canceled"),
    Event.DRIFT_DETECTED: HcpNaming("assessment:drifted", "drifted", "Drift Detected"),
}
VERIFICATION_TRIGGER = "verification"


@dataclass(frozen=True)
class Facts:
    """A task at the moment of its event, as the outbox entry recorded it."""

    event: Event
    task_id: int
    task_kind: str
    status: str
    workspace_id: int
    workspace_name: str
    created_at: float
    updated_at: float
    actor: str
    plan_hash: str | None = None
    changes: dict[str, int] | None = None
    error: str | None = None
    # F5: a drift_detected event's drifted resources (address, change, attribute names; no values).
    drift: list[dict[str, Any]] | None = None
    # Issue 19 item 7: the task's --message, HCP's run message.
    message: str | None = None

    def as_json(self) -> str:
        return json.dumps({**self.__dict__, "event": self.event.value}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Facts:
        doc = json.loads(text)
        doc["event"] = Event(doc["event"])
        return cls(**doc)


def event_of(previous: Status | None, target: Status) -> Event | None:
    """The event a status change is, or None (a re-plan going back to pending is none: the
    planning that follows is). `previous` None is the task's creation."""
    if target == Status.PENDING:
        return Event.CREATED if previous is None else None
    if target == Status.RUNNING:
        return Event.APPLYING if previous == Status.APPLY_PENDING else Event.PLANNING
    return {
        Status.APPLY_PENDING: Event.NEEDS_CONFIRMATION,
        Status.APPLIED: Event.APPLIED,
        Status.PLANNED_AND_FINISHED: Event.PLANNED,
        Status.FAILED: Event.FAILED,
        # E8: the apply worked but its state is not stored: someone must act, as on a failure.
        Status.APPLIED_STATE_ERROR: Event.FAILED,
        Status.CANCELLED: Event.CANCELLED,
    }.get(target)


def sent_for(task_kind: str, event: Event) -> bool:
    """Whether a task of this kind sends this event. A drift check (F5) is no run a person
    started: it says only what it found (drift_detected, written when it records the drift) and
    that it failed; a nightly `drift check --all` never sends created/planning/planned for every
    workspace."""
    if task_kind == "drift_check":
        return event in (Event.DRIFT_DETECTED, Event.FAILED)
    return True


def parse_events(text: str) -> list[Event]:
    """`--events a,b,c`: known names, no duplicates, at least one. ValueError says which is wrong."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("give at least one event")
    out: list[Event] = []
    for name in names:
        try:
            event = Event(name)
        except ValueError:
            known = ", ".join(e.value for e in Event)
            raise ValueError(f"unknown event {name!r} (events: {known})") from None
        if event not in out:
            out.append(event)
    return out


# -- delivery outcomes (F1, F3) ------------------------------------------------------------------

# Answers worth another try: the receiver is busy or broken for now, not refusing the request.
RETRYABLE_CODES = frozenset({408, 425, 429})


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # try again later (connection error, timeout, 408/425/429, 5xx)
    REJECTED = "rejected"  # a permanent failure of the entry (any other 4xx, a redirect)


def outcome_of(http_status: int | None) -> Outcome:
    """What an attempt's answer means; None is no answer at all (connection error, timeout)."""
    if http_status is None:
        return Outcome.RETRY
    if 200 <= http_status < 300:
        return Outcome.DELIVERED
    if http_status in RETRYABLE_CODES or http_status >= 500:
        return Outcome.RETRY
    return Outcome.REJECTED


# F1: about 30 s, 2 m, 10 m, 30 m, 1 h, then hourly until the entry is a day old.
BACKOFF_S = (30.0, 120.0, 600.0, 1800.0, 3600.0)
HOURLY_S = 3600.0
GIVE_UP_AFTER_S = 86400.0
JITTER = 0.2  # +-20 %, so that entries failed together do not come back together
RETRY_AFTER_MAX_S = 3600.0


def backoff(attempts: int, jitter: float) -> float:
    """Seconds before the next attempt after `attempts` failed ones (1 = the first failed);
    `jitter` is a random number in [-1, 1]."""
    base = BACKOFF_S[attempts - 1] if 1 <= attempts <= len(BACKOFF_S) else HOURLY_S
    return base * (1.0 + JITTER * max(-1.0, min(1.0, jitter)))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds the receiver asked us to wait (Retry-After: seconds or an HTTP date), within
    [0, 1 h]; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - now
    return max(0.0, min(RETRY_AFTER_MAX_S, seconds))


def next_attempt_at(attempts: int, now: float, jitter: float, retry_after: float | None) -> float:
    """When a failed entry is tried again: the receiver's Retry-After when it gave one, else the
    backoff schedule."""
    if retry_after is not None:
        return now + retry_after
    return now + backoff(attempts, jitter)
