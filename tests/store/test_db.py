"""The store itself (SPEC C5): where it lives, SQLite in WAL mode with a busy timeout, and a
schema made by Alembic migrations that match the models exactly."""

from __future__ import annotations

import sqlite3

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel

from iacctl.store.db import BUSY_TIMEOUT_MS, HEAD_REVISION
from tests.conftest import Env


def test_schema_is_made_by_alembic_and_matches_the_models(any_env: Env) -> None:
    app = any_env.app()
    with app.store.write_engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == [], f"models and migrations differ: {diff}"


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(env: Env) -> None:
    env.ok("pods", "list")
    with sqlite3.connect(env.db_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    app = env.app()
    with app.store.write_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == BUSY_TIMEOUT_MS


def test_store_location_flag_env_and_default(env: Env) -> None:
    vars = {k: v for k, v in env.vars.items() if k != "IACCTL_DB"}
    vars["XDG_DATA_HOME"] = str(env.root / "xdg-data")
    env.vars = vars
    env.ok("workspace", "create", "a", "--dir", str(env.config("simple")))
    assert (env.root / "xdg-data" / "iacctl" / "iacctl.db").is_file()  # platformdirs default

    env.ok("--db", str(env.root / "flag.db"), "workspace", "create", "b", "--dir", str(env.root / "simple"))
    env.ok("workspace", "create", "c", "--dir", str(env.root / "simple"),
           extra_env={"IACCTL_DB": str(env.root / "envvar.db")})
    names = {
        path: {r[0] for r in sqlite3.connect(env.root / path).execute("SELECT name FROM workspaces")}
        for path in ("xdg-data/iacctl/iacctl.db", "flag.db", "envvar.db")
    }
    assert names == {"xdg-data/iacctl/iacctl.db": {"a"}, "flag.db": {"b"}, "envvar.db": {"c"}}


def test_a_store_holder_is_iacctl_by_what_it_runs_not_by_a_path_in_its_arguments() -> None:
    from iacctl.store.db import is_iacctl

    assert is_iacctl(["/usr/local/bin/iacctl", "plan", "net"])
    assert is_iacctl(["/usr/bin/python3", "-m", "iacctl", "plan", "net"])
    assert is_iacctl(["/venv/bin/python", "/venv/bin/iacctl", "pods", "recover"])
    assert is_iacctl(["/usr/bin/python3", "-m", "iacctl"], comm="iacctl-runner")
    assert not is_iacctl(["python3", "-", "/tmp/iacctl-test/store.db"])
    assert not is_iacctl(["python3", "hold.py", "--db", "/srv/iacctl/store.db"])
    assert not is_iacctl(["sqlite3", "/home/me/.local/share/iacctl/iacctl.db"])
