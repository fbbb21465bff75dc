"""Issue 19 item 3: ids are never given twice, on SQLite (AUTOINCREMENT, migration 0010) and on
PostgreSQL (sequences), so nothing keyed to a deleted record (a task's run-N, a workspace's ws-N,
a destination's nc-N) lands on a new one; a deleted workspace's waiting follow-ups are dropped."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from iacctl.store.models import AUTOINCREMENT_TABLES
from tests.conftest import Env
from tests.fixtures.receivers import running_receiver


def test_a_deleted_workspace_task_and_destination_never_lend_their_ids(any_env: Env) -> None:
    env = any_env
    env.workspace("a")
    env.workspace("b")
    with running_receiver("ok") as ops, running_receiver("ok") as gone:
        env.ok("notify", "create", "ops", "--url", ops.url, "--events", "planned")
        env.ok("notify", "create", "pager", "--url", gone.url, "--events", "planned", "--workspace", "b")
    # pager's receiver is down now: b's plan leaves its notification waiting for a retry.
    with running_receiver("ok", port=int(ops.url.split(":")[2].split("/")[0])) as ops:
        r = env.ok("plan", "b", "--plan-only", "-q", code=2)
        assert "pager (task 1 planned" in r.err
        [first] = ops.wait_for(1)
        assert (first.payload["run_id"], first.payload["workspace_id"]) == ("run-1", "ws-2")
        env.ok("workspace", "delete", "b")
        dropped = [d for d in env.ok("notify", "deliveries", "--json").json() if d["result"] == "dropped"]
        assert [(d["destination"], d["task"], d["error"]) for d in dropped] == [
            ("pager", 1, "dropped with the workspace b")]
        assert [e["status"] for e in env.ok("outbox", "list", "--json").json() if e["destination"] == "pager"] \
            == ["dismissed"]
        # b's own destination went with it.
        assert [d["name"] for d in env.ok("notify", "list", "--json").json()] == ["ops"]
        env.ok("notify", "delete", "ops")
        env.ok("notify", "create", "ops", "--url", ops.url, "--events", "planned")
        env.workspace("c")
        env.ok("plan", "c", "--plan-only", "-q", code=2)
        got = ops.wait_for(2)
    p = got[-1].payload
    # The newest task (1), workspace (ws-2) and destination (nc-2) were deleted: new ids, not theirs.
    assert (p["run_id"], p["workspace_id"], p["notification_configuration_id"]) == ("run-2", "ws-3", "nc-3")
    assert env.task(2)["workspace"] == "c"


def _old_store(path: Path, env: Env) -> None:
    """A store as iacctl made it before migration 0010 (schema 0007), with rows in it."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    import iacctl.store.db as db

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0007")
        conn.commit()
    engine.dispose()
    from sqlmodel import Session, delete

    from iacctl.store.models import Pool, Workspace

    engine = create_engine(f"sqlite:///{path}")
    with Session(engine) as session:
        session.add(Pool(id=1, name="local", backend="local", created_at=0))
        for i in (1, 2, 3):
            session.add(Workspace(id=i, name=f"w{i}", source_dir=str(path.parent), pool_id=1, created_at=0,
                                  updated_at=0))
        session.commit()
        session.execute(delete(Workspace).where(Workspace.id == 3))  # type: ignore[arg-type]
        session.commit()  # deleted before the upgrade: SQLite may give its id again until then
    engine.dispose()


def test_an_existing_store_keeps_its_ids_and_then_never_reuses_one(env: Env, tmp_path: Path) -> None:
    path = env.db_path
    _old_store(path, env)
    env.ok("workspace", "list")  # opens the store: migrates it to the head
    con = sqlite3.connect(path, isolation_level=None)
    try:
        assert con.execute("SELECT id, name FROM workspaces ORDER BY id").fetchall() == [(1, "w1"), (2, "w2")]
        tables = dict(con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
        assert [t for t in AUTOINCREMENT_TABLES if "AUTOINCREMENT" not in tables[t]] == []
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"ix_tasks_workspace_status", "ix_outbox_status_due", "ix_slots_state"} <= indexes
    finally:
        con.close()
    env.ok("workspace", "delete", "w2")
    env.workspace("n")
    con = sqlite3.connect(path, isolation_level=None)
    try:
        assert con.execute("SELECT id, name FROM workspaces ORDER BY id").fetchall() == [(1, "w1"), (3, "n")]
    finally:
        con.close()
