"""Drift as pure rules (SPEC F5, issue 12 item 2): what a refresh-only plan says drifted, the
fingerprint that tells a new or changed drifted set from the one already recorded, and which
workspaces a drift check leaves alone. No I/O.

Only attribute *names* are kept, never values: a drifted value can be a secret (X2), and what
a person needs from a drift record is which resource and which of its attributes changed
outside Terraform; `iacctl tasks plan ID` shows the values (masked) from the saved plan.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Terraform's words for a drifted object in resource_drift[].change.actions.
DELETED = "deleted"  # the object is gone outside Terraform
UPDATED = "updated"  # some of its attributes changed outside Terraform


@dataclass(frozen=True)
class DriftedResource:
    address: str
    change: str  # updated | deleted
    attributes: tuple[str, ...] = ()  # names of the top-level attributes that differ

    def as_json(self) -> dict[str, Any]:
        return {"address": self.address, "change": self.change, "attributes": list(self.attributes)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DriftedResource:
        return cls(str(doc["address"]), str(doc["change"]), tuple(str(a) for a in doc.get("attributes") or ()))

    def said(self) -> str:
        if self.change == DELETED:
            return f"{self.address}: deleted outside Terraform"
        return f"{self.address}: {', '.join(self.attributes) or 'changed'}"


def differing_attributes(before: Any, after: Any) -> tuple[str, ...]:
    """The top-level attribute names whose values differ (a nested block counts as its name)."""
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return ()
    names = set(before) | set(after)
    return tuple(sorted(n for n in names if before.get(n) != after.get(n)))


def parse_resource_drift(plan_json: Mapping[str, Any]) -> list[DriftedResource]:
    """F5: the drifted resources of a plan JSON (`terraform show -json` of a refresh-only plan),
    by address. Terraform lists in `resource_drift` every object whose refreshed value differs
    from the state: an update (attributes changed) or a delete (the object is gone)."""
    out: dict[str, DriftedResource] = {}
    for entry in plan_json.get("resource_drift") or ():
        if not isinstance(entry, Mapping) or "address" not in entry:
            continue
        change = entry.get("change") or {}
        actions = list(change.get("actions") or ())
        address = str(entry["address"])
        if "delete" in actions and change.get("after") is None:
            out[address] = DriftedResource(address, DELETED)
            continue
        attributes = differing_attributes(change.get("before"), change.get("after"))
        if actions == ["no-op"] and not attributes:
            continue
        out[address] = DriftedResource(address, UPDATED, attributes)
    return [out[a] for a in sorted(out)]


def fingerprint(resources: Sequence[DriftedResource]) -> str | None:
    """A stable digest of the drifted set (addresses, kinds of change and attribute names), or
    None when nothing drifted. Two checks seeing the same drift have the same fingerprint, so the
    second sends no notification (issue 12 item 2)."""
    if not resources:
        return None
    doc = sorted((r.address, r.change, sorted(r.attributes)) for r in resources)
    return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()


def notify_drift(previous: str | None, current: str | None) -> bool:
    """F5: a drift notification goes out only when the drifted set is new or changed compared with
    the last recorded check; no drift, or the same drift again, sends nothing."""
    return current is not None and current != previous


# -- which workspaces a check leaves alone ---------------------------------------------------------

BUSY_STATUSES = ("pending", "running", "apply_pending")


@dataclass(frozen=True)
class TaskFacts:
    id: int
    kind: str
    status: str


def skip_reason(workspace: str, live: Sequence[TaskFacts], last_run: TaskFacts | None) -> str | None:
    """Why a drift check leaves the workspace alone, or None to check it (issue 12 item 2).

    Busy: a task of it is pending, running or waiting for confirmation: the state is about to
    change, and a refresh now reports as drift what that task is doing. Last run failed: its last
    plan or apply (drift checks aside: a failed check must not stop the next one) failed, so
    the state may be half-made and its "drift" is that failure; fix the workspace first."""
    if live:
        first = min(live, key=lambda t: t.id)
        return (f"workspace {workspace} is busy: task {first.id} ({first.kind}) is {first.status}; "
                "check it when that task is over")
    if last_run is not None and last_run.status == "failed":
        return (f"workspace {workspace}'s last task {last_run.id} ({last_run.kind}) failed; "
                f"its state may be half-made (iacctl tasks show {last_run.id}); plan it again first")
    return None
