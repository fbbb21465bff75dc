"""A task's review (issue 9, issue 24): the facts a reviewer needs before confirming, in one
typed value that each face renders (the terminal's table, the pull request's Markdown). Pure.

HCP Terraform, Spacelift and Atlantis show the same things in a run's page or a pull request
comment: who planned and why, the counts, every change with destroys up front, the checks that
ran, Terraform's own plan text, and how to apply or discard it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from iacctl.domain.plans import ChangeCounts, ResourceChange

# Issue 24: what a reviewer must not miss comes first: what the plan destroys.
_FIRST = {"delete": 0, "replace": 1}


@dataclass(frozen=True)
class RunTaskOutcome:
    name: str
    stage: str
    status: str  # passed | failed | errored | pending | running | unreachable ...
    enforcement: str
    summary: str  # the line `tasks show` prints for it


@dataclass(frozen=True)
class Review:
    task: int
    workspace: str
    kind: str  # plan_and_apply | plan | drift_check
    status: str
    stage: str | None
    error: str | None
    plan_hash: str | None  # None: no plan saved (it failed or was cancelled before)
    planned_at: str | None
    created_by: str | None  # who planned, as `tasks show` says it
    message: str | None  # why, as they said it (--message)
    confirmed_by: str | None
    cancelled_by: str | None
    counts: ChangeCounts | None
    moves: int
    changes: tuple[ResourceChange, ...]
    drift: tuple[ResourceChange, ...]
    run_tasks: tuple[RunTaskOutcome, ...]
    plan_text: tuple[str, ...]  # Terraform's own plan output, redacted (X2)

    @property
    def reads(self) -> int:
        return sum(1 for c in self.changes if c.action == "read")

    @property
    def waits_for_confirmation(self) -> bool:
        return self.status == "apply_pending"


def destroys_first(changes: Iterable[ResourceChange]) -> list[ResourceChange]:
    """Issue 24: destroys, then replacements, then the rest, each group in Terraform's order."""
    return sorted(changes, key=lambda c: _FIRST.get(c.action, 2))


def is_destructive(change: ResourceChange) -> bool:
    return change.action in _FIRST


# Refresh chatter: one line per resource of the state, nothing a reviewer reads (Atlantis leaves
# it out of its comments too). Whatever follows it, the plan itself, stays whole.
_CHATTER = re.compile(r"^\S.*: (Refreshing state\.\.\.|Reading\.\.\.|Read complete after .*)( \[.*\])?$")


def plan_text(lines: Iterable[str]) -> tuple[str, ...]:
    """Terraform's plan output as a reviewer reads it: iacctl's own notes and refresh chatter
    left out, and no blank lines at either end."""
    kept = [line for line in lines if not line.startswith("iacctl: ") and not _CHATTER.match(line)]
    while kept and not kept[0].strip():
        kept.pop(0)
    while kept and not kept[-1].strip():
        kept.pop()
    return tuple(kept)
