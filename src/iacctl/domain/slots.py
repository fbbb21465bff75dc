"""Slots and where they live (SPEC S2). Pure."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class SlotPlace:
    """Where a slot's work directory lives: pool, pod and slot number."""

    pool: str
    pod: str
    slot_index: int

    def __str__(self) -> str:
        return f"{self.pool}/{self.pod}/slot-{self.slot_index}"


class SlotState(StrEnum):
    IDLE = "idle"
    RUNNING = "running"  # a task executes in it
    RESERVED = "reserved"  # an apply_pending task's plan context lives in it


class PodStatus(StrEnum):
    CREATING = "creating"  # its row is written before the pod is created (S7: orphans are found)
    READY = "ready"
    LOST = "lost"
