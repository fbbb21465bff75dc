"""Whose turn it is, and running a task when it comes (SPEC L4, S2, S3; issue "Nothing waits
forever"): starting a pending task in a slot, waiting for it with a bound, and making sure a
queued task nobody waits for is started by someone.

Whether a task may start is `domain.admission.admit()`, fed by `repo.admission_facts()`; this
module only acts on its answer. A task starts in one transaction: the decision is taken again
there (on PostgreSQL the workspace and pool rows are locked FOR UPDATE, on SQLite BEGIN
IMMEDIATE serializes writers), a slot is claimed with a compare-and-set, and its status goes
pending -> running.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlmodel import Session, select

from iacctl.config import heartbeat_timeout
from iacctl.domain.admission import Admission, AdmissionFacts, Blocker, PoolFacts, admit
from iacctl.domain.durations import format_duration
from iacctl.domain.lifecycle import Stage, Status
from iacctl.domain.scaling import desired_pods
from iacctl.domain.slots import PodStatus
from iacctl.errors import BackendError, BackendRefused, Refused, TaskCancelled, TransitionConflict
from iacctl.executor.progress import Reporter, SilentReporter
from iacctl.executor.run import TaskRun
from iacctl.executor.termination import end_task
from iacctl.executor.watch import interrupted, stop_gracefully_on_signals
from iacctl.runtimes import local
from iacctl.services import ending, runtasks, scaling
from iacctl.services.app import App
from iacctl.store import repo
from iacctl.store.models import Pool, Task, Workspace

WAIT_POLL_SECONDS = 0.5
SCALE_RETRY_SECONDS = 5.0
# A task placed on pods that keep vanishing before Terraform starts is placed again this often
# by the command waiting for it; after that it fails rather than chase pods forever.
MAX_PLACEMENTS = 5


@dataclass(frozen=True)
class StartResult:
    started: bool
    status: Status
    waiting_for: str | None = None
    blocker: Blocker | None = None
    can_scale: bool = False  # no free slot, and the pool may add a pod for it (S3)


def try_start(app: App, task_id: int) -> StartResult:
    """Start the pending task here if admission lets it; otherwise say what it waits for. A plan
    past its lifetime that blocks the way is discarded first (L6), then the rule is asked again."""
    for _ in range(10):
        result, expired = _try_start_once(app, task_id)
        if expired is None:
            return result
        ending.discard_expired(app, expired)
    return result


def _try_start_once(app: App, task_id: int) -> tuple[StartResult, int | None]:
    try:
        return _start_here(app, task_id)
    except TransitionConflict:
        # Issue 18 item 5: another process (on this machine or another) started or ended it
        # between our read and our compare-and-set: not a refusal, the caller reads how it is.
        return StartResult(False, Status(get_task(app, task_id).status)), None


def _start_here(app: App, task_id: int) -> tuple[StartResult, int | None]:
    host, pid, start = local.this_process()

    def attempt(session: Session) -> tuple[StartResult, int | None]:
        # Issue 18 item 6: rows only, so a deadlock runs it again (Store.transaction).
        task = repo.get_task(session, task_id)
        if task.status != Status.PENDING:
            return StartResult(False, Status(task.status)), None
        ws = session.exec(select(Workspace).where(Workspace.id == task.workspace_id).with_for_update()).one()
        repo.lock_pool_row(session, ws.pool_id)
        facts = repo.admission_facts(session, [task], machine=local.machine())[task_id]
        decision = admit(facts, repo.now())
        if decision.expired_task is not None:
            return StartResult(False, Status.PENDING, decision.waiting_for, decision.blocker), decision.expired_task
        if not decision.start:
            return StartResult(False, Status.PENDING, decision.waiting_for, decision.blocker,
                               decision.can_scale), None
        # Issue 18 item 4: on the local pool, a slot of this machine's own pod.
        here = app.local_pod_id if facts.pool.machine is not None else None
        slot = repo.claim_slot(session, ws.pool_id, task_id, grow=not facts.pool.reserved_holds_capacity,
                               pod_id=here)
        if slot is None:
            # Admission counted a slot that is not there (a pod being lost): wait and ask again.
            return StartResult(False, Status.PENDING, f"no free slot in pool {facts.pool.name}",
                               Blocker.NO_CAPACITY, True), None
        repo.transition(
            session, task_id, Status.PENDING, Status.RUNNING, f"started in slot {repo.slot_place(session, slot.id)}",
            slot_id=slot.id, pod_id=slot.pod_id, pool_id=ws.pool_id, plan_slot_id=slot.id,
            started_at=repo.now(), runner_host=host, runner_pid=pid, runner_start=start,
            heartbeat_at=repo.now(), error=None,
        )
        return StartResult(True, Status.RUNNING), None

    return app.store.transaction(attempt)


def admission_of(app: App, task_id: int) -> Admission:
    """What admission says of the task now (read only; try_start decides for real)."""
    with app.store.read() as session:
        task = repo.get_task(session, task_id)
        facts = repo.admission_facts(session, [task], machine=local.machine()).get(task_id)
    if facts is None or task.status != Status.PENDING:
        return Admission(False)
    return admit(facts, repo.now())


def run_when_turn(app: App, task_id: int, reporter: Reporter, *, wait_timeout: float | None = None,
                  placements: int = 0) -> Task:
    """Wait for the task's turn (saying what it waits for and the way out), run its plan here,
    return it. With `wait_timeout`, a task still waiting when it elapses is cancelled (it never
    stays queued behind) and Refused is raised (exit 5)."""
    deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
    last_reason: str | None = None
    next_scale = 0.0
    next_beat = 0.0
    while True:
        if interrupted.is_set():
            _give_up(app, task_id, "interrupted while waiting", None)
        if time.monotonic() >= next_beat:
            # Issue 18 item 5: this command still waits for its task (other machines read it).
            _beat_waiting(app, task_id)
            next_beat = time.monotonic() + WAITING_BEAT_SECONDS
        result = try_start(app, task_id)
        if result.started:
            break
        if result.status != Status.PENDING:
            # Started (or ended) by another process, maybe on another machine: this command
            # still reports the task's own outcome, followed through the store.
            followed = follow(app, task_id, reporter)
            if followed.status != Status.PENDING:
                return followed
            continue  # placed again (its pod was gone before Terraform started): wait again
        if result.waiting_for != last_reason:
            reporter.note(f"task {task_id} waits: {result.waiting_for}")
            last_reason = result.waiting_for
        if result.can_scale and time.monotonic() >= next_scale:
            # S3: a Kubernetes pool with no idle slot scales up for the waiting task.
            next_scale = time.monotonic() + SCALE_RETRY_SECONDS
            if scale_for(app, task_id, reporter):
                continue
        if deadline is not None and time.monotonic() >= deadline:
            _give_up(app, task_id, f"gave up after waiting {format_duration(wait_timeout or 0)}",
                     result.waiting_for)
        time.sleep(WAIT_POLL_SECONDS)
    execute(app, task_id, reporter, lambda run: run.plan())
    task = get_task(app, task_id)
    if task.status == Status.PENDING:
        # Issue 10 item 2: its pod was gone before Terraform started; it waits for a new place.
        if placements < MAX_PLACEMENTS:
            return run_when_turn(app, task_id, reporter, wait_timeout=wait_timeout, placements=placements + 1)
        ending.end_waiting(app, task_id, Status.FAILED, f"its pod was gone before Terraform started, "
                                                        f"{MAX_PLACEMENTS + 1} times; check the pool's pods "
                                                        "(iacctl pods list) and plan again")
        return get_task(app, task_id)
    return task


WAITING_BEAT_SECONDS = 5.0
FOLLOW_POLL_SECONDS = 0.3


def _beat_waiting(app: App, task_id: int) -> None:
    with app.store.write() as session:
        task = repo.get_task(session, task_id)
        if task.status == Status.PENDING:
            repo.update_task(session, task_id, heartbeat_at=repo.now())
        repo.beat_pod(session, app.local_pod_id, repo.now())


def follow(app: App, task_id: int, reporter: Reporter) -> Task:
    """Issue 18 item 5: a task another process runs, followed through the store (its stages, its
    log, its outcome) until it ends or waits for confirmation, so the command that waited for it
    exits with the task's own exit code. A runner that dies is the sweep's to settle; the task
    still ends, and this ends with it."""
    task = get_task(app, task_id)
    if task.status != Status.PENDING:
        # Said also when its plan was over before this command looked again (a quick plan).
        where = f" on machine {task.runner_host}" if task.runner_host else ""
        reporter.note(f"task {task_id} was started by another process{where}; following it")
    seq = 0
    stage: str | None = None
    cipher = app.store.cipher
    while True:
        with app.store.read() as session:
            task = repo.get_task(session, task_id)
            lines = repo.log_lines_after(session, task_id, seq)
        if task.stage is not None and task.stage != stage and task.status == Status.RUNNING:
            stage = task.stage
            reporter.stage(task_id, Stage(stage))
        for s, blob in lines:
            seq = s
            reporter.line(cipher.decrypt_text(blob))
        if not lines and task.status != Status.RUNNING:
            return task
        if not lines:
            time.sleep(FOLLOW_POLL_SECONDS)


def _give_up(app: App, task_id: int, why: str, waiting_for: str | None) -> None:
    reason = f"{why}; it waited for: {waiting_for}" if waiting_for else why
    outcome = ending.end_waiting(app, task_id, Status.CANCELLED, reason)
    if outcome != Status.CANCELLED:
        return  # it started or ended meanwhile; the caller reads how
    kick_queue(app)
    if waiting_for is None:
        raise TaskCancelled(f"task {task_id} cancelled: {reason}").about(task_id)
    raise Refused(f"task {task_id} cancelled: {reason}").about(task_id)


def scale_for(app: App, task_id: int, reporter: Reporter) -> bool:
    """Reconcile the task's Kubernetes pool (creating pods for every waiting task, S3); True if
    a pod was created. When the cluster refuses the pool's pods and the pool has no pod left to
    free a slot, the task fails with the cause and the fix (issue 10 item 6): it never waits for
    a pod that cannot come."""
    with app.store.read() as session:
        task = repo.get_task(session, task_id)
        pool = session.get(Pool, task.pool_id) if task.pool_id else None
    if pool is None or pool.backend == "local":
        return False
    try:
        changes = scaling.reconcile_pool(app, pool.name)
    except BackendRefused as exc:
        _refused(app, [task_id], str(exc))
        raise BackendRefused(f"task {task_id} failed: {exc}").about(task_id) from None
    except BackendError as exc:
        # Not waited out in silence: the task stays queued and the user hears why.
        raise BackendError(f"task {task_id} stays queued: {exc}; it starts once pool {pool.name} has a "
                           "free slot (iacctl pods recover)") from None
    for c in changes:
        reporter.note(f"pool {c['pool']}: pod {c['pod'] or ''} {c['change']}: {c['detail']}")
    why = scaling.refusal(changes)
    if why is not None and _no_live_pod(app, pool):
        if _refused(app, [task_id], why):
            raise BackendRefused(f"task {task_id} failed: pool {pool.name}: {why}")
    return any(c["change"] == "created" for c in changes)


def _no_live_pod(app: App, pool: Pool) -> bool:
    with app.store.read() as session:
        return not any(p.status in (PodStatus.READY, PodStatus.CREATING) for p in repo.pods_of(session, pool.id or 0))


def _refused(app: App, task_ids: list[int], why: str) -> bool:
    """Issue 10 item 6: queued tasks that only a new pod could start fail with the cluster's
    refusal (its cause and fix). True if any did."""
    failed = False
    for task_id in task_ids:
        failed |= ending.end_waiting(app, task_id, Status.FAILED, f"no pod can be started for it: {why}") \
            == Status.FAILED
    return failed


def _scale_to_queue(app: App, pending: list[Task], facts: dict[int, AdmissionFacts],
                    reporter: Reporter | None) -> None:
    """S3, issue 10 item 4: whatever queues or frees work scales each Kubernetes pool to the
    demand of every waiting task, not only the one it handles. One reconcile per pool that
    needs more pods than it has (ready or being created)."""
    now = repo.now()
    demand: dict[str, list[int]] = {}
    pools: dict[str, PoolFacts] = {}
    for task in pending:
        f = facts.get(task.id or 0)
        if f is None or not f.pool.reserved_holds_capacity:
            continue
        if admit(f, now).blocker in scaling.WANTS_A_SLOT:
            demand.setdefault(f.pool.name, []).append(task.id or 0)
            pools[f.pool.name] = f.pool
    for name, ids in demand.items():
        pool = pools[name]
        if desired_pods(len(pool.uses), len(ids), pool.slots_per_pod, 0, pool.max_pods) <= pool.live_pods:
            continue
        try:
            changes = scaling.reconcile_pool(app, name)
        except BackendRefused as exc:
            changes = [{"pool": name, "pod": None, "change": scaling.REFUSED, "detail": str(exc)}]
        except BackendError as exc:
            if reporter is not None:
                reporter.note(f"pool {name}: {exc}; queued tasks start once it has a free slot (iacctl pods recover)")
            continue
        for c in changes:
            if reporter is not None:
                reporter.note(f"pool {c['pool']}: pod {c['pod'] or ''} {c['change']}: {c['detail']}")
        why = scaling.refusal(changes)
        with app.store.read() as session:
            row = repo.find_pool(session, name)
        if why is not None and row is not None and _no_live_pod(app, row):
            # Nobody waits for these (a waiting command fails its own task): they fail here.
            nobody = [t.id or 0 for t in pending if t.id in ids and t.creator_pid is None]
            _refused(app, nobody, why)


def execute(app: App, task_id: int, reporter: Reporter, body: Callable[[TaskRun], Status],
            *, kick: bool = True) -> None:
    """Run a started task's stages here; whatever happens, the queue is kicked after (a slot or
    a turn may be free)."""
    try:
        with app.store.read() as session:
            task = repo.get_task(session, task_id)
        runtime = app.runtime_for_pool_id(task.pool_id or 0)
        # R7/C6: the run tasks attached to the workspace, at the stages they are attached to.
        run = TaskRun(app.store, runtime, task_id, reporter, hooks=runtasks.hooks_for(app, task_id))
    except Exception as exc:
        # E3: an error before the executor exists still leaves the task terminal.
        with app.store.read() as session:
            task = repo.get_task(session, task_id)
        runtime = app.runtime_for_pool_id(task.pool_id or 0)
        end_task(app.store, runtime, task_id, Status.FAILED, f"cannot start: {exc}", log=None, place=None)
        raise
    try:
        body(run)
    finally:
        if kick:
            kick_queue(app)


def get_task(app: App, task_id: int) -> Task:
    with app.store.read() as session:
        return repo.get_task(session, task_id)


# -- tasks nobody waits for -----------------------------------------------------------------------


def _left_behind(app: App, task: Task) -> bool:
    """A task queued by a command that waits for it is that command's: if the command is gone
    before its task started (killed, or it failed), the task is cancelled, never started later
    behind the user's back. True if the task is taken care of here (cancelled or waited for)."""
    if task.creator_pid is None:
        return False
    alive = local.process_alive(task.creator_host, task.creator_pid, task.creator_start)
    if alive is None:
        # Issue 18 item 5: a command waiting on another machine is judged by the heartbeat it
        # beats on its pending task: alive, it starts the task itself; silent past the timeout,
        # it is gone.
        alive = task.heartbeat_at is not None and repo.now() - task.heartbeat_at <= heartbeat_timeout()
    if alive:
        return True
    reason = (f"its command ({task.creator_host} pid {task.creator_pid}) exited before the task started; "
              "nothing runs behind its back")
    ending.end_waiting(app, task.id or 0, Status.CANCELLED, reason)
    return True


def cancel_left_behind(app: App) -> list[tuple[int, str]]:
    """The sweep's part: queued tasks whose waiting command is gone, cancelled (see
    _left_behind). Their ids and errors."""
    with app.store.read() as session:
        pending = repo.pending_tasks(session)
    out = []
    for task in pending:
        if task.creator_pid is not None and _left_behind(app, task):
            current = get_task(app, task.id or 0)
            if current.status == Status.CANCELLED:
                out.append((task.id or 0, current.error or ""))
    return out


def _places(pool: PoolFacts) -> int:
    if not pool.reserved_holds_capacity:
        return max(0, pool.slots_per_pod - pool.running)
    return pool.idle_slots


def kick_queue(app: App, reporter: Reporter | None = None) -> list[int]:
    """Start, as detached runners, the queued tasks that admission lets start now and that nobody
    waits for. Returns their ids. Safe to call from anywhere, any number of times: runners race
    through try_start's compare-and-set and only one wins a task.

    At most one runner per free place of the task's pool is started (item 10): every task that
    ends kicks the queue, and a runner per startable task at each kick piled up hundreds of
    processes that mostly lost the race."""
    started: list[int] = []
    with app.store.read() as session:
        pending = list(repo.pending_tasks(session))
        facts = repo.admission_facts(session, pending, machine=local.machine())
    if any(f.pool.reserved_holds_capacity for f in facts.values()):
        _scale_to_queue(app, pending, facts, reporter)
        with app.store.read() as session:
            pending = list(repo.pending_tasks(session))
            facts = repo.admission_facts(session, pending, machine=local.machine())
    now = repo.now()
    handed: dict[str, int] = {}
    for task in pending:
        f = facts.get(task.id or 0)
        if f is None or _left_behind(app, task):
            continue
        decision = admit(f, now)
        if not (decision.start or decision.blocker == Blocker.PLAN_EXPIRED):
            continue
        if handed.get(f.pool.name, 0) >= _places(f.pool) and decision.start:
            continue
        start_runner(app, task.id or 0)
        started.append(task.id or 0)
        handed[f.pool.name] = handed.get(f.pool.name, 0) + 1
    return started


def finish_follow_ups(app: App) -> str | None:
    """F1, F4: at a command's end, its follow-ups get at most the budget; then the plans its run
    triggers queued are started (nobody waits for them: they run in the background and wait
    for confirmation, never blocking the command that applied their source)."""
    line = app.finish_follow_ups()
    if app.queued_by_follow_ups():
        kick_queue(app)
    return line


def take_next(app: App) -> int | None:
    """Start here the oldest queued task that nobody waits for and that can start now; its id,
    or None when there is none (a runner going on with the next task)."""
    with app.store.read() as session:
        pending = repo.pending_tasks(session)
        facts = repo.admission_facts(session, pending, machine=local.machine())
    now = repo.now()
    for task in pending:
        f = facts.get(task.id or 0)
        if f is None or _left_behind(app, task):
            continue
        decision = admit(f, now)
        if (decision.start or decision.blocker == Blocker.PLAN_EXPIRED) and try_start(app, task.id or 0).started:
            return task.id
    return None


def run_queued(app: App, task_id: int) -> Task:
    """The detached runner: start the task if it is its turn, else leave it to whoever frees
    the turn (they start a runner again). When its task has ended, the runner takes the next
    queued task that nobody waits for and that can start now, in this same process, until there
    is none: the slot it freed is used again at once, without a new process's start-up (item 10)."""
    result = try_start(app, task_id)
    if not result.started:
        return get_task(app, task_id)
    current: int | None = task_id
    try:
        while current is not None:
            execute(app, current, SilentReporter(), lambda run: run.plan(), kick=False)
            current = None if interrupted.is_set() else take_next(app)
    finally:
        kick_queue(app)
    return get_task(app, task_id)


def start_runner(app: App, task_id: int) -> int:
    """A detached runner for a queued task (`iacctl tasks run ID`): forked from this process
    when that is safe, so it skips Python's start-up; otherwise a new process. Its pid."""
    db = str(app.settings.db_path) if app.settings.db_path else None

    def runner() -> int:  # pragma: no cover - runs in the forked child
        # A fresh store connection: the parent's stay untouched (closing a PostgreSQL
        # connection shared with the parent would end the parent's session too).
        interrupted.clear()
        stop_gracefully_on_signals()
        child = App(db)
        try:
            run_queued(child, task_id)
        finally:
            child.close()
        return 0

    pid = None
    if local.can_fork():
        app.store.dispose()  # SQLite's locks and shared memory must not cross fork()
        pid = local.fork_detached(runner)
    if pid is None:
        pid = local.spawn_detached([*(["--db", db] if db else []), "tasks", "run", str(task_id)])
    return pid
