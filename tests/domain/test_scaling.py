"""S3 scaling rules and S4 freeze-window parsing (pure functions)."""

from __future__ import annotations

import pytest

from iacctl.domain.freeze import active_window, check_window, parse_instant
from iacctl.domain.scaling import PodLoad, desired_pods, pods_to_create, pods_to_delete
from iacctl.errors import UsageError


@pytest.mark.parametrize(
    ("busy", "waiting", "per_pod", "lo", "hi", "want"),
    [
        (0, 0, 3, 0, 10, 0),
        (1, 0, 3, 0, 10, 1),
        (3, 0, 3, 0, 10, 1),
        (4, 0, 3, 0, 10, 2),
        (2, 2, 3, 0, 10, 2),  # queued tasks that could start count, so they get a pod
        (0, 0, 3, 2, 10, 2),  # min pods
        (40, 0, 3, 0, 10, 10),  # max pods
    ],
)
def test_desired_pods(busy: int, waiting: int, per_pod: int, lo: int, hi: int, want: int) -> None:
    assert desired_pods(busy, waiting, per_pod, lo, hi) == want


def test_a_frozen_pool_wants_no_pods_even_with_reserved_slots() -> None:
    assert desired_pods(5, 1, 3, 2, 10, frozen=True) == 0


def test_scale_down_only_idle_pods_after_the_delay() -> None:
    pods = [
        PodLoad("busy", 1, None),
        PodLoad("idle-long", 0, 100.0),
        PodLoad("idle-short", 0, 990.0),
        PodLoad("reserved", 2, None),
    ]
    # desired 1: three surplus, but only one pod has been idle for the whole delay.
    assert pods_to_delete(pods, 1, now=1000.0, scale_down_delay_s=900.0) == ["idle-long"]
    assert pods_to_delete(pods, 1, now=2000.0, scale_down_delay_s=900.0) == ["idle-long", "idle-short"]
    # Never a pod with a running or reserved slot, whatever the surplus.
    assert pods_to_delete(pods, 0, now=1e9, scale_down_delay_s=0.0) == ["idle-long", "idle-short"]
    assert pods_to_delete(pods, 4, now=1e9, scale_down_delay_s=0.0) == []
    assert pods_to_create(pods, 6) == 2 and pods_to_create(pods, 3) == 0


def test_freeze_window_times() -> None:
    start = parse_instant("2026-12-20T00:00", "--from")
    end = parse_instant("2027-01-04T00:00+00:00", "--until")
    assert end - start == 15 * 86400
    assert parse_instant("2026-12-20", "--from") == start
    check_window(start, end)
    with pytest.raises(UsageError, match="must end after it starts"):
        check_window(end, start)
    with pytest.raises(UsageError, match="invalid --from"):
        parse_instant("next tuesday", "--from")
    assert active_window([(start, end)], start) == (start, end)
    assert active_window([(start, end)], end) is None
