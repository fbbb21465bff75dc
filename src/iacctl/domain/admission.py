"""Who may start, and if not, what it waits for (SPEC L4, L5, L6, S2, S3, S4). Pure.

`admit()` is the one rule. It is fed the facts `repo.admission_facts()` gathers in a few bulk
queries (the workspace's other live tasks, its lock, the pool's freeze windows and slots) and
answers: start now, discard an expired plan that blocks the way, or wait, naming the blocker and
the way out (issue "Nothing waits forever", items 1 and 6). Every caller (a waiting `plan`, a
runner taking the next task, the queue kick, scaling counting demand, `confirm-apply` on the
local pool) asks it; nothing else decides.

Capacity differs by backend. On the embedded `local` pool the slot count limits how many tasks
*run* at once: a task waiting for confirmation keeps its work directory in a reserved slot but
takes no running place, so confirmations left waiting never starve the machine. On Kubernetes
pools a reserved slot holds its place in a pod (S3); the pool scales up for waiting work.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from iacctl.domain.durations import format_duration
from iacctl.domain.freeze import active_window, format_instant

PLAN = "plan"
APPLY = "apply"


class Blocker(StrEnum):
    TURN_TAKEN = "turn_taken"  # another task of the workspace goes first (L4)
    LOCK_HELD = "lock_held"  # someone else holds the workspace lock (L5)
    FROZEN = "frozen"  # the pool is in a freeze window (S4)
    NO_CAPACITY = "no_capacity"  # every running place or slot is in use
    RESERVED_CAPACITY = "reserved_capacity"  # the pool is full, held by plans waiting for confirmation
    PLAN_EXPIRED = "plan_expired"  # the turn is held by a plan past its lifetime: discard it (L6)


DEFAULT_PLAN_LIFETIME_S = 86400.0  # seed 002 M7: a plan waits 24 h for confirmation unless told


@dataclass(frozen=True)
class LiveTask:
    """Another plan_and_apply task of the same workspace that may hold its turn."""

    id: int
    status: str  # running | apply_pending | pending
    since: float  # when it got there: queued, started or planned
    planned_at: float | None = None
    confirmed: bool = False


@dataclass(frozen=True)
class SlotUse:
    """A task holding a slot of the pool."""

    task_id: int
    status: str  # running | apply_pending
    state: str  # running | reserved


@dataclass(frozen=True)
class PoolFacts:
    name: str
    backend: str  # local | kubernetes
    slots_per_pod: int
    max_pods: int
    live_pods: int  # ready or being created
    idle_slots: int  # idle slots of ready pods
    uses: tuple[SlotUse, ...] = ()
    freeze_windows: tuple[tuple[float, float], ...] = ()
    machine: str | None = None  # a local pool's places counted on this machine's pod (issue 18 item 4)

    @property
    def reserved_holds_capacity(self) -> bool:
        return self.backend != "local"

    @property
    def running(self) -> int:
        return sum(1 for u in self.uses if u.state == "running")


@dataclass(frozen=True)
class AdmissionFacts:
    task_id: int
    kind: str  # plan | plan_and_apply
    workspace: str
    pool: PoolFacts
    wants: str = PLAN  # plan: start its stages; apply: a confirmed task takes a running place
    others: tuple[LiveTask, ...] = ()  # the workspace's other live plan_and_apply tasks
    lock_task_id: int | None = None
    lock_holder: str | None = None
    lock_reason: str | None = None
    plan_lifetime_s: float = DEFAULT_PLAN_LIFETIME_S


@dataclass(frozen=True)
class Admission:
    start: bool
    blocker: Blocker | None = None
    waiting_for: str | None = None
    expired_task: int | None = None  # PLAN_EXPIRED: the task to end before deciding again
    can_scale: bool = False  # no capacity, and the pool may add a pod for it (S3)
    holders: tuple[int, ...] = field(default_factory=tuple)


def plan_lifetime(workspace_s: float | None, pool_s: float | None) -> float:
    """L6, M7: how long a plan may wait for confirmation: the workspace's own lifetime, else its
    pool's, else the default. The one home of this rule (issue 22 item 4)."""
    return workspace_s or pool_s or DEFAULT_PLAN_LIFETIME_S


def plan_expired(planned_at: float | None, lifetime_s: float, now: float) -> bool:
    """L6, seed 002 M7: a plan older than its lifetime is never applied."""
    return planned_at is None or now - planned_at > lifetime_s


def admit(facts: AdmissionFacts, now: float) -> Admission:
    """Start the task now, or why not. Order matters: the task holding the turn says more than
    the lock it holds, and a turn or lock problem is not solved by more capacity."""
    if facts.wants == PLAN and facts.kind == "plan_and_apply":
        blocked = _turn(facts, now) or _lock(facts)
        if blocked is not None:
            return blocked
    window = active_window(facts.pool.freeze_windows, now)
    if window is not None:
        return Admission(False, Blocker.FROZEN,
                         f"pool {facts.pool.name} is frozen until {format_instant(window[1])}; it starts when the "
                         f"window ends (or remove the window: iacctl pool unfreeze {facts.pool.name})")
    return _capacity(facts)


def _turn(facts: AdmissionFacts, now: float) -> Admission | None:
    ahead = sorted((t for t in facts.others if t.status != "pending" or t.id < facts.task_id),
                   key=lambda t: (t.status == "pending", t.id))
    if not ahead:
        return None
    first = ahead[0]
    ws = facts.workspace
    if first.status == "apply_pending" and not first.confirmed and plan_expired(
            first.planned_at, facts.plan_lifetime_s, now):
        return Admission(False, Blocker.PLAN_EXPIRED,
                         f"task {first.id}'s plan expired after {format_duration(facts.plan_lifetime_s)}; "
                         "it is discarded", expired_task=first.id, holders=(first.id,))
    since = f"since {clock(first.since)}"
    if first.status == "apply_pending":
        way = (f"task {first.id} (apply_pending {since}) holds workspace {ws}; confirm it "
               f"(iacctl confirm-apply {first.id}) or cancel it (iacctl cancel {first.id})")
    elif first.status == "running":
        way = (f"task {first.id} (running {since}) holds workspace {ws}; it goes on when that task ends, "
               f"or cancel it (iacctl cancel {first.id})")
    else:
        way = (f"task {first.id} (queued {since}) is ahead of it in workspace {ws}; it goes first, "
               f"or cancel it (iacctl cancel {first.id})")
    return Admission(False, Blocker.TURN_TAKEN, way, holders=(first.id,))


def _lock(facts: AdmissionFacts) -> Admission | None:
    if facts.lock_holder is None and facts.lock_task_id is None:
        return None
    if facts.lock_task_id == facts.task_id:
        return None
    holder = facts.lock_holder or f"task {facts.lock_task_id}"
    reason = f" ({facts.lock_reason})" if facts.lock_reason else ""
    return Admission(False, Blocker.LOCK_HELD,
                     f"workspace {facts.workspace} is locked by {holder}{reason}; once that is dealt with, "
                     f"unlock it (iacctl workspace unlock {facts.workspace})",
                     holders=(facts.lock_task_id,) if facts.lock_task_id else ())


def _capacity(facts: AdmissionFacts) -> Admission:
    pool = facts.pool
    if not pool.reserved_holds_capacity:
        # The local pool: a running place, whatever waits for confirmation.
        if pool.running < pool.slots_per_pod:
            return Admission(True)
        busy = [u.task_id for u in pool.uses if u.state == "running"]
        where = f" on machine {pool.machine}" if pool.machine else ""
        return Admission(False, Blocker.NO_CAPACITY,
                         f"all {pool.slots_per_pod} running places of pool {pool.name} are in use "
                         f"({_tasks(busy)}){where}; it starts when one ends (more places: "
                         f"iacctl pool set {pool.name} --slots-per-pod N)", holders=tuple(busy))
    if facts.wants == APPLY or pool.idle_slots > 0:
        return Admission(True)  # a confirmed task applies in the slot it reserved
    can_scale = pool.live_pods < pool.max_pods
    holders = tuple(u.task_id for u in pool.uses)
    if can_scale:
        return Admission(False, Blocker.NO_CAPACITY,
                         f"no free slot in pool {pool.name}; a pod is added for it "
                         f"({pool.live_pods} of at most {pool.max_pods})", can_scale=True, holders=holders)
    reserved = [u.task_id for u in pool.uses if u.state == "reserved"]
    running = [u.task_id for u in pool.uses if u.state != "reserved"]
    parts = []
    if running:
        parts.append(f"running: {_tasks(running)}")
    if reserved:
        parts.append(f"waiting for confirmation: {_tasks(reserved)}")
    held = "; ".join(parts) or "no slot is ready"
    ways = ["a running task ends"] if running else []
    if reserved:
        first = reserved[0]
        ways.append(f"a waiting plan is confirmed or cancelled (iacctl confirm-apply {first} / iacctl cancel {first})")
    ways.append(f"raise --max-pods (iacctl pool set {pool.name} --max-pods N)")
    blocker = Blocker.RESERVED_CAPACITY if reserved and not running else Blocker.NO_CAPACITY
    return Admission(False, blocker,
                     f"pool {pool.name} is at its maximum of {pool.max_pods} pod(s) and every slot is taken "
                     f"({held}); it starts when {', or '.join(ways)}", holders=holders)


def _tasks(ids: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:8])
    more = f" and {len(ids) - 8} more" if len(ids) > 8 else ""
    return f"task{'s' if len(ids) != 1 else ''} {shown}{more}"


def clock(t: float) -> str:
    """A time of day people read in a waiting message (local time, minutes)."""
    return time.strftime("%H:%M", time.localtime(t))
