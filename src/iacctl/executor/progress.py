"""How the executor tells the person (or CI log) what it is doing (SPEC C4). The CLI implements
this with rich or plain lines; the executor never imports either."""

from __future__ import annotations

from typing import Protocol

from iacctl.domain.lifecycle import Stage


class Reporter(Protocol):
    # Terraform may colour its output (a terminal without NO_COLOR or CI); the stored log never
    # keeps the colour codes.
    color: bool

    def stage(self, task_id: int, stage: Stage) -> None:
        """A stage starts."""

    def line(self, text: str) -> None:
        """A line of Terraform's output (already redacted)."""

    def note(self, text: str) -> None:
        """A message of iacctl's own."""

    def summary(self, text: str) -> None:
        """What the command is about to do, for the person who decides (issue 9: confirm-apply
        restates the plan it applies). Kept apart from a --json document."""


class SilentReporter:
    """For detached runners: everything still goes to the task log."""

    color = False

    def stage(self, task_id: int, stage: Stage) -> None:
        pass

    def line(self, text: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def summary(self, text: str) -> None:
        pass
