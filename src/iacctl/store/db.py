"""Engines and sessions (SPEC C5): SQLite with WAL and a busy timeout, or PostgreSQL.

Many iacctl processes share one store. On SQLite every write transaction starts with
BEGIN IMMEDIATE: a deferred transaction that later wants to write can fail at once with
"database is locked" whatever the busy timeout; an immediate one waits its turn instead.
Reads use plain deferred transactions, which WAL never blocks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlmodel import Session, create_engine

from iacctl.config import Settings
from iacctl.crypto import Cipher, load_key
from iacctl.errors import StoreError
from iacctl.filelock import exclusive

BUSY_TIMEOUT_MS = 60_000
HEAD_REVISION = "0003"
_MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_engine(path: Path, *, immediate: bool) -> Engine:
    engine = create_engine(
        f"sqlite:///{path}", connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the driver (see the module docstring).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


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
            self.write_engine = _sqlite_engine(settings.db_path, immediate=True)
            self.read_engine = _sqlite_engine(settings.db_path, immediate=False)
        else:
            url = settings.database_url
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
            self.write_engine = create_engine(url, pool_pre_ping=True)
            self.read_engine = self.write_engine
        self._cipher: Cipher | None = None

    @property
    def cipher(self) -> Cipher:
        if self._cipher is None:
            self._cipher = Cipher(load_key(self.settings.config_dir))
        return self._cipher

    @property
    def dialect(self) -> str:
        return self.write_engine.dialect.name

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: committed when the block ends, rolled back on error."""
        with _translate_errors(), Session(self.write_engine, expire_on_commit=False) as session:
            with session.begin():
                yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with _translate_errors(), Session(self.read_engine, expire_on_commit=False) as session:
            with session.begin():
                yield session

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()

    # -- schema -------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create or upgrade the schema with Alembic, once, even with many processes starting
        together on a new store."""
        if self._revision() == HEAD_REVISION:
            return
        with self._migration_lock():
            if self._revision() == HEAD_REVISION:
                return
            self._upgrade()

    def _revision(self) -> str | None:
        try:
            with self.read_engine.connect() as conn:
                row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
                return str(row[0]) if row else None
        except OperationalError as exc:
            if "no such table" in str(exc) or "does not exist" in str(exc):
                return None
            raise StoreError(f"cannot open the store: {_short(exc)}") from None
        except SQLAlchemyError as exc:
            if "UndefinedTable" in type(getattr(exc, "orig", exc)).__name__:
                return None
            raise StoreError(f"cannot open the store: {_short(exc)}") from None

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
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        with self.write_engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


@contextlib.contextmanager
def _translate_errors() -> Iterator[None]:
    try:
        yield
    except OperationalError as exc:
        raise StoreError(f"store error: {_short(exc)}") from exc


def open_store(settings: Settings) -> Store:
    store = Store(settings)
    store.ensure_schema()
    return store
