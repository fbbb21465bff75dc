"""What handling one run-trigger or inventory outbox entry did (SPEC F1), shared by their
handlers and the outbox that calls them. Lowest of the services: no store access here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Handled:
    result: str  # delivered | retry | dismissed | late
    detail: str
    next_attempt_at: float | None = None
    queued: tuple[int, ...] = ()  # F4: the tasks a run trigger queued


class ClaimLost(Exception):
    """The entry's claim was taken over while it was handled (its lease ran out): what the
    handler wrote is rolled back; the new claimer does it."""
