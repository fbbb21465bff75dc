"""The PostgreSQL engine of a store that may be far away (issue 23: a team's store 40 ms away, on
the VPN or in another region): each round trip costs the user, so none is spent on what the
connection already said.

- SQLAlchemy's first connection asks the server its version, schema, isolation level and
  `standard_conforming_strings`, and looks up hstore inside a savepoint (about ten round trips
  in every process). The server reports its version and `standard_conforming_strings` at
  start-up; iacctl's transactions are READ COMMITTED by its own choice (the row-lock order of
  store/db.py presumes it), its tables live in the connection's default schema, and it uses no
  hstore. So the dialect here asks nothing.
- A connection is pinged before use only when it has been idle long enough to have been
  dropped (a server restart, an idle timeout, a NAT on the VPN), not before every session: a
  command's sessions follow each other within milliseconds.

Migrations (rare: an upgrade of iacctl) use SQLAlchemy's ordinary engine, which does ask.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from sqlalchemy import event, exc
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import Engine
from sqlmodel import create_engine

# A pooled connection unused for longer than this is pinged before it is used again.
PING_AFTER_IDLE_S = 10.0
# iacctl's transactions (see the module docstring).
ISOLATION: Literal["READ COMMITTED"] = "READ COMMITTED"
_DRIVER = "iacctl_psycopg"


class QuickDialect(PGDialect_psycopg):
    """PostgreSQL through psycopg 3, set up from what the server said at connection start-up."""

    # Only how the dialect learns the server's facts differs; SQL is compiled as by its parent.
    supports_statement_cache = True

    def __init__(self, **kw: Any) -> None:
        kw.setdefault("use_native_hstore", False)
        super().__init__(**kw)  # type: ignore[no-untyped-call]

    def _get_server_version_info(self, connection: Any) -> tuple[int, ...]:
        # psycopg's server_version: 150004 for 15.4 (and 90624 for 9.6.24), from start-up.
        v = int(connection.connection.dbapi_connection.info.server_version)
        return (v // 10000, v % 10000) if v >= 100000 else (v // 10000, v // 100 % 100, v % 100)

    def _get_default_schema_name(self, connection: Any) -> str:
        return "public"  # only reflection reads it, and only migrations reflect (ordinary engine)

    def get_default_isolation_level(self, dbapi_conn: Any) -> Literal["READ COMMITTED"]:
        return ISOLATION

    def _set_backslash_escapes(self, connection: Any) -> None:
        said = connection.connection.dbapi_connection.info.parameter_status("standard_conforming_strings")
        self._backslash_escapes = said == b"off"


registry.register(f"postgresql.{_DRIVER}", __name__, "QuickDialect")


def quick_url(url: str) -> str:
    """`url` (postgresql:// or postgresql+psycopg://) with this module's dialect."""
    for prefix in ("postgresql+psycopg://", "postgresql://"):
        if url.startswith(prefix):
            return f"postgresql+{_DRIVER}://" + url[len(prefix):]
    return url


def ordinary_url(url: str) -> str:
    """`url` with SQLAlchemy's own psycopg dialect (which asks the server at first connect)."""
    prefix = f"postgresql+{_DRIVER}://"
    if url.startswith(prefix):
        return "postgresql+psycopg://" + url[len(prefix):]
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def quick_engine(url: str) -> Engine:
    """The engine of a command or runner: no probes, a ping only after PING_AFTER_IDLE_S."""
    engine = create_engine(quick_url(url), isolation_level=ISOLATION)

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        from psycopg import pq

        try:
            # The connection is idle, outside any transaction: an empty query is one round
            # trip and begins nothing.
            answer = dbapi_conn.pgconn.exec_(b"")
            alive = answer.status == pq.ExecStatus.EMPTY_QUERY and dbapi_conn.pgconn.status == pq.ConnStatus.OK
        except Exception:
            alive = False
        if not alive:
            # The pool drops this connection and checks out a new one (SQLAlchemy's
            # pessimistic disconnect handling).
            raise exc.DisconnectionError("the store's connection was dropped while idle")

    return engine
