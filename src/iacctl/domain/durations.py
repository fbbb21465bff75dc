"""Durations as people write them: 90s, 15m, 24h, 2d (pool and workspace settings)."""

from __future__ import annotations

import re

from iacctl.errors import UsageError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    m = _DURATION.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"invalid duration {text!r}: use a positive number with s, m, h or d (e.g. 24h)")
    return float(m.group(1)) * _UNIT[m.group(2)]


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def format_age(seconds: float) -> str:
    """How long ago, as people say it: 42s, 3m 12s, 2h 5m, 1d 3h."""
    s = max(0, int(seconds))
    for big, big_size, small, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= big_size:
            rest = (s % big_size) // small_size
            return f"{s // big_size}{big}" + (f" {rest}{small}" if rest else "")
    return f"{s}s"
