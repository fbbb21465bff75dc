"""Engines and sessions (SPEC C5): SQLite with WAL and a busy timeout, or PostgreSQL.

Many iacctl processes share one store. On SQLite every write transaction starts with
BEGIN IMMEDIATE: a deferred transaction that later wants to write can fail at once with
"database is locked" whatever the busy timeout; an immediate one waits its turn instead.
Reads use plain deferred transactions, which WAL never blocks.

Row locks are taken in ONE order everywhere (issue 18 item 6), so that two write
transactions never wait for each other in a circle ("deadlock detected" on PostgreSQL):

    1. the workspace row   (repo.lock_workspace_row; repo.transition takes it before the task
                            when the change frees a slot or the lock: ends, back to pending)
    2. the pool row        (repo.lock_pool_row: starts and scaling count capacity under it)
    3. task rows           (repo.transition's compare-and-set, heartbeats, stages)
    4. slot rows           (set_slot_state, release_slot_of; claim_idle_slot takes only free
                            slots FOR UPDATE SKIP LOCKED, so it never waits on one)
    then rows nobody else locks first (history, logs, state versions, outbox entries).

A transaction may skip a level but never goes back up one. SQLite has no row locks: BEGIN
IMMEDIATE makes writers take turns. Should a deadlock (SQLSTATE 40P01) or a serialization
failure (40001) happen anyway, `Store.transaction` runs the write again from its start a few
times (write() bodies that act outside the database are not re-run: they use write()).

Driver errors are translated here, where they enter, into StoreError lines that say what is
wrong and what to do (issue 13): a store kept busy past the busy timeout (and by whom, when
this machine can tell), a damaged file (after which this process writes nothing more to it),
a full disk, a file that is not an iacctl store, a number outside SQLite's 64-bit range.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlmodel import Session, col, create_engine

from iacctl.config import DEFAULT_BUSY_TIMEOUT_S, Settings
from iacctl.crypto import KEY_FILE_NAME, Cipher, find_key, key_check, key_source, load_key
from iacctl.domain.durations import format_duration
from iacctl.errors import KeyRefused, SecretKeyError, StoreError, UsageError
from iacctl.filelock import exclusive

BUSY_TIMEOUT_MS = int(DEFAULT_BUSY_TIMEOUT_S * 1000)
HEAD_REVISION = "0011"
_MIGRATIONS = Path(__file__).parent / "migrations"
# A new store file is empty only between its creation and the first pragma of the process
# creating it (journal_mode = WAL writes the header at once): wait that long before calling
# an empty file "not a store".
_EMPTY_FILE_GRACE_S = 2.0
# SQLite's WAL write lock: a POSIX lock on this byte of the -shm file (sqlite3.c WAL_WRITE_LOCK).
_WAL_WRITE_LOCK_OFFSET = 120
# Messages of the driver, not ours: what SQLite says when it meets each fault.
_BUSY = ("database is locked", "database table is locked")
_DAMAGED = ("malformed", "file is not a database", "disk i/o error", "file is encrypted")
_FULL = ("database or disk is full",)
_READ_ONLY = ("readonly database", "read-only database", "unable to open database file")
# Less free space than this where the store lives, and a failed write is the disk being full
# (SQLite reports a WAL that cannot grow as "disk I/O error").
_FULL_BELOW_BYTES = 256 * 1024
# Issue 18 item 6: what PostgreSQL says when a transaction must simply be run again.
_RETRY_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure
# How often a write transaction is tried in all, and the first pause between tries (jittered,
# growing): two transactions that deadlocked once should not meet again at the same instant.
WRITE_ATTEMPTS = 5
_RETRY_PAUSE_S = 0.05

T = TypeVar("T")
_AUTOCOMMIT: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"}


def _sqlite_engine(path: Path, *, immediate: bool, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> Engine:
    engine = create_engine(
        f"sqlite:///{path}", connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the driver (see the module docstring).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@dataclass(frozen=True)
class Opening:
    """What a process needs to know when it opens a store, read in one statement (issue 23: a
    store far away pays a round trip per question): the schema's revision, the key check, the
    local pool, and this machine's pod of it with its last heartbeat."""

    revision: str | None
    key_check: str | None
    local_pool_id: int | None
    pod_id: int | None
    pod_heartbeat_at: float | None
    # When the first outbox entry waiting is due (a retry, an expired claim); None: none waits.
    next_due_at: float | None = None
    beaten: bool = False  # the heartbeat was written with it (PostgreSQL)


_OPENING_FACTS = (
    "SELECT (SELECT version_num FROM alembic_version), "
    "(SELECT value FROM store_meta WHERE name = 'key_check'), "
    "(SELECT id FROM pools WHERE name = :pool), "
    "(SELECT pods.id FROM pods JOIN pools ON pools.id = pods.pool_id "
    " WHERE pools.name = :pool AND pods.machine = :machine ORDER BY pods.id LIMIT 1), "
    "(SELECT pods.heartbeat_at FROM pods JOIN pools ON pools.id = pods.pool_id "
    " WHERE pools.name = :pool AND pods.machine = :machine ORDER BY pods.id LIMIT 1), "
    "(SELECT min(CASE WHEN status = 'pending' THEN next_attempt_at ELSE lease_until END) FROM outbox "
    " WHERE status IN ('pending', 'delivering'))")
# PostgreSQL: the machine's heartbeat, when due, in the same round trip, and only on a store at
# this iacctl's revision whose key check is this process's (nothing is written by a process the
# store refuses). The SELECT sees the rows as they were before the UPDATE.
_OPENING_WITH_BEAT = (
    "WITH beat AS (UPDATE pods SET heartbeat_at = :now "
    " WHERE machine = :machine AND pool_id = (SELECT id FROM pools WHERE name = :pool) "
    " AND (heartbeat_at IS NULL OR heartbeat_at <= :due) "
    " AND (SELECT version_num FROM alembic_version) = :head "
    " AND (SELECT value FROM store_meta WHERE name = 'key_check') = :check "
    " RETURNING id) "
    + _OPENING_FACTS + ", (SELECT count(*) FROM beat)")


class Store:
    """One open store: the engines, the cipher for secrets, the settings it came from."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if settings.db_path is not None:
            try:
                settings.db_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the store directory {settings.db_path.parent}: {exc.strerror}"
                ) from None
            if settings.db_path.is_dir():
                raise StoreError(f"the store path {settings.db_path} is a directory")
            ms = int(settings.busy_timeout_s * 1000)
            self.write_engine = _sqlite_engine(settings.db_path, immediate=True, busy_timeout_ms=ms)
            self.read_engine = _sqlite_engine(settings.db_path, immediate=False, busy_timeout_ms=ms)
        else:
            try:
                from iacctl.store.postgres import quick_engine

                self.write_engine = quick_engine(settings.database_url)
            except ModuleNotFoundError as exc:
                if exc.name is None or not exc.name.startswith("psycopg"):
                    raise
                # Issue 18 item 7: the PostgreSQL driver is an extra of the package.
                raise StoreError("the PostgreSQL driver (psycopg) is not installed in the Python iacctl runs "
                                 "with; install it with: pip install 'iacctl[postgres]'") from None
            self.read_engine = self.write_engine
        self._cipher: Cipher | None = None
        self._key: bytes | None = None  # the store's key, once check_key has found it
        # Set once the store reported damage: nothing more is written to it by this process.
        self.damaged: str | None = None
        # Told the ids of outbox entries a committed write transaction added (F1).
        self.on_outbox_written: Callable[[list[int]], None] | None = None
        # Write transactions committed by this process: a command that wrote also sends the
        # follow-ups due again (issue 19 item 2).
        self.committed_writes = 0
        # What opening read, when the store was already as this iacctl needs it; None otherwise
        # (a new store, an upgrade, a store without a key check): the long way is taken then.
        self.opening: Opening | None = None

    @property
    def cipher(self) -> Cipher:
        if self._cipher is None:
            self._cipher = Cipher(self._key or load_key(self.settings.config_dir))
        return self._cipher

    # -- one key per store (issue 18 item 7) ------------------------------------------------------

    def check_key(self) -> None:
        """Refuse, before anything is written, a process whose key is not the store's: one read
        of the store's key check at open. A key is generated only for a store with no check and
        no secrets (a new store); a store made before the check gets it from the first key that
        opens its secrets (or, holding none, from the first key used)."""
        from iacctl.store.models import StoreMeta

        if self.opening is not None and self.opening.key_check is not None:
            stored: str | None = self.opening.key_check  # read with the opening (issue 23)
            sample = None
        else:
            with self.read() as session:
                row = session.get(StoreMeta, "key_check")
                stored = row.value if row is not None else None
                sample = _a_stored_secret(session) if stored is None else None
        key = find_key(self.settings.config_dir)
        if stored is not None:
            self._key = self._matching(key, stored)
            return
        if key is None and sample is not None:
            raise KeyRefused(self._no_key())
        if key is None:
            key = load_key(self.settings.config_dir)  # a new store: its key is made now
        if sample is not None:
            try:
                Cipher(key).decrypt(sample)
            except SecretKeyError:
                raise KeyRefused(self._wrong_key()) from None
        import hmac

        try:
            with self.write() as session:
                row = session.get(StoreMeta, "key_check")
                if row is None:
                    session.add(StoreMeta(name="key_check", value=key_check(key)))
                    check = key_check(key)
                else:  # another process wrote it first (SQLite: before our turn to write)
                    check = row.value
        except IntegrityError:
            # PostgreSQL: another process on a new store wrote it between our read and our
            # insert; its check is the store's, and ours is judged against it.
            with self.read() as session:
                written = session.get(StoreMeta, "key_check")
            if written is None:
                raise
            check = written.value
        if not hmac.compare_digest(check, key_check(key)):
            raise KeyRefused(self._wrong_key())
        self._key = key

    def _matching(self, key: bytes | None, stored: str) -> bytes:
        import hmac

        if key is None:
            raise KeyRefused(self._no_key())
        if not hmac.compare_digest(key_check(key), stored):
            raise KeyRefused(self._wrong_key())
        return key

    def _no_key(self) -> str:
        path = self.settings.config_dir / KEY_FILE_NAME
        return (f"the store {self.where} has a secret key and this machine has none (IACCTL_SECRET_KEY is not "
                f"set and there is no {path}); nothing was changed; set IACCTL_SECRET_KEY to the team's key, or "
                f"copy the key file of a machine that uses this store to {path}")

    def _wrong_key(self) -> str:
        path = self.settings.config_dir / KEY_FILE_NAME
        return (f"the secret key of this machine ({key_source(self.settings.config_dir)}) is not the key of the "
                f"store {self.where}; nothing was changed; set IACCTL_SECRET_KEY to the team's key, or copy the "
                f"key file of a machine that uses this store to {path}")

    @property
    def dialect(self) -> str:
        return self.write_engine.dialect.name

    @property
    def where(self) -> str:
        """The store as the user names it: the SQLite file, or PostgreSQL (no password)."""
        if self.settings.db_path is not None:
            return str(self.settings.db_path)
        from sqlalchemy.engine import make_url

        url = make_url(self.settings.database_url)  # as the user gave it, not with iacctl's dialect
        return f"PostgreSQL store {url.render_as_string(hide_password=True)}"

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: committed when the block ends, rolled back on error. Begun
        before the block runs, so that an SQLite "database is locked" at BEGIN is retried here,
        where nothing has run yet. A deadlock inside the block is not retried: the block may
        have acted outside the database (a work directory removed, a request sent); a block
        that only reads and writes rows uses `transaction`, which runs it again."""
        if self.damaged is not None:
            # Issue 13: a store that reported damage is not written to again by this command.
            raise StoreError(self.damaged)
        with self.translate_errors():
            session = self._begin_write()
            with session:
                try:
                    yield session
                    session.commit()
                    self.committed_writes += 1
                except BaseException:
                    session.rollback()
                    raise
                written = session.info.pop("outbox_written", None)
        if written and self.on_outbox_written is not None:
            # F1: follow-ups are delivered at once, once the change that caused them is committed.
            self.on_outbox_written(list(written))

    def transaction(self, body: Callable[[Session], T]) -> T:
        """Run `body` in a write transaction and commit; its result. A deadlock or a
        serialization failure (issue 18 item 6) rolls the attempt back and runs `body` again
        from its start, up to WRITE_ATTEMPTS times with a short jittered pause; only then the
        store error reaches the user. `body` must act only on the session (it may run more than
        once); raising an iacctl error from it ends the transaction as usual."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self.write() as session:
                    return body(session)
            except StoreError as exc:
                if not _must_retry(exc.__cause__):
                    raise
                if attempt == WRITE_ATTEMPTS:
                    raise StoreError(f"{exc} (the store kept reporting this in {WRITE_ATTEMPTS} attempts; "
                                     "nothing was changed; try again)") from exc.__cause__
            time.sleep(random.uniform(0.5, 1.5) * _RETRY_PAUSE_S * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _begin_write(self) -> Session:
        """A session in a write transaction already begun. On SQLite, BEGIN IMMEDIATE waits up
        to the busy timeout for the write lock; a "database is locked" that comes back sooner
        (it escaped the busy handler) is tried again, a few times, within that same timeout.
        Nothing has run in the transaction yet, so trying again is always safe."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            session = Session(self.write_engine, expire_on_commit=False)
            try:
                session.connection()  # BEGIN (IMMEDIATE on SQLite) runs now
                return session
            except OperationalError as exc:
                session.close()
                busy = any(b in str(exc).lower() for b in _BUSY)
                waited = time.monotonic() - started
                if not busy or self.dialect != "sqlite" or attempt >= WRITE_ATTEMPTS \
                        or waited >= self.settings.busy_timeout_s * 0.9:
                    raise
                time.sleep(random.uniform(0.5, 1.5) * _RETRY_PAUSE_S * attempt)

    @contextlib.contextmanager
    def write_alone(self) -> Iterator[Session]:
        """A write of ONE statement, which is its own transaction: on PostgreSQL it is sent
        without BEGIN and COMMIT, one round trip (issue 23); on SQLite it is an ordinary write."""
        if self.dialect != "postgresql":
            with self.write() as session:
                yield session
            return
        with self.translate_errors(), Session(self.write_engine, expire_on_commit=False) as session:
            with session.begin():
                session.connection(execution_options=_AUTOCOMMIT)
                yield session
            self.committed_writes += 1

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with self.translate_errors(), Session(self.read_engine, expire_on_commit=False) as session:
            with session.begin():
                if self.dialect == "postgresql":
                    # Issue 23: at READ COMMITTED each statement reads its own snapshot, inside a
                    # transaction or not; without one a read costs no BEGIN and COMMIT round trips.
                    session.connection(execution_options=_AUTOCOMMIT)
                yield session

    @contextlib.contextmanager
    def translate_errors(self) -> Iterator[None]:
        """Driver errors become one StoreError line saying what is wrong and what to do."""
        try:
            yield
        except StoreError:
            raise
        except OverflowError:
            # 5b: SQLite integers are 64-bit; a bigger id or count can name nothing stored.
            raise UsageError("a number is outside the store's range (at most 9223372036854775807)") from None
        except DBAPIError as exc:
            message = self.describe(exc)
            if message is None:
                raise
            raise StoreError(message) from exc

    def describe(self, exc: BaseException) -> str | None:
        """The user's line for a driver error, or None for errors callers handle themselves
        (integrity errors: a name taken by a concurrent process)."""
        orig = getattr(exc, "orig", None) or exc
        text = str(orig).strip().lower()
        sqlstate = getattr(orig, "sqlstate", None)
        if sqlstate == "25006":
            # Issue 19 item 4: a standby, or default_transaction_read_only: nothing was written.
            return (f"the {self.where} takes no writes (a read-only standby, or default_transaction_read_only "
                    "is on); nothing was changed; point IACCTL_DATABASE_URL at the primary server")
        if sqlstate == "53100":
            return (f"the disk of the {self.where} is full; nothing was saved; free space on the database "
                    "server and try again")
        if isinstance(exc, DBAPIError) and not isinstance(exc, OperationalError) \
                and not (isinstance(orig, sqlite3.DatabaseError) and type(orig) is sqlite3.DatabaseError):
            return None
        if any(b in text for b in _BUSY):
            return self._busy_message()
        unwritable = self._unwritable() if any(r in text for r in _READ_ONLY + _DAMAGED) else None
        if unwritable is not None:
            # Issue 19 item 4: SQLite says "disk I/O error" (or "unable to open") when the disk is
            # full or the file system read-only; the store is whole, and is not called damaged.
            return unwritable
        if any(r in text for r in _READ_ONLY):
            return (f"the store {self.where} cannot be written ({_short(exc)}); nothing was changed; make it "
                    "and its directory writable, or point IACCTL_DB at a writable store")
        if any(d in text for d in _DAMAGED):
            self.damaged = (f"the store {self.where} is damaged ({_short(exc)}); nothing more was written to it; "
                            "see what is damaged with: iacctl store check; then restore a backup "
                            f"(iacctl store backup makes one) or salvage it with: sqlite3 {self.where} .recover")
            return self.damaged
        if any(f in text for f in _FULL):
            where = self.settings.db_path.parent if self.settings.db_path else self.where
            return f"the disk holding the store is full ({where}); nothing was saved; free space and try again"
        return f"store error: {_short(exc)}"

    def _unwritable(self) -> str | None:
        """Why this machine cannot write the SQLite store's directory, if it cannot: a read-only
        file system, no permission, or a full disk (as statvfs and access(2) see it); else None."""
        path = self.settings.db_path
        if path is None:
            return None
        directory = path.parent
        try:
            fs = os.statvfs(directory)
        except OSError:
            return None
        if fs.f_flag & os.ST_RDONLY:
            return (f"the store {path} is on a read-only file system; nothing was changed; remount "
                    f"{directory} writable, or point IACCTL_DB at a writable store")
        if not os.access(directory, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            return (f"the store {path} cannot be written by this user (permissions of {directory} or of the "
                    "file); nothing was changed; let this user write both, or point IACCTL_DB at a writable store")
        if fs.f_bavail * fs.f_frsize < _FULL_BELOW_BYTES:
            return f"the disk holding the store is full ({directory}); nothing was saved; free space and try again"
        return None

    def _busy_message(self) -> str:
        seconds = format_duration(self.settings.busy_timeout_s)
        holder = wal_writer(self.settings.db_path) if self.settings.db_path is not None else None
        who = f"{holder}" if holder else "another process (not one this machine can name)"
        return (f"the store {self.where} is busy: {who} has held a write transaction for more than "
                f"{seconds}; nothing was changed; try again when it ends (raise IACCTL_BUSY_TIMEOUT to wait "
                "longer)")

    # -- operators' tools (issue 13): integrity check and online backup --------------------------

    def _sqlite_path(self) -> Path:
        path = self.settings.db_path
        if path is None:
            raise UsageError("this is a PostgreSQL store: use its own tools")
        if not path.is_file():
            raise UsageError(f"there is no store at {path}")
        return path

    def _raw(self, path: Path) -> sqlite3.Connection:
        return sqlite3.connect(path, timeout=self.settings.busy_timeout_s, isolation_level=None)

    def integrity_problems(self, limit: int = 20) -> list[str]:
        """SQLite's integrity check of every page and index, and that the file is an iacctl
        store; what is wrong, or [] when it is whole. Reads only."""
        path = self._sqlite_path()
        if path.stat().st_size == 0:
            return ["the file is empty (0 bytes): not an iacctl store"]
        try:
            con = self._raw(path)
            try:
                found = [str(r[0]) for r in con.execute(f"PRAGMA integrity_check({int(limit)})")]
                if found != ["ok"]:
                    return found
                tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "alembic_version" not in tables:
                    return ["an SQLite database but not an iacctl store (no alembic_version table)"]
                return []
            finally:
                con.close()
        except sqlite3.OperationalError as exc:
            if any(b in str(exc).lower() for b in _BUSY):
                raise StoreError(self._busy_message()) from None
            return [str(exc)]
        except sqlite3.DatabaseError as exc:
            return [str(exc)]

    def backup(self, dest: Path) -> int:
        """A consistent copy of the SQLite store made with SQLite's online backup API while
        other commands go on using it; the copy's size in bytes. Written beside `dest` first,
        then renamed into place, so a failed backup leaves no half file under that name."""
        path = self._sqlite_path()
        if dest.exists():
            raise UsageError(f"{dest} already exists; name a new file")
        if not dest.parent.is_dir():
            raise UsageError(f"the directory {dest.parent} does not exist")
        partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(fd)
            src = self._raw(path)
            try:
                target = sqlite3.connect(partial)
                try:
                    # One step (pages=-1): the whole copy is read in one read transaction, so
                    # it is one consistent moment of the store whatever others write meanwhile.
                    src.backup(target, pages=-1)
                    target.execute("PRAGMA journal_mode = DELETE")  # a single self-contained file
                finally:
                    target.close()
            finally:
                src.close()
            os.replace(partial, dest)
        except sqlite3.DatabaseError as exc:
            partial.unlink(missing_ok=True)
            if any(b in str(exc).lower() for b in _BUSY):
                raise StoreError(self._busy_message()) from None
            raise StoreError(f"the backup of {path} failed: {exc}") from None
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise StoreError(f"cannot write the backup {dest}: {exc.strerror}") from None
        return dest.stat().st_size

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()

    # -- schema -------------------------------------------------------------------------------

    def ensure_schema(self, opening_for: tuple[str, str, float] | None = None) -> None:
        """Create or upgrade the schema with Alembic, once, even with many processes starting
        together on a new store. With `opening_for` (the local pool's name, this machine's
        name, how often its heartbeat is due), the opening is read first, in one statement, and a store already at this
        iacctl's revision needs nothing more (issue 23). An existing file that is not an iacctl store (empty, another
        SQLite database, not a database at all) is refused, never taken as a new store."""
        existed = self._check_existing_file()
        if opening_for is not None:
            self.opening = self._read_opening(*opening_for)
            if self.opening is not None and self.opening.revision == HEAD_REVISION:
                return
            self.opening = None  # the long way below, and for the key, pool and pod after it
        if self._revision() == HEAD_REVISION:
            return
        with self._migration_lock():
            if self._revision() == HEAD_REVISION:
                return
            if existed and self._revision() is None:
                # Tables without an Alembic revision are someone else's; a store at an older
                # revision is upgraded (issue 19: migration 0010 for existing stores).
                self._refuse_foreign_tables()
            self._upgrade()

    def _check_existing_file(self) -> bool:
        """Whether the SQLite file existed before this process opened it; refuse an empty one
        (issue 13 item 5: it would silently be taken as a new, empty store)."""
        path = self.settings.db_path
        if path is None or not path.exists():
            return False
        deadline = time.monotonic() + _EMPTY_FILE_GRACE_S
        while path.stat().st_size == 0:
            if time.monotonic() > deadline:
                raise StoreError(f"the store file {path} is empty (0 bytes), not an iacctl store; point --db or "
                                 "IACCTL_DB at the store, or remove the file to start a new store there")
            time.sleep(0.05)  # a process creating a new store writes its header at once
        try:
            with open(path, "rb") as f:
                header = f.read(100)
        except OSError as exc:
            raise StoreError(f"cannot read the store file {path}: {exc.strerror}") from None
        if not header.startswith(b"SQLite format 3\x00"):
            raise StoreError(f"the file {path} is not an SQLite database, so not an iacctl store; point --db or "
                             "IACCTL_DB at the iacctl store (or run iacctl store check if it was one)")
        if len(header) > 19 and header[18] != 2:
            # Not in WAL mode, so never opened by iacctl (it turns WAL on at once): look at it
            # read-only, before the first connection's pragmas would change its header.
            try:
                con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                try:
                    names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                       "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
                finally:
                    con.close()
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"cannot read the store file {path}: {exc}") from None
            if "alembic_version" not in names:
                self._refuse_foreign(names)
        return True

    def _refuse_foreign_tables(self) -> None:
        if self.settings.db_path is None:
            return
        with self.translate_errors(), self.read_engine.connect() as conn:
            names = [r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                     "AND name NOT LIKE 'sqlite_%' ORDER BY name"))]
        self._refuse_foreign(names)

    def _refuse_foreign(self, names: list[str]) -> None:
        if names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise StoreError(f"the file {self.settings.db_path} is an SQLite database but not an iacctl store "
                             f"(it holds tables {shown}); point --db or IACCTL_DB at the iacctl store")

    def _read_opening(self, pool: str, machine: str, beat_every: float) -> Opening | None:
        """The Opening in one statement (on PostgreSQL with the machine's heartbeat when one is
        due, see _OPENING_WITH_BEAT); None when a table it reads is missing (a new store, an
        older revision) or it fails otherwise: the long way then says what is wrong."""
        params: dict[str, Any] = {"pool": pool, "machine": machine}
        sql = _OPENING_FACTS
        if self.dialect == "postgresql":
            try:
                key = find_key(self.settings.config_dir)
            except SecretKeyError:
                key = None
            t = time.time()
            sql = _OPENING_WITH_BEAT
            params.update(now=t, due=t - beat_every, head=HEAD_REVISION,
                          check=key_check(key) if key is not None else None)
        try:
            with self.read_engine.connect() as conn:
                if self.dialect == "postgresql":
                    conn = conn.execution_options(**_AUTOCOMMIT)  # the UPDATE commits by itself
                row = conn.execute(text(sql), params).one()
        except OperationalError as exc:
            reached = self._unreachable(exc)
            if reached is not None:
                raise StoreError(reached) from None
            return None
        except SQLAlchemyError:
            return None
        revision, check, pool_id, pod_id, beat, next_due = row[:6]
        beaten = len(row) > 6 and bool(row[6])
        if beaten:
            self.committed_writes += 1
        return Opening(revision=None if revision is None else str(revision), key_check=check,
                       local_pool_id=pool_id, pod_id=pod_id, pod_heartbeat_at=beat, next_due_at=next_due,
                       beaten=beaten)

    def _revision(self) -> str | None:
        try:
            with self.read_engine.connect() as conn:
                if self.dialect == "postgresql":
                    conn = conn.execution_options(**_AUTOCOMMIT)  # one round trip (issue 23)
                row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
                return str(row[0]) if row else None
        except OperationalError as exc:
            reached = self._unreachable(exc)
            if reached is not None:
                raise StoreError(reached) from None
            if "no such table" in str(exc) or "does not exist" in str(exc):
                return None
            raise StoreError(self._open_failure(exc)) from None
        except SQLAlchemyError as exc:
            if "UndefinedTable" in type(getattr(exc, "orig", exc)).__name__:
                return None
            raise StoreError(self._open_failure(exc)) from None

    def _unreachable(self, exc: BaseException) -> str | None:
        """Issue 18 item 7: a PostgreSQL server that cannot be used as the URL says, in one line
        naming the fix; None for anything else."""
        if self.settings.db_path is not None:
            return None
        said = str(getattr(exc, "orig", None) or exc)
        url = self.write_engine.url
        fix_url = "or fix IACCTL_DATABASE_URL"
        where = f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432}"
        role = re.search(r'role "([^"]+)" does not exist', said)
        if role:
            return (f"the role {role[1]} does not exist on {where}; create it (createuser --login {role[1]}, "
                    f"as a superuser) {fix_url}")
        database = re.search(r'database "([^"]+)" does not exist', said)
        if database:
            return (f"the database {database[1]} does not exist on {where}; create it (createdb --owner "
                    f"{url.username or 'ROLE'} {database[1]}) {fix_url}")
        if "password authentication failed" in said or "no password supplied" in said:
            return (f"{where} refused the password of role {url.username}; check the password in "
                    "IACCTL_DATABASE_URL (or PGPASSWORD / ~/.pgpass)")
        if "connection refused" in said.lower() or "could not translate host name" in said \
                or "timeout expired" in said or "no route to host" in said.lower():
            return (f"cannot connect to {where} ({_short(exc).rsplit(': ', 1)[-1].strip()}); start the server "
                    "(or open the way to it), or fix the host and port in IACCTL_DATABASE_URL")
        return None

    def _open_failure(self, exc: BaseException) -> str:
        text_ = str(getattr(exc, "orig", None) or exc).lower()
        if "file is not a database" in text_ and self.settings.db_path is not None:
            return (f"the file {self.settings.db_path} is not an SQLite database, so not an iacctl store; point "
                    "--db or IACCTL_DB at the iacctl store (or run iacctl store check if it was one)")
        message = self.describe(exc)
        return message if message and not message.startswith("store error:") else \
            f"cannot open the store: {_short(exc)}"

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.settings.db_path is not None:
            with exclusive(self.settings.db_path.with_name(self.settings.db_path.name + ".migrate-lock")):
                yield
        else:
            with self.write_engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(724017)"))
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(724017)"))
                    conn.commit()

    def _upgrade(self) -> None:
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        sqlite = self.settings.db_path is not None
        engine = self.write_engine
        if not sqlite:
            # Migrations reflect: SQLAlchemy's ordinary dialect asks the server what it needs.
            from iacctl.store.postgres import ordinary_url

            engine = create_engine(ordinary_url(self.settings.database_url))
        try:
            self._upgrade_on(engine, cfg, sqlite)
        finally:
            if engine is not self.write_engine:
                engine.dispose()

    def _upgrade_on(self, engine: Engine, cfg: Any, sqlite: bool) -> None:
        from alembic import command

        with engine.connect() as conn:
            if sqlite:
                # Migration 0010 rebuilds tables that others reference: SQLite checks foreign keys
                # on DROP TABLE unless they are off, which can only be set outside a transaction.
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = OFF")  # type: ignore[union-attr]
            try:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                if sqlite:
                    broken = conn.execute(text("PRAGMA foreign_key_check")).first()
                    if broken is not None:
                        raise StoreError(f"the store's upgrade would break a reference ({tuple(broken)}); "
                                         "nothing was changed; run: iacctl store check")
                conn.commit()
            finally:
                if sqlite:
                    conn.rollback()
                    conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = ON")  # type: ignore[union-attr]


def _must_retry(exc: BaseException | None) -> bool:
    """Issue 18 item 6: a PostgreSQL deadlock or serialization failure: the transaction was
    rolled back and running it again is the remedy."""
    orig = getattr(exc, "orig", None) or exc
    return getattr(orig, "sqlstate", None) in _RETRY_SQLSTATES


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


def wal_writer(db_path: Path) -> str | None:
    """Who holds the SQLite WAL write lock of this store, as far as this machine can tell:
    the POSIX lock on byte 120 of the -shm file, found in /proc/locks. None if unknown."""
    try:
        inode = os.stat(db_path.with_name(db_path.name + "-shm")).st_ino
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: POSIX  ADVISORY  WRITE 4711 08:01:123456 120 120"
        if len(fields) < 8 or fields[1] not in ("POSIX", "OFDLCK") or fields[3] != "WRITE":
            continue
        if fields[5].rsplit(":", 1)[-1] != str(inode) or fields[6] != str(_WAL_WRITE_LOCK_OFFSET):
            continue
        pid = fields[4]
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
        except OSError:
            argv = []
        if is_iacctl(argv, _comm(pid)):
            kind = "another iacctl command"
        elif argv and "sqlite3" in Path(argv[0]).name:
            kind = "an sqlite3 shell"
        else:
            kind = "a process that is not iacctl"
        shown = " ".join(" ".join(argv).split())[:60] if argv else "?"  # one line, whatever its arguments hold
        return f"{kind} (pid {pid}: {shown})" if pid != "-1" else kind
    return None


def _a_stored_secret(session: Session) -> bytes | None:
    """One encrypted blob of the store, if it holds any (X1): what a key must open to be the
    store's. Read only for a store without a key check yet, once."""
    from iacctl.store import models

    for model, name in ((models.Variable, "value_secret"), (models.FormerSecret, "value_secret"),
                        (models.StateVersion, "data_secret"),
                        (models.ConfigSnapshot, "data_secret"), (models.RunTask, "hmac_key_secret"),
                        (models.NotificationDestination, "token_secret"),
                        (models.NotificationDestination, "url_secret"),
                        (models.InventoryEndpoint, "hmac_key_secret"), (models.TaskLog, "line_secret")):
        column = col(getattr(model, name))
        found = session.execute(select(column).where(column.is_not(None)).limit(1)).scalar()
        if found is not None:
            return bytes(found)
    return None
def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def is_iacctl(argv: list[str], comm: str = "") -> bool:
    """Issue 21: whether a process is iacctl by what it runs, not by "iacctl" anywhere in its
    command line (a script given the store's path, under a directory named iacctl, is not):
    the `iacctl` command, `python -m iacctl`, or a runner iacctl started (named iacctl-runner)."""
    if not argv:
        return comm.startswith("iacctl")
    program = Path(argv[0]).name
    if program == "iacctl" or comm.startswith("iacctl"):
        return True
    if program.startswith("python"):
        rest = argv[1:]
        if "-m" in rest and rest.index("-m") + 1 < len(rest) and rest[rest.index("-m") + 1].startswith("iacctl"):
            return True
        script = next((a for a in rest if not a.startswith("-")), "")
        return Path(script).name == "iacctl"
    return False


def open_store(settings: Settings, opening_for: tuple[str, str, float] | None = None) -> Store:
    """The store, its schema current and its key checked. `opening_for`: see ensure_schema."""
    store = Store(settings)
    try:
        store.ensure_schema(opening_for)
    except OperationalError as exc:
        # A connection that fails past the first read (the migration lock, say) says the same.
        message = store._unreachable(exc)
        if message is None:
            raise
        raise StoreError(message) from None
    store.check_key()  # issue 18 item 7: before this process writes anything
    return store
