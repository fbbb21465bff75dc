"""`iacctl confirm-apply` (SPEC L6, E1, E6, S5, S6): apply exactly the saved plan of a task waiting
for confirmation, or say why not. A lost plan context is planned again (exit 4) or rebuilt on a
new slot (warm-up pools); an expired plan is discarded, never left blocking its workspace."""

from __future__ import annotations

import time

from sqlmodel import Session

from iacctl.domain.actors import Actor, actor_view
from iacctl.domain.admission import APPLY, Admission, admit, plan_expired, plan_lifetime
from iacctl.domain.durations import format_age, format_duration
from iacctl.domain.freeze import format_instant
from iacctl.domain.lifecycle import Status
from iacctl.domain.plans import ChangeCounts, relation_to_terraform
from iacctl.errors import Refused, Replanned, TransitionConflict
from iacctl.executor.progress import Reporter
from iacctl.runtimes import local
from iacctl.services import ending, outbox, plan_context, queue
from iacctl.services.app import App, current_actor
from iacctl.store import repo
from iacctl.store.models import Pool, Task


def _lifetime(session: Session, task: Task) -> tuple[float, str]:
    ws = repo.workspace_by_id(session, task.workspace_id)
    pool = session.get(Pool, ws.pool_id)
    return plan_lifetime(ws.plan_lifetime_s, pool.plan_lifetime_s if pool else None), ws.name


def _refusal(session: Session, task: Task, plan_hash: str | None = None) -> str | None:
    """L6: why confirm-apply must not apply this task, or None. With `plan_hash` (issue 24),
    also unless its saved plan is still the one the reviewer approved."""
    ws = repo.workspace_by_id(session, task.workspace_id)
    pool = session.get(Pool, ws.pool_id)
    if task.confirmed_at is not None:
        who = actor_view(task.confirmed_by)
        by = f"; {who['display']} confirmed it" if who else ""
        return f"task {task.id} was already confirmed (it is {task.status}){by}"
    window = repo.frozen_now(session, ws.pool_id)
    if window is not None and pool is not None:
        # S4: nothing starts in a frozen pool, an apply least of all.
        return f"pool {pool.name} is frozen until {format_instant(window[1])}; confirm task {task.id} after that"
    if task.status != Status.APPLY_PENDING:
        return f"task {task.id} is {task.status}, not apply_pending"
    if plan_hash is not None and not (task.plan_hash or "").startswith(plan_hash):
        return (f"the saved plan of task {task.id} is {task.plan_hash}, not the approved {plan_hash} (planned "
                f"again since the review, or another task's hash); review the plan with: iacctl tasks plan {task.id}")
    lifetime, _ = _lifetime(session, task)
    if plan_expired(task.planned_at, lifetime, repo.now()):
        return (f"the plan of task {task.id} expired (older than {format_duration(lifetime)}); "
                f"plan again with: iacctl plan {ws.name}")
    if ws.locked_by_task_id != task.id:
        holder = ws.lock_holder or "nobody"
        return f"workspace {ws.name} lock is not held by task {task.id} (held by {holder})"
    if repo.latest_state_version_id(session, ws.id or 0) != task.base_state_version_id:
        return (f"the plan of task {task.id} is stale: workspace {ws.name}'s state changed since it "
                f"was made; plan again with: iacctl plan {ws.name}")
    return None


def _confirmable(session: Session, task_id: int, plan_hash: str | None = None) -> Task:
    """The task, if confirm-apply may act on it (L6); Refused otherwise. Called again inside the
    writing transaction, so that of racing confirmations only one gets through, and a plan made
    again in between is never applied for the one approved (issue 24)."""
    task = repo.get_task(session, task_id)
    reason = _refusal(session, task, plan_hash)
    if reason is not None:
        raise Refused(reason)
    return task


def _discard_if_expired(app: App, task_id: int) -> None:
    """L6, seed 002 M7: an expired plan is discarded (task cancelled, lock, slot and work
    directory freed), so that the advice to plan again works at once."""
    with app.store.read() as session:
        task = repo.get_task(session, task_id)
        lifetime, workspace = _lifetime(session, task)
    if (task.status != Status.APPLY_PENDING or task.confirmed_at is not None
            or not plan_expired(task.planned_at, lifetime, repo.now())):
        return
    ending.discard_expired(app, task_id)
    raise Refused(f"the plan of task {task_id} expired (older than {format_duration(lifetime)}) and was "
                  f"discarded; plan again with: iacctl plan {workspace}")


def confirm_apply(app: App, task_id: int, *, rebuild: bool, reporter: Reporter,
                  wait_timeout: float | None = None, message: str | None = None,
                  plan_hash: str | None = None) -> Task:
    actor = current_actor(message)
    _say_dead_follow_ups(app, task_id, reporter)
    if plan_hash is not None:
        # Issue 24: a plan other than the approved one is refused before anything else is done
        # to the task (an expired one is not discarded on behalf of a stale approval).
        with app.store.read() as session:
            _confirmable(session, task_id, plan_hash)
    _discard_if_expired(app, task_id)
    with app.store.read() as session:
        task = _confirmable(session, task_id, plan_hash)
    # Issue 18 item 2: a plan made on another machine is not lost here (lost() judges only this
    # machine's slots and pods); it is applied here, rebuilt from the store (_start_apply).
    lost = plan_context.lost(app, task)
    if lost is None and plan_context.expired(task):
        lost = "its warm-up expired"
    if lost is not None and _pool_policy(app, task) == "warmup" and plan_context.retries_left(app, task):
        # S6 at confirm time: the plan context is rebuilt from the store on a new slot (the E6
        # rebuild path on another pod), never applied where it is missing.
        if plan_context.move_to_new_slot(app, task_id, f"plan context lost ({lost}); rebuilding it on a new slot",
                                         warming=False):
            reporter.note(f"task {task_id}: the plan context is lost ({lost}); the apply rebuilds it "
                          "from the store on a new slot")
            lost = None
    if lost is not None:
        return _replan(app, task_id, lost, reporter, wait_timeout)
    moved_from = _start_apply(app, task_id, reporter, wait_timeout, actor, plan_hash)
    if moved_from is not None:
        reporter.note(f"task {task_id}: planned on machine {moved_from}, confirmed on machine {local.machine()}: "
                      "rebuild of the work directory here from the store (config snapshot, plan file, init, plan "
                      "hash checked)")
    # Issue 9: said once the confirmation is taken (a refused one applies nothing), before the
    # apply starts.
    reporter.summary(_restatement(app, task))
    reporter.note(f"task {task_id}: applying the saved plan {(task.plan_hash or '')[:16]} (confirmed by "
                  f"{actor.said()})")
    with app.store.read() as session:
        place = repo.slot_place(session, repo.get_task(session, task_id).slot_id)
    queue.execute(app, task_id, reporter, lambda run: run.apply(rebuild=rebuild))
    done = queue.get_task(app, task_id)
    if done.status == Status.PENDING:
        # Issue 10 item 2, S5: the pod went before the apply started, with the plan's work
        # directory; the task was put back to be planned again, never applied elsewhere.
        return _plan_again(app, task_id, f"pod {place.pod if place else '?'} is gone", reporter, wait_timeout)
    return done


def _restatement(app: App, task: Task) -> str:
    """Issue 9: what confirm-apply is about to apply, said before it does: workspace, task,
    plan hash, the counts (and how they read as Terraform's own Plan line) and the plan's age."""
    with app.store.read() as session:
        workspace = repo.workspace_by_id(session, task.workspace_id).name
    counts = ChangeCounts(task.add_count or 0, task.change_count or 0, task.destroy_count or 0,
                          task.replace_count or 0, task.output_count or 0)
    age = format_age(repo.now() - (task.planned_at or repo.now()))
    text = (f"about to apply task {task.id} of workspace {workspace}: plan {(task.plan_hash or '')[:16]}, "
            f"{counts.summary()}, planned {age} ago")
    relation = relation_to_terraform(counts)
    return text + (f" ({relation})" if relation else "")


def _start_apply(app: App, task_id: int, reporter: Reporter, wait_timeout: float | None,
                 actor: Actor, plan_hash: str | None = None) -> str | None:
    """apply_pending -> running, once admission gives the apply a running place (on the local
    pool the slot count limits how many tasks run at once; elsewhere the reserved slot is it).
    A plan made on another machine moves to this one in that same transaction (issue 18 item 2);
    the machine it came from, or None."""
    host, pid, start = local.this_process()
    deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
    last: str | None = None
    while True:
        def attempt(session: Session) -> tuple[Admission, str | None]:
            # Issue 18 item 6: rows only, so a deadlock runs it again (Store.transaction).
            # Issue 18 item 6: the workspace row, then the pool row (the order of store/db.py);
            # checked after the lock, so a racing confirmation that got there first is named.
            repo.lock_workspace_of_task(session, task_id)
            task = _confirmable(session, task_id, plan_hash)
            repo.lock_pool_row(session, task.pool_id or 0)
            facts = repo.admission_facts(session, [task], wants=APPLY, machine=local.machine())[task_id]
            decision = admit(facts, repo.now())
            if not decision.start:
                return decision, None
            holder = repo.machine_of_slot(session, task.slot_id)
            moved_from = None
            if facts.pool.machine is not None and holder is not None and holder != facts.pool.machine:
                # Issue 18 item 2: planned on another machine, applied here. Moved only by the
                # confirmation that wins (the workspace row is locked): the others are refused
                # below and leave the plan where the winner put it.
                if app.local_pod_id is None or not plan_context.move_here(
                        session, task, app.local_pod_id,
                        f"confirmed on machine {facts.pool.machine}; the plan was made on machine {holder}"):
                    raise Refused(f"task {task_id}: no place on this machine for its apply")
                moved_from = holder
            try:
                repo.transition(
                    session, task_id, Status.APPLY_PENDING, Status.RUNNING, f"confirmed by {actor.said()}",
                    confirmed_at=repo.now(), confirmed_by=actor.to_json(),
                    runner_host=host, runner_pid=pid, runner_start=start,
                    heartbeat_at=repo.now(), cancel_requested_at=None,
                )
            except TransitionConflict as exc:
                raise Refused(str(exc)) from None
            # The apply runs in the reserved slot, and the lock says so: effects of this change
            # (domain.policy); a slot no longer reserved refuses it (SlotNotReserved).
            return decision, moved_from
        decision, moved_from = app.store.transaction(attempt)
        if decision.start:
            return moved_from
        if decision.waiting_for != last:
            reporter.note(f"task {task_id} waits: {decision.waiting_for}")
            last = decision.waiting_for
        if deadline is not None and time.monotonic() >= deadline:
            # The plan stays waiting for confirmation: only this confirmation gives up.
            raise Refused(f"task {task_id} was not applied: gave up after waiting "
                          f"{format_duration(wait_timeout or 0)} for {decision.waiting_for}; it still waits "
                          f"for confirmation").about(task_id)
        time.sleep(queue.WAIT_POLL_SECONDS)


def _pool_policy(app: App, task: Task) -> str:
    with app.store.read() as session:
        pool = session.get(Pool, task.pool_id) if task.pool_id else None
    return pool.on_lost_context if pool is not None else "replan"


def _replan(app: App, task_id: int, lost: str, reporter: Reporter, wait_timeout: float | None) -> Task:
    """S5: never apply where the plan context is missing: plan again, wait for a new confirmation."""
    host, pid, start = local.this_process()
    with app.store.write() as session:
        task = _confirmable(session, task_id)
        plan_context.reset_to_pending(session, task, f"plan context lost: {lost}")
        repo.update_task(session, task_id, creator_host=host, creator_pid=pid, creator_start=start)
    reporter.note(f"task {task_id}: the plan context is lost ({lost}); planning again")
    return _plan_again(app, task_id, lost, reporter, wait_timeout)


def _plan_again(app: App, task_id: int, lost: str, reporter: Reporter, wait_timeout: float | None) -> Task:
    host, pid, start = local.this_process()
    with app.store.write() as session:
        repo.update_task(session, task_id, creator_host=host, creator_pid=pid, creator_start=start)
    task = queue.run_when_turn(app, task_id, reporter, wait_timeout=wait_timeout)
    if task.status == Status.APPLY_PENDING:
        raise Replanned(
            f"task {task_id} was re-planned because {lost}; review it and run: iacctl confirm-apply {task_id}"
        ).about(task_id)
    return task


def _say_dead_follow_ups(app: App, task_id: int, reporter: Reporter) -> None:
    """F1: a dead follow-up of the workspace is said until it is retried or dismissed."""
    with app.store.read() as session:
        ws = repo.workspace_by_id(session, repo.get_task(session, task_id).workspace_id)
    notice = outbox.dead_notice(app.store, ws.id or 0, ws.name)
    if notice:
        reporter.note(notice)


def queued_followers(app: App, task_id: int) -> list[dict[str, object]]:
    """F4, issue 21: the plans the run triggers of this apply queued (or joined), each with its
    workspace and task id, so that confirm-apply says what it set off. Empty when the task did
    not apply or no workspace follows its workspace."""
    task = queue.get_task(app, task_id)
    if task.status != Status.APPLIED:
        return []
    app.handle_run_triggers_now()
    followers = []
    with app.store.read() as session:
        for follower_id in app.queued_by_follow_ups():
            follower = session.get(Task, follower_id)
            if follower is None:
                continue
            ws = repo.workspace_by_id(session, follower.workspace_id)
            followers.append({"workspace": ws.name, "task": follower_id, "status": str(follower.status)})
    return followers
