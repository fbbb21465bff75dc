"""Records as plain dicts for the CLI (tables and --json). No secrets ever go in (X2)."""

from __future__ import annotations

import json
import time
from typing import Any

from iacctl.domain.drift import DriftedResource


def iso(t: float | None) -> str | None:
    """UTC, to the second: 2026-11-22T16:42:42Z. (time.strftime is several times faster than
    datetime here, which matters for a 10,000-task listing.)"""
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def drifted_resources(text: str | None) -> list[DriftedResource]:
    return [DriftedResource.from_json(d) for d in json.loads(text or "[]")]


def drift_view(row: Any) -> dict[str, Any]:
    """F5: a workspace's drift record (store.models.WorkspaceDrift, or None) as `drift show` and
    `workspace show` give it: attribute names only, never values (X2)."""
    if row is None:
        return {"checked": False, "drifted": False, "task": None, "checked_at": None, "resources": [],
                "cleared_at": None, "cleared_by_task": None}
    resources = [] if row.cleared_at is not None else drifted_resources(row.resources_json)
    return {"checked": True, "drifted": bool(resources), "task": row.task_id, "checked_at": iso(row.checked_at),
            "resources": [r.as_json() for r in resources], "cleared_at": iso(row.cleared_at),
            "cleared_by_task": row.cleared_by_task_id}
