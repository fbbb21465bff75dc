"""When each stage of a task ran and for how long (issue 9), read from its history (L7). Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    at: float
    kind: str  # status | stage | note
    to_value: str | None


@dataclass(frozen=True)
class StageTime:
    stage: str
    started_at: float
    seconds: float
    running: bool  # still going: `seconds` is up to now


def stage_times(events: Sequence[Event], *, now: float, running: bool) -> list[StageTime]:
    """A stage lasts from its history row to the next stage or status change (a plan's last
    stage ends when it waits for confirmation; the apply's first starts after it)."""
    out = []
    ordered = sorted(enumerate(events), key=lambda pair: (pair[1].at, pair[0]))
    flat = [e for _, e in ordered]
    for i, event in enumerate(flat):
        if event.kind != "stage" or event.to_value is None:
            continue
        end = next((e.at for e in flat[i + 1:] if e.kind in ("stage", "status")), None)
        if end is None:
            out.append(StageTime(event.to_value, event.at, max(0.0, now - event.at), running))
        else:
            out.append(StageTime(event.to_value, event.at, max(0.0, end - event.at), False))
    return out


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {rest:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"
