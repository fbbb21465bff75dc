"""Issue 18 item 6: a deadlock or serialization failure inside a write transaction is run again
from its start by the store (Store.transaction), never shown to the user; the row lock order of
store/db.py keeps confirmations and starts from deadlocking in the first place."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session

from iacctl.config import Settings
from iacctl.errors import Refused, StoreError
from iacctl.store.db import Store
from tests.conftest import postgres_server


@pytest.fixture
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return postgres_server(tmp_path_factory).create_database("t_" + uuid.uuid4().hex[:12])


def _store(url: str, tmp_path: Path) -> Store:
    store = Store(Settings(database_url=url, db_path=None, config_dir=tmp_path / "config",
                           work_root=tmp_path / "work"))
    with store.write() as session:
        session.execute(text("CREATE TABLE counters (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"))
        session.execute(text("INSERT INTO counters VALUES (1, 0), (2, 0)"))
    return store


def test_a_real_deadlock_is_run_again_and_both_writes_land(pg_url: str, tmp_path: Path) -> None:
    store = _store(pg_url, tmp_path)
    both_hold_one = threading.Barrier(2, timeout=20)
    runs: dict[str, int] = {"a": 0, "b": 0}
    errors: list[BaseException] = []

    def bump(name: str, first: int, second: int) -> None:
        def body(session: Session) -> int:
            runs[name] += 1
            session.execute(text("UPDATE counters SET n = n + 1 WHERE id = :id"), {"id": first})
            if runs[name] == 1:
                both_hold_one.wait()  # each holds one row and wants the other's: a real deadlock
            session.execute(text("UPDATE counters SET n = n + 1 WHERE id = :id"), {"id": second})
            return runs[name]

        try:
            store.transaction(body)
        except BaseException as exc:  # reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=bump, args=("a", 1, 2)), threading.Thread(target=bump, args=("b", 2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    # PostgreSQL chose one victim (40P01); that body ran again from its start and committed.
    assert sorted(runs.values()) == [1, 2]
    with store.read() as session:
        assert session.execute(text("SELECT n FROM counters ORDER BY id")).scalars().all() == [2, 2]
    store.dispose()


def test_other_errors_are_not_run_again(pg_url: str, tmp_path: Path) -> None:
    store = _store(pg_url, tmp_path)
    runs = 0

    def refused(session: Session) -> None:
        nonlocal runs
        runs += 1
        session.execute(text("UPDATE counters SET n = 7 WHERE id = 1"))
        raise Refused("not now")

    with pytest.raises(Refused):
        store.transaction(refused)

    def bad(session: Session) -> None:
        nonlocal runs
        runs += 1
        session.execute(text("INSERT INTO counters VALUES (1, 1)"))  # a duplicate key

    with pytest.raises(Exception) as caught:
        store.transaction(bad)
    assert not isinstance(caught.value, StoreError) or "attempts" not in str(caught.value)
    assert runs == 2  # each ran once
    with store.read() as session:  # both rolled back
        assert session.execute(text("SELECT n FROM counters ORDER BY id")).scalars().all() == [0, 0]
    store.dispose()
