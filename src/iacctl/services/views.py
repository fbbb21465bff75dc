"""Records as plain dicts for the CLI (tables and --json). No secrets ever go in (X2)."""

from __future__ import annotations

import datetime as dt


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, tz=dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
