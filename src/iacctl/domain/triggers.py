"""Run triggers (SPEC F4): which workspaces follow which, and the rules a trigger obeys. Pure.

A trigger is an edge source -> follower: an apply of the source queues a plan of the follower.
The edges must never close a loop (HCP Terraform does not check this; OTF only refuses a
workspace following itself), a workspace has at most 20 sources (HCP's limit), and a chain of
triggered plans stops after 10 hops, with the reason recorded on the task that would have gone on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MAX_SOURCES = 20
MAX_HOPS = 10


def loop_closed_by(edges: Iterable[tuple[str, str]], source: str, follower: str) -> list[str] | None:
    """The loop that the new edge source -> follower would close, as the workspaces along it
    from the follower back to the follower (['app', 'net', 'app']), or None when it closes none.
    A loop of length 1 is a workspace following itself."""
    if source == follower:
        return [follower, follower]
    followers: dict[str, list[str]] = {}
    for s, f in edges:
        followers.setdefault(s, []).append(f)
    # The new edge closes a loop exactly when the source is already reached from the follower.
    came_from: dict[str, str] = {}
    frontier = [follower]
    seen = {follower}
    while frontier:
        nxt: list[str] = []
        for node in frontier:
            for f in sorted(followers.get(node, ())):
                if f in seen:
                    continue
                seen.add(f)
                came_from[f] = node
                if f == source:
                    path = [source]
                    while path[-1] != follower:
                        path.append(came_from[path[-1]])
                    path.reverse()
                    return [*path, follower]
                nxt.append(f)
        frontier = nxt
    return None


def next_hop(source_hops: int | None) -> int:
    """How many triggers lie between the task a trigger queues and the first apply that was not
    itself triggered: a task queued by hand counts 0."""
    return (source_hops or 0) + 1


def beyond_hop_limit(hop: int) -> bool:
    return hop > MAX_HOPS


def hop_limit_reason(source_workspace: str, source_task: int, hop: int) -> str:
    return (f"run triggers of workspace {source_workspace} not followed after task {source_task}: the chain of "
            f"triggered plans reached {MAX_HOPS} hops (this would be hop {hop}); a longer chain is taken for a "
            "mistake; queue the next plan by hand if it is meant")


def apply_changed(counts: Mapping[str, int | None]) -> bool:
    """--only-if-changed: whether the applied plan changed a resource or an output (E5 counts). A
    plan of moved or imported resources alone changes neither."""
    return any((counts.get(k) or 0) > 0 for k in ("add", "change", "destroy", "replace", "outputs"))


@dataclass(frozen=True)
class Source:
    """One apply that a triggered task follows."""

    task: int
    workspace: str
    hop: int

    def as_dict(self) -> dict[str, object]:
        return {"task": self.task, "workspace": self.workspace, "hop": self.hop}


def merged(sources: list[Source], new: Source) -> list[Source]:
    """A workspace reached again while its triggered plan still waits to start gets that one task
    (HCP Terraform runs it twice): the new source is added to it, once."""
    if any(s.task == new.task for s in sources):
        return sources
    return [*sources, new]


def task_hops(sources: Iterable[Source]) -> int:
    """A task following several applies is as far down the chain as the farthest of them: a
    chain is never made longer than 10 by going round through a merge."""
    return max((s.hop for s in sources), default=0)


def describe(sources: Iterable[Source]) -> str:
    return ", ".join(f"workspace {s.workspace} (task {s.task})" for s in sources)
