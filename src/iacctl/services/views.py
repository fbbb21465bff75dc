"""Records as plain dicts for the CLI (tables and --json). No secrets ever go in (X2)."""

from __future__ import annotations

import time


def iso(t: float | None) -> str | None:
    """UTC, to the second: 2026-11-22T16:42:42Z. (time.strftime is several times faster than
    datetime here, which matters for a 10,000-task listing.)"""
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
