"""Hearing a cancel while a task runs (SPEC E1, task 8 of the core issue).

A cancel reaches a running task two ways: `iacctl cancel` in another terminal writes
`cancel_requested_at` on the task (this works across machines sharing a PostgreSQL store), and
Ctrl-C or SIGTERM in this process sets a flag (the watcher records it). The watcher also beats
the heartbeat and flushes the task log on time.

Issue 23: a running task is nearly silent toward a store that may be far away. On PostgreSQL the
watcher LISTENs on a connection of its own and `iacctl cancel` NOTIFYs at its commit, so waiting
costs no round trip; the heartbeat (one statement) also reads the request, should a notification
be lost with a dropped connection. On SQLite, a local file, the watcher reads the task as before.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from iacctl.config import heartbeat_interval
from iacctl.executor.tasklog import TaskLog
from iacctl.store import repo
from iacctl.store.db import Store

_POLL_SECONDS = 0.3

# Set by the CLI's signal handlers (Ctrl-C, SIGTERM); read by whatever runs in this process.
interrupted = threading.Event()


def stop_gracefully_on_signals() -> None:
    """Ctrl-C and SIGTERM (a CI job being cancelled) ask the running task to stop gracefully:
    Terraform gets SIGINT and the task goes through the termination path (E1, E2)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        if interrupted.is_set():
            sys.stderr.write("iacctl: already stopping; waiting for Terraform to finish cleanly\n")
            return
        interrupted.set()
        sys.stderr.write("iacctl: interrupt received; stopping the task gracefully\n")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    # Issue 19 item 6: only SIGINT, SIGTERM and `iacctl cancel` cancel. A terminal that goes
    # away (SIGHUP) leaves the task to go on as a detached one would; its output stops
    # (cli.render.write) and its result is in `tasks show`.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


class _CancelListener:
    """PostgreSQL: the cancel notifications of one task, heard on a connection of its own."""

    def __init__(self, store: Store, task_id: int) -> None:
        self._payload = str(task_id)
        self._raw: Any = store.write_engine.raw_connection()
        try:
            self._conn: Any = getattr(self._raw, "driver_connection")  # noqa: B009 - typed loosely by SQLAlchemy
            self._conn.autocommit = True
            self._conn.execute(f"LISTEN {repo.CANCEL_CHANNEL}")
        except Exception:
            self.close()
            raise

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` (no round trip while waiting); whether this task's cancel came."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            heard = list(self._conn.notifies(timeout=left, stop_after=1))
            if not heard:
                return False
            if any(n.payload == self._payload for n in heard):
                return True
        return False

    def close(self) -> None:
        try:
            self._raw.invalidate()  # it listens: never handed to another session
        except Exception:
            pass


class CancelWatch:
    def __init__(self, store: Store, task_id: int) -> None:
        self.store = store
        self.task_id = task_id
        self.log: TaskLog | None = None
        self._requested = threading.Event()
        self._recorded = False
        self._record_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_beat = 0.0
        # Issue 18 item 3: other machines take this runner for dead once its heartbeat is older
        # than IACCTL_HEARTBEAT_TIMEOUT; it beats a few times per timeout.
        self._beat_every = heartbeat_interval()
        self._listener: _CancelListener | None = None

    def requested(self) -> bool:
        if interrupted.is_set():
            self._requested.set()
        return self._requested.is_set()

    def start(self) -> None:
        if self.store.dialect == "postgresql":
            try:
                self._listener = _CancelListener(self.store, self.task_id)
            except Exception:
                self._listener = None  # the watcher asks the store instead, as on SQLite
        self._thread = threading.Thread(target=self._loop, name=f"watch-task-{self.task_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._listener is not None and (self._thread is None or not self._thread.is_alive()):
            self._listener.close()
            self._listener = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._listener is not None:
                try:
                    if self._listener.wait(_POLL_SECONDS):
                        self._requested.set()
                except Exception:
                    self._listener.close()  # a dropped connection: ask the store from now on
                    self._listener = None
            elif self._stop.wait(_POLL_SECONDS):
                break
            try:
                self._tick()
            except Exception:
                continue

    def record_interrupt(self) -> None:
        """Write down that a signal asked for the cancel (L7), once, whichever thread sees it
        first: the watcher, or the executor acting on the cancel before the watcher woke."""
        with self._record_lock:
            if self._recorded or not interrupted.is_set():
                return
            self._requested.set()
            with self.store.write() as session:
                task = repo.get_task(session, self.task_id)
                if task.cancel_requested_at is None:
                    repo.update_task(session, self.task_id, cancel_requested_at=repo.now())
                    repo.add_event(session, self.task_id, "note", None, None,
                                   "cancel requested (interrupt signal)")
            self._recorded = True

    def _tick(self) -> None:
        self.record_interrupt()
        if not self._requested.is_set() and self._listener is None:
            with self.store.read() as session:
                task = repo.get_task(session, self.task_id)
                if task.cancel_requested_at is not None:
                    self._requested.set()
        t = time.monotonic()
        if t - self._last_beat > self._beat_every:
            with self.store.write_alone() as session:
                if repo.beat_task(session, self.task_id, repo.now()):
                    self._requested.set()
            self._last_beat = t
        if self.log is not None:
            self.log.flush_if_due()
