"""Run-trigger rules (SPEC F4), pure: loops of any length, hop counting, merging sources."""

from __future__ import annotations

import itertools

from iacctl.domain.triggers import (
    MAX_HOPS,
    Source,
    apply_changed,
    beyond_hop_limit,
    describe,
    loop_closed_by,
    merged,
    next_hop,
    task_hops,
)


def test_a_workspace_following_itself_is_a_loop_of_one() -> None:
    assert loop_closed_by([], "app", "app") == ["app", "app"]


def test_loops_of_two_and_three_are_found_with_their_path() -> None:
    # net -> app exists (app follows net); net following app closes net -> app -> net.
    assert loop_closed_by([("net", "app")], "app", "net") == ["net", "app", "net"]
    edges = [("a", "b"), ("b", "c")]
    assert loop_closed_by(edges, "c", "a") == ["a", "b", "c", "a"]


def test_a_long_loop_is_found() -> None:
    names = [f"w{i}" for i in range(30)]
    edges = list(itertools.pairwise(names))
    assert loop_closed_by(edges, names[-1], names[0]) == [*names, names[0]]


def test_a_diamond_is_not_a_loop() -> None:
    edges = [("a", "b"), ("a", "c"), ("b", "d")]
    assert loop_closed_by(edges, "c", "d") is None
    assert loop_closed_by([*edges, ("c", "d")], "a", "e") is None
    # ... but d feeding a back would be.
    assert loop_closed_by([*edges, ("c", "d")], "d", "a") == ["a", "b", "d", "a"]


def test_hops_count_from_the_apply_queued_by_hand() -> None:
    assert next_hop(None) == 1
    assert next_hop(3) == 4
    assert not beyond_hop_limit(MAX_HOPS) and beyond_hop_limit(MAX_HOPS + 1)
    chain = [None, *range(1, 12)]
    stopped = [h for h in chain if beyond_hop_limit(next_hop(h))]
    assert stopped[0] == MAX_HOPS  # the task 10 hops down queues no 11th


def test_only_if_changed_reads_resources_and_outputs() -> None:
    assert not apply_changed({"add": 0, "change": 0, "destroy": 0, "replace": 0, "outputs": 0})
    assert not apply_changed({"add": None, "change": None})  # counts unknown: nothing known changed
    assert apply_changed({"outputs": 1})
    assert apply_changed({"replace": 2})


def test_a_second_source_joins_the_waiting_task_once() -> None:
    b = Source(5, "b", 2)
    c = Source(6, "c", 3)
    once = merged([b], c)
    assert once == [b, c]
    assert merged(once, c) == once  # the same entry handled twice adds nothing
    assert task_hops(once) == 3
    assert describe(once) == "workspace b (task 5), workspace c (task 6)"
