"""Delivering the outbox (SPEC F1, F3, S8): claims with a lease, one attempt per claim, the
delivery log, retries with backoff, `dead` entries, and the command's short wait at its end.

Entries are written by `repo.transition()` in the transaction of the status change that causes
them. Here they are sent: by the command that wrote them, at once, in background threads (at
most 8 in flight, one at a time per destination, so a working destination gets its events in
order), waited for at most the budget when the command ends; and, when due again after a
failure, by the next command that writes to the store, or by the sweep (`pods recover`).
Each entry is sent on its own, as HCP Terraform sends notifications: one that waits for its
retry holds back no later event of its destination (issue 19 item 2); the payload carries the
time of the change, by which a receiver orders what it got.

An entry is claimed with a compare-and-set (status, claim token) and a lease; it is marked
delivered only by the claim that sent it, so at most once. A claimer that dies is noticed by
its gone process (this machine) or its expired lease, and the entry is claimed again.

Lowest of the services: it uses the store only, never the App.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from dataclasses import dataclass

from iacctl.config import follow_up_budget
from iacctl.domain.notifications import Facts, Outcome, next_attempt_at, outcome_of, parse_retry_after
from iacctl.notify import payload, sender
from iacctl.runtimes import local
from iacctl.services import follow_triggers, sync_inventory
from iacctl.services.follow_ups import Handled
from iacctl.store import repo
from iacctl.store.db import Store
from iacctl.store.models import Delivery, NotificationDestination, OutboxEntry

MAX_IN_FLIGHT = 8
# Longer than an attempt can take (15 s), so a live claimer never loses its claim.
LEASE_S = 60.0


def budget() -> float:
    """IACCTL_FOLLOW_UP_BUDGET: the most seconds a command waits at its end for its follow-ups."""
    return follow_up_budget()


def public_url() -> str:
    """Where people open iacctl's runs (run_url in payloads): IACCTL_PUBLIC_URL, else this host."""
    return os.environ.get("IACCTL_PUBLIC_URL") or f"http://{local.hostname()}"


@dataclass
class Claim:
    entry: OutboxEntry
    token: str
    destination: NotificationDestination | None


@dataclass(frozen=True)
class Result:
    """What one attempt did to an entry."""

    entry_id: int
    destination: str
    event: str
    task_id: int | None
    result: str  # delivered | retry | dead | dismissed | abandoned | late
    detail: str
    next_attempt_at: float | None = None
    kind: str = "notification"
    queued: tuple[int, ...] = ()  # F4: tasks a run trigger queued (whoever handled it starts them)


def _due(entry: OutboxEntry, at: float) -> bool:
    if entry.status == "pending":
        return entry.next_attempt_at <= at
    # delivering: its claim's lease ran out, or its claimer is a process of this machine that is gone
    if entry.lease_until is not None and entry.lease_until < at:
        return True
    return local.process_alive(entry.claimed_by_host, entry.claimed_by_pid, entry.claimed_by_start) is False


def claim_next(store: Store, *, mine: set[int] | None = None, skip_lanes: set[repo.Lane] | None = None,
               exclude: set[int] | None = None, kinds: tuple[str, ...] | None = None) -> Claim | None:
    """Claim the next due entry: the oldest open entry due now, not claimed by a live process,
    of a lane (repo.outbox_lane: one at a time per destination) not in `skip_lanes`. An entry
    waiting for its retry holds back no other (issue 19 item 2). With `mine`, only those
    entries; with `kinds`, only entries of those kinds."""
    host, pid, start = local.this_process()
    with store.write() as session:
        at = repo.now()
        entries = repo.open_outbox_entries(session)
        busy: set[repo.Lane] = set(skip_lanes or ())
        # A lane waits while one of its entries is being sent by a live process; a run trigger's
        # also while one waits for its retry (F4: a source's applies queue plans in order).
        busy.update(repo.outbox_lane(e) for e in entries
                    if not _due(e, at) and (e.status == "delivering" or e.kind == "trigger"))
        for entry in entries:
            lane = repo.outbox_lane(entry)
            if lane in busy or (mine is not None and entry.id not in mine):
                continue
            if kinds is not None and entry.kind not in kinds:
                continue
            if exclude and entry.id in exclude:
                continue
            if not _due(entry, at):
                continue  # waits for its retry, holding back no other entry (issue 19 item 2)
            if entry.destination_id is not None and not repo.lock_destination(session, entry.destination_id):
                busy.add(lane)  # another process is claiming for this destination right now (PostgreSQL)
                continue
            token = uuid.uuid4().hex
            if repo.claim_outbox_entry(session, entry, at=at, lease_s=LEASE_S, token=token, host=host, pid=pid,
                                       start=start):
                destination = session.get(NotificationDestination, entry.destination_id) \
                    if entry.destination_id is not None else None
                session.refresh(entry)
                return Claim(entry, token, destination)
            # Another process claimed it since we read it: its lane is being sent to (order).
            busy.add(lane)
    return None


def _request(store: Store, destination: NotificationDestination, entry: OutboxEntry,
             attempt: int) -> tuple[str, bytes, dict[str, str]]:
    """The URL, exact body and headers of one attempt (secrets decrypted only here, X1)."""
    facts = Facts.from_json(entry.facts_json)
    cipher = store.cipher
    if destination.kind == "slack":
        url = cipher.decrypt_text(destination.url_secret) if destination.url_secret else ""
        return url, payload.encode(payload.slack_message(facts, public_url())), {}
    doc = payload.generic_payload(destination_id=destination.id or 0, facts=facts, public_url=public_url(),
                                  event_id=entry.key, attempt=attempt)
    body = payload.encode(doc)
    headers = {}
    if destination.token_secret:
        headers[payload.SIGNATURE_HEADER] = payload.sign(body, cipher.decrypt(destination.token_secret))
    return destination.url or "", body, headers


def deliver(store: Store, claim: Claim) -> Result:
    """One attempt of a claimed entry: a run trigger or an inventory sync is handled in the store
    (F4, F2); a notification is sent, recorded (entry and delivery log) in one transaction."""
    if claim.entry.kind == "trigger":
        return _local_result(claim, follow_triggers.handle(store, claim.entry, claim.token))
    if claim.entry.kind == "inventory":
        return _local_result(claim, sync_inventory.handle(store, claim.entry, claim.token))
    entry, destination = claim.entry, claim.destination
    name = entry.destination_name or "?"
    attempt_no = entry.attempts + 1
    if destination is None or not destination.enabled:
        why = "its destination was deleted" if destination is None else "its destination is disabled"
        with store.write() as session:
            repo.settle_outbox_entry(session, entry.id or 0, claim.token, status="dismissed", last_error=why)
        return Result(entry.id or 0, name, entry.event, entry.task_id, "dismissed", why)
    url, body, headers = _request(store, destination, entry, attempt_no)
    attempt = sender.post(url, body, headers)
    at = repo.now()
    outcome = outcome_of(attempt.http_status)
    values: dict[str, object] = {"attempts": attempt_no, "last_http_status": attempt.http_status,
                                 "last_error": attempt.error}
    nxt: float | None = None
    if outcome == Outcome.DELIVERED:
        values.update(status="delivered", delivered_at=at, last_error=None)
        result, detail = "delivered", f"HTTP {attempt.http_status}"
    elif outcome == Outcome.REJECTED:
        result = "dead"
        detail = f"{attempt.error}: a permanent failure (not retried)"
        values.update(status="dead", last_error=detail)
    else:
        nxt = next_attempt_at(attempt_no, at, random.uniform(-1.0, 1.0), parse_retry_after(attempt.retry_after, at))
        if nxt > entry.give_up_at:
            result, detail, nxt = "dead", f"{attempt.error}; gave up after {attempt_no} attempt(s)", None
            values.update(status="dead", last_error=detail)
        else:
            result, detail = "retry", f"{attempt.error}; next attempt in {max(0, round(nxt - at))}s"
            values.update(status="pending", next_attempt_at=nxt)
    with store.write() as session:
        if not repo.settle_outbox_entry(session, entry.id or 0, claim.token, **values):
            # Our claim was taken over meanwhile (lease out, or given up at the command's end).
            # Issue 19 item 1: a late answer of success still marks the entry delivered when
            # nobody has claimed it again, so that it is never sent twice.
            if outcome == Outcome.DELIVERED and repo.settle_late_delivery(session, entry.id or 0, at=at):
                result, detail = "delivered", f"{detail} (answered after the command had given up on it)"
            else:
                result, detail = "late", f"{detail}; recorded after its claim had ended"
        repo.add_delivery(session, Delivery(
            outbox_id=entry.id, destination_id=destination.id, destination_name=destination.name, event=entry.event,
            task_id=entry.task_id, attempt=attempt_no, at=at, duration_ms=round(attempt.duration_s * 1000, 1),
            http_status=attempt.http_status, error=attempt.error, response_excerpt=attempt.excerpt, result=result))
    return Result(entry.id or 0, destination.name, entry.event, entry.task_id, result, detail, nxt)


def _local_result(claim: Claim, outcome: Handled) -> Result:
    entry = claim.entry
    return Result(entry.id or 0, entry.destination_name or entry.kind, entry.event, entry.task_id, outcome.result,
                  outcome.detail, outcome.next_attempt_at, kind=entry.kind, queued=outcome.queued)


def abandon(store: Store, claim: Claim, reason: str) -> Result | None:
    """The command ends before the receiver answered: the attempt counts as failed, the claim is
    released and the entry is due again after the backoff (the sweep sends it)."""
    entry = claim.entry
    attempt_no = entry.attempts + 1
    at = repo.now()
    nxt = next_attempt_at(attempt_no, at, random.uniform(-1.0, 1.0), None)
    with store.write() as session:
        if not repo.settle_outbox_entry(session, entry.id or 0, claim.token, status="pending", attempts=attempt_no,
                                        next_attempt_at=nxt, last_error=reason, last_http_status=None):
            return None  # the answer came in the meantime
        repo.add_delivery(session, Delivery(
            outbox_id=entry.id, destination_id=entry.destination_id, destination_name=entry.destination_name or "?",
            event=entry.event, task_id=entry.task_id, attempt=attempt_no, at=at, duration_ms=0.0, error=reason,
            result="abandoned"))
    return Result(entry.id or 0, entry.destination_name or "?", entry.event, entry.task_id, "retry", reason, nxt)


def deliver_due(store: Store, *, workers: int = MAX_IN_FLIGHT) -> list[Result]:
    """S8: the sweep's part: every due entry is attempted once, at most `workers` in flight, one
    at a time per destination. Returns what each attempt did."""
    with store.read() as session:
        waiting = repo.outbox_work_waiting(session, repo.now())
    if waiting == 0:
        return []  # the usual sweep: nothing to send, no threads, no write transactions
    results: list[Result] = []
    attempted: set[int] = set()
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                exclude = set(attempted)
            claim = claim_next(store, exclude=exclude)
            if claim is None:
                return
            with lock:
                attempted.add(claim.entry.id or 0)
            result = deliver(store, claim)
            with lock:
                results.append(result)

    threads = [threading.Thread(target=work, name=f"iacctl-outbox-{i}", daemon=True)
               for i in range(min(workers, waiting))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(results, key=lambda r: r.entry_id)


class Deliverer:
    """A command's deliveries of the entries it wrote (F1): started after the commit that wrote
    them, in background threads, and waited for at most the budget when the command ends."""

    def __init__(self, store: Store, budget_s: float) -> None:
        self.store = store
        self.budget_s = budget_s
        self._deadline: float | None = None  # when this command's budget runs out, once it is waited on
        self._lock = threading.Condition()
        self._mine: set[int] = set()
        self._retries: set[int] = set()
        self._attempted: set[int] = set()
        self._failed_lanes: set[repo.Lane] = set()
        self._in_flight: dict[int, Claim] = {}
        self._results: list[Result] = []
        self._workers = 0  # alive, whenever started (issue 19 item 1: finish() waits for each)
        self._generation = 0
        self._closing = False
        self.due_retries = True  # False in a sweep, which sends the due entries itself (App.outbox_swept)

    def written(self, ids: list[int]) -> None:
        with self._lock:
            self._mine.update(ids)
            self._generation += 1
            self._spawn()

    def _spawn(self) -> None:
        if self._closing or self._workers >= MAX_IN_FLIGHT:
            return
        self._workers += 1
        worker = threading.Thread(target=self._work, name="iacctl-follow-ups", daemon=True)
        try:
            worker.start()
        except RuntimeError:  # no thread to be had (interpreter shutting down): the sweep sends
            self._workers -= 1

    def _work(self) -> None:
        try:
            self._deliver_mine()
        finally:
            with self._lock:
                self._workers -= 1
                self._lock.notify_all()

    def _deliver_mine(self) -> None:
        while True:
            with self._lock:
                if self._closing:
                    return
                generation = self._generation
                mine, exclude = self._mine | self._retries, set(self._attempted)
                # A destination that failed in this command is tried again at its next retry,
                # by the next command or the sweep; one being sent to by another thread here
                # waits its turn (a working destination gets its events in order).
                skip = self._failed_lanes | {repo.outbox_lane(c.entry) for c in self._in_flight.values()}
            try:
                claim = claim_next(self.store, mine=mine, skip_lanes=skip, exclude=exclude, kinds=("notification",))
            except Exception:
                return  # the store is failing; the entries stay for the sweep
            if claim is None:
                with self._lock:
                    if self._generation == generation or self._closing:
                        return
                continue
            with self._lock:
                self._in_flight[claim.entry.id or 0] = claim
                self._attempted.add(claim.entry.id or 0)
                self._spawn()  # there may be more destinations to send to at the same time
            try:
                result = deliver(self.store, claim)
            except Exception as exc:
                result = Result(claim.entry.id or 0, claim.entry.destination_name or claim.entry.kind,
                                claim.entry.event, claim.entry.task_id, "retry", f"not sent: {exc}")
            with self._lock:
                self._in_flight.pop(claim.entry.id or 0, None)
                self._results.append(result)
                if result.result != "delivered":
                    self._failed_lanes.add(repo.outbox_lane(claim.entry))
                self._generation += 1  # its lane is free: what waited for it may go now

    def _take_due_retries(self) -> None:
        """Issue 19 item 2: a command that wrote to the store also sends the entries due again
        (a failed attempt's retry, an expired claim), so that none needs cron to be sent. One
        indexed query when there is nothing to do; not with a budget of 0 (nothing is waited for)."""
        if self.budget_s <= 0 or not self.store.committed_writes or not self.due_retries:
            return
        opened = self.store.opening
        if opened is not None and (opened.next_due_at is None or opened.next_due_at > repo.now()):
            return  # issue 23: none was waiting when the store was opened, none is due yet
        with self.store.read() as session:
            due = set(repo.due_outbox_ids(session, repo.now())) - self._mine
        if due:
            with self._lock:
                self._retries.update(due)
                self._generation += 1
                self._spawn()

    def finish(self) -> str | None:
        """Wait at most the budget for every delivery under way, whenever its worker started;
        give up the rest (they are due again after the backoff); then handle this command's run
        triggers and inventory syncs (F4, F2) here; say in one line what is not done."""
        try:
            self._take_due_retries()
        except Exception:
            pass  # the store is failing; the sweep sends them
        with self._lock:
            if not self._mine and not self._retries:
                return None
            # One budget per command, however often its end is reached (confirm-apply settles its
            # follow-ups before naming the plans its triggers queued, and again at the very end).
            if self._deadline is None:
                self._deadline = time.monotonic() + self.budget_s
            deadline = self._deadline
            while self._workers > 0:
                left_s = deadline - time.monotonic()
                if left_s <= 0:
                    break
                self._lock.wait(left_s)
            self._closing = True
            left = list(self._in_flight.values())
        reason = f"no answer within the command's budget of {self.budget_s:g} s"
        for claim in left:
            try:
                abandon(self.store, claim, reason)
            except Exception:
                pass  # the lease runs out and the sweep takes it over
        self._handle_local()
        return self.summary()

    def _handle_local(self) -> None:
        """F4, F2: the run triggers and inventory syncs this command wrote, handled in this
        thread at its end: the notifications have been under way since the commit, and the
        plans a trigger queues are started by the caller once it is alone (a runner is forked
        only from a process with one thread). Triggers first: they start work; a sync may wait
        on its URL."""
        attempted: set[int] = set()
        for kinds in (("trigger",), ("inventory",)):
            while True:
                try:
                    claim = claim_next(self.store, mine=self._mine | self._retries, exclude=attempted, kinds=kinds)
                except Exception:
                    return  # the store is failing; the entries stay for the sweep
                if claim is None:
                    break
                attempted.add(claim.entry.id or 0)
                try:
                    result = deliver(self.store, claim)
                except Exception as exc:
                    result = Result(claim.entry.id or 0, claim.entry.kind, claim.entry.event, claim.entry.task_id,
                                    "retry", f"not done: {exc}", kind=claim.entry.kind)
                self._results.append(result)

    def queued_tasks(self) -> list[int]:
        """F4: the tasks this command's run triggers queued (the caller kicks the queue)."""
        return [t for r in self._results for t in r.queued]

    def summary(self) -> str | None:
        with self.store.read() as session:
            entries = repo.outbox_entries(session, ids=self._mine)
        undelivered = [e for e in entries if e.status not in ("delivered", "dismissed")]
        local = [e for e in undelivered if e.kind != "notification"]
        undelivered = [e for e in undelivered if e.kind == "notification"]
        lines = [_local_summary(local)] if local else []
        if not undelivered:
            return "; ".join(lines) or None
        parts = []
        for e in sorted(undelivered, key=lambda e: e.id or 0):
            why = e.last_error or ("not sent yet: its destination did not answer an earlier notification in time; "
                                   "the next iacctl command sends it")
            state = "dead" if e.status == "dead" else "pending"
            parts.append(f"{e.destination_name} (task {e.task_id} {e.event}, entry {e.id}, {state}): {why}")
        dead = any(e.status == "dead" for e in undelivered)
        advice = "`iacctl pods recover` retries the pending ones"
        if dead:
            advice += "; retry a dead one with: iacctl outbox retry ID"
        lines.insert(0, f"{len(undelivered)} notification(s) not delivered yet: " + "; ".join(parts) + f"; {advice}")
        return "; ".join(lines)


def _local_summary(entries: list[OutboxEntry]) -> str:
    parts = [f"{e.kind} of task {e.task_id} (entry {e.id}, {e.status}): {e.last_error or 'not done yet'}"
             for e in sorted(entries, key=lambda e: e.id or 0)]
    return (f"{len(entries)} follow-up(s) not done yet: " + "; ".join(parts)
            + "; `iacctl pods recover` does them")


def dead_notice(store: Store, workspace_id: int, workspace_name: str) -> str | None:
    """F1/F3: one line while the workspace has dead follow-ups, until retried or dismissed."""
    with store.read() as session:
        dead = repo.outbox_entries(session, statuses=["dead"], workspace_id=workspace_id, limit=100)
    if not dead:
        return None
    e = dead[0]
    if len(dead) == 1:
        return (f"workspace {workspace_name} has a dead follow-up: outbox entry {e.id} ({_what(e)}, "
                f"task {e.task_id} {e.event}): {e.last_error}; retry it with: iacctl outbox "
                f"retry {e.id}, or dismiss it with: iacctl outbox dismiss {e.id}")
    return (f"workspace {workspace_name} has {len(dead)} dead follow-ups (latest: outbox entry {e.id}, {_what(e)}, "
            f"task {e.task_id} {e.event}: {e.last_error}); see: iacctl outbox list --status dead")


def _what(e: OutboxEntry) -> str:
    return f"notification {e.destination_name}" if e.kind == "notification" else (e.destination_name or e.kind)
