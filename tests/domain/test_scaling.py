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


def test_a_pod_is_idle_from_the_last_release_of_a_slot_never_from_an_earlier_look() -> None:
    """Issue 10 item 3: any use of a slot (claimed or released at 100.0) moves the start of
    the idle time on; a busy pod is not idle; a pod never used is idle since it was made."""
    from iacctl.domain.scaling import idle_since

    assert idle_since(False, [10.0, 100.0, 40.0], created_at=5.0) == 100.0
    assert idle_since(True, [10.0, 100.0], created_at=5.0) is None
    assert idle_since(False, [], created_at=5.0) == 5.0
    # With a 6 s delay, a pod whose task ended 0.7 s ago is not scaled down.
    pod = PodLoad("p", 0, idle_since(False, [99.3], created_at=0.0))
    assert pods_to_delete([pod], desired=0, now=100.0, scale_down_delay_s=6.0) == []
    assert pods_to_delete([pod], desired=0, now=105.4, scale_down_delay_s=6.0) == ["p"]
