"""The application object shared by the commands: settings, the store, runtimes per pool."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from iacctl.config import Settings, follow_up_budget, load_settings
from iacctl.domain.actors import Actor, actor_from
from iacctl.domain.slots import PodStatus, SlotState
from iacctl.errors import UsageError
from iacctl.machine import machine
from iacctl.store import repo
from iacctl.store.db import Store, open_store
from iacctl.store.models import Pod, Pool, Slot

if TYPE_CHECKING:
    from iacctl.runtimes.base import PodBackend, Runtime
    from iacctl.services import outbox

LOCAL_POOL = "local"
LOCAL_POD = "local"
DEFAULT_SLOTS = 3


class App:
    def __init__(self, db: str | None = None) -> None:
        self.settings: Settings = load_settings(db)
        self._store: Store | None = None
        self._deliverer: outbox.Deliverer | None = None
        self._budget = 0.0
        self._swept = False
        self._writes_at_open = 0  # this command is a sweep: it sent every due entry itself, and said so
        self.local_pod_id: int | None = None  # this machine's pod of the local pool (issue 18 item 4)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._budget = follow_up_budget()
            self._store = open_store(self.settings, opening_for=(LOCAL_POOL, machine(), POD_BEAT_SECONDS))
            ensure_local_pool(self._store)
            self.local_pod_id = ensure_machine_pod(self._store)
            # Opening may write (the local pool, this machine's pod and its heartbeat): that is
            # not the command writing, and a listing that opened a store sends no follow-ups.
            self._writes_at_open = self._store.committed_writes
            # F1: what this command's status changes write to the outbox, it delivers at once.
            self._store.on_outbox_written = self._outbox_written
        return self._store

    def _outbox_written(self, ids: list[int]) -> None:
        # Issue 20: delivery (httpx, payloads, follow-up handlers) is imported by the first
        # command that writes to the outbox, never by a listing.
        if self._deliverer is None:
            from iacctl.services import outbox

            self._deliverer = outbox.Deliverer(self.store, self._budget)
            self._deliverer.due_retries = not self._swept
        self._deliverer.written(ids)

    def outbox_swept(self) -> None:
        """S8: this command (a sweep) sends every due entry itself and reports each; its end
        sends no due retries beside them, which its report would not name (two cron sweeps at
        once each sent some without saying so)."""
        self._swept = True
        if self._deliverer is not None:
            self._deliverer.due_retries = False

    def wrote_follow_ups(self) -> bool:
        """F1: whether this command has follow-ups to finish: it wrote outbox entries, or it wrote
        to the store at all, and so also sends the entries due again (issue 19 item 2: no event
        needs cron). A listing writes nothing and imports no delivery (issue 20)."""
        if self._deliverer is not None:
            return True
        return self._store is not None and self._store.committed_writes > self._writes_at_open and self._budget > 0 \
            and not self._swept

    def finish_follow_ups(self) -> str | None:
        """F1: wait at most the budget for this command's follow-ups; a line saying what is not
        delivered yet, or None."""
        if not self.wrote_follow_ups():
            return None
        if self._deliverer is None:
            from iacctl.services import outbox

            self._deliverer = outbox.Deliverer(self.store, self._budget)
        return self._deliverer.finish()

    def handle_run_triggers_now(self) -> None:
        """F4, issue 21: this command's follow-ups, in their usual order (notifications within
        the budget, then run triggers), before it reports, so that it can name the plans its
        triggers queued. The command's end finds nothing more to do and says what is pending."""
        self.finish_follow_ups()

    def queued_by_follow_ups(self) -> list[int]:
        """F4: the plans this command's run triggers queued (started by services.queue)."""
        return self._deliverer.queued_tasks() if self._deliverer is not None else []

    def runtime_for(self, pool: Pool) -> Runtime:
        if pool.backend == "local":
            from pathlib import Path

            from iacctl.runtimes.local import LocalRuntime

            root = Path(pool.work_root) if pool.work_root else self.settings.work_root
            return LocalRuntime(root)
        if pool.backend == "kubernetes":
            # S7: built per pool from its spec; the client itself loads on first use.
            from iacctl.runtimes.kubernetes import KubernetesRuntime, KubeSpec

            return KubernetesRuntime(pool.name, KubeSpec.from_json(pool.spec_json, pool.work_root))
        raise UsageError(f"pool {pool.name} has backend {pool.backend!r}, which this iacctl cannot run")

    def pod_backend_for(self, pool: Pool) -> PodBackend:
        """S3/S7: the pods of a pool whose backend creates them."""
        backend = self.runtime_for(pool).pod_backend()
        if backend is None:
            raise UsageError(f"pool {pool.name} is a {pool.backend} pool: it has no pods to create or delete")
        return backend

    def runtime_for_pool_id(self, pool_id: int) -> Runtime:
        with self.store.read() as session:
            pool = session.get(Pool, pool_id)
        if pool is None:
            raise UsageError(f"unknown pool id {pool_id}")
        return self.runtime_for(pool)

    def close(self) -> None:
        if self._store is not None:
            with contextlib.suppress(Exception):
                self.finish_follow_ups()
            self._store.dispose()


def current_actor(message: str | None = None) -> Actor:
    """Issue 9: who runs this command: the local user and host, and the CI system's identity."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = f"uid {os.getuid()}"
    return actor_from(os.environ, user, socket.gethostname()).with_message(message)


def _local_slots() -> int:
    raw = os.environ.get("IACCTL_LOCAL_SLOTS")
    if raw is None:
        return DEFAULT_SLOTS
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"IACCTL_LOCAL_SLOTS must be a whole number, not {raw!r}") from None
    if not 1 <= value <= 64:
        raise UsageError("IACCTL_LOCAL_SLOTS must be between 1 and 64")
    return value


def ensure_local_pool(store: Store) -> None:
    """S1: the embedded `local` pool, one pod standing for this machine, 3 slots by default."""
    if store.opening is not None and store.opening.local_pool_id is not None:
        return  # read when the store was opened (issue 23)
    with store.read() as session:
        if repo.find_pool(session, LOCAL_POOL) is not None:
            return
    slots = _local_slots()
    try:
        with store.write() as session:
            if repo.find_pool(session, LOCAL_POOL) is not None:
                return
            t = repo.now()
            pool = Pool(name=LOCAL_POOL, backend="local", slots_per_pod=slots, min_pods=1, max_pods=1,
                        created_at=t)
            session.add(pool)
            session.flush()
            pod = Pod(pool_id=pool.id or 0, name=LOCAL_POD, status=PodStatus.READY, created_at=t)
            session.add(pod)
            session.flush()
            for i in range(slots):
                session.add(Slot(pod_id=pod.id or 0, slot_index=i, state=SlotState.IDLE, updated_at=t))
    except IntegrityError:
        pass  # another process created it first (PostgreSQL)


# Issue 18 item 4: how often a command or runner of this machine writes its pod's heartbeat (at
# most); other machines judge this one dead when it is older than the heartbeat timeout.
POD_BEAT_SECONDS = 5.0


def pod_name_of(machine: str) -> str:
    """A machine's pod name: its machine name (hostname/fingerprint) as one path segment."""
    return machine.replace("/", "-")


def ensure_machine_pod(store: Store) -> int | None:
    """Issue 18 item 4: this machine's own pod of the local pool, registered on first use by its
    machine name (iacctl.machine.machine()), and its heartbeat. The first machine to use a
    store adopts the pod named `local` that every store had before (its slots and the plans
    waiting in them stay where they are); every other machine gets a pod of its own with the
    pool's slot count (or IACCTL_LOCAL_SLOTS). Returns its id."""
    me = machine()
    t = repo.now()
    opened = store.opening
    if opened is not None and opened.pod_id is not None:
        # Issue 23: known from the opening, which on PostgreSQL also wrote the heartbeat if due;
        # elsewhere a heartbeat due is one statement by itself.
        due = opened.pod_heartbeat_at is None or t - opened.pod_heartbeat_at >= POD_BEAT_SECONDS
        if due and not opened.beaten:
            with store.write_alone() as session:
                repo.beat_pod(session, opened.pod_id, t)
        return opened.pod_id
    with store.read() as session:
        pool = repo.find_pool(session, LOCAL_POOL)
        if pool is None:
            return None
        pod = repo.machine_pod(session, pool.id or 0, me)
        if pod is not None and pod.heartbeat_at is not None and t - pod.heartbeat_at < POD_BEAT_SECONDS:
            return pod.id
    try:
        with store.write() as session:
            pod = repo.machine_pod(session, pool.id or 0, me)
            if pod is None:
                # Two processes of a new machine at once: the pool's row makes them take turns,
                # and the second finds the pod the first adopted or added (on PostgreSQL both
                # read "no pod" before either committed, and the second added a pod of its own).
                repo.lock_pool_row(session, pool.id or 0)
                pod = repo.machine_pod(session, pool.id or 0, me) or _adopt_or_add_pod(session, pool, me, t)
            repo.beat_pod(session, pod.id, t)
            return pod.id
    except IntegrityError:
        with store.read() as session:  # another process of this machine registered it first
            pod = repo.machine_pod(session, pool.id or 0, me)
            return pod.id if pod is not None else None


def _adopt_or_add_pod(session: Session, pool: Pool, me: str, t: float) -> Pod:
    legacy = session.exec(select(Pod).where(Pod.pool_id == pool.id, Pod.name == LOCAL_POD,
                                            col(Pod.machine).is_(None))).first()
    if legacy is not None:
        legacy.machine = me
        legacy.slots_per_pod = legacy.slots_per_pod or pool.slots_per_pod
        session.add(legacy)
        session.flush()
        return legacy
    slots = _local_slots() if os.environ.get("IACCTL_LOCAL_SLOTS") else pool.slots_per_pod
    pod = Pod(pool_id=pool.id or 0, name=pod_name_of(me), machine=me, status=PodStatus.READY, created_at=t,
              heartbeat_at=t, slots_per_pod=slots)
    session.add(pod)
    session.flush()
    for i in range(slots):
        session.add(Slot(pod_id=pod.id or 0, slot_index=i, state=SlotState.IDLE, updated_at=t))
    return pod
