"""How many pods a pool should have, and which may go (SPEC S3, seed 001 plan D). Pure.

Desired pods = ceil(busy slots / slots per pod) within [min, max], where busy slots are the
running and reserved ones plus the queued tasks that could start if they had a slot (so that
queued work gets a pod). Scale-down removes only pods whose slots are all idle, and only once
they have been idle for the scale-down delay. A frozen pool (S4) wants no pods at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class PodLoad:
    name: str
    busy_slots: int  # running or reserved
    idle_since: float | None  # when its last busy slot became idle; None while busy
    ready: bool = True  # False while being created


def idle_since(busy: bool, slot_changes: list[float], created_at: float) -> float | None:
    """When the pod became idle (issue 10 item 3): when its last slot became idle, which every
    use of a slot moves on (a claim and a release stamp the slot), never an earlier look at
    it; None while a slot is running or reserved. A pod never used is idle since it was made."""
    if busy:
        return None
    return max([created_at, *slot_changes])


def desired_pods(busy_slots: int, waiting_tasks: int, slots_per_pod: int, min_pods: int, max_pods: int,
                 *, frozen: bool = False) -> int:
    if frozen:
        return 0
    need = math.ceil(max(0, busy_slots + waiting_tasks) / max(1, slots_per_pod))
    return max(min_pods, min(max_pods, need))


def pods_to_create(pods: list[PodLoad], desired: int) -> int:
    return max(0, desired - len(pods))


def pods_to_delete(pods: list[PodLoad], desired: int, now: float, scale_down_delay_s: float) -> list[str]:
    """The pods scale-down removes: never one with a running or reserved slot (S3), only pods
    idle for the whole delay, the longest idle first, no more than the surplus over `desired`."""
    surplus = len(pods) - desired
    if surplus <= 0:
        return []
    candidates = sorted(
        (p for p in pods if p.ready and p.busy_slots == 0 and p.idle_since is not None
         and now - p.idle_since >= scale_down_delay_s),
        key=lambda p: (p.idle_since, p.name),
    )
    return [p.name for p in candidates[:surplus]]


WARMUP_READY = "ready"


def warmup_expired(status: str | None, expires_at: float | None, now: float) -> bool:
    """S6: a ready warm-up past its lifetime is prepared again (and counts as demand for a slot)."""
    return status == WARMUP_READY and expires_at is not None and now >= expires_at
