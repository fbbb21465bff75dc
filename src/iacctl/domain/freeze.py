"""Freeze windows (SPEC S4): parsing the times people write, and whether a pool is frozen. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from iacctl.errors import UsageError


def parse_instant(text: str, what: str) -> float:
    """An ISO 8601 date or date-time (2026-12-20T00:00, 2026-12-20, with or without an offset);
    without an offset it is UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"invalid {what} {text!r}: use an ISO date-time such as 2026-12-20T00:00 (UTC)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def check_window(starts_at: float, ends_at: float) -> None:
    if ends_at <= starts_at:
        raise UsageError("a freeze window must end after it starts (--until after --from)")


def active_window(windows: Iterable[tuple[float, float]], now: float) -> tuple[float, float] | None:
    """The window `now` is in (the one ending last when they overlap), or None."""
    current = [(s, e) for s, e in windows if s <= now < e]
    return max(current, key=lambda w: w[1]) if current else None


def format_instant(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
