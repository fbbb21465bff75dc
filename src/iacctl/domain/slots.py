"""Slots and scaling rules (SPEC S2, S3). Pure."""

from __future__ import annotations

import math
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
    READY = "ready"
    LOST = "lost"


def desired_pods(busy_slots: int, slots_per_pod: int, min_pods: int, max_pods: int) -> int:
    """S3: ceil((running + reserved) / slots per pod), within [min, max]."""
    want = math.ceil(busy_slots / slots_per_pod) if slots_per_pod > 0 else 0
    return max(min_pods, min(max_pods, want))
