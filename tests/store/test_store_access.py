"""Issue 18 item 7: one key per store, and a PostgreSQL store that cannot be reached says what to
do. Through the installed command: a runner with another key, or none, is refused in one line
before it writes anything (the store unchanged) while the team's runners go on; a missing
driver, role or database, or a server that refuses connections, each get one line naming the
fix, never "internal error"."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Env, _base_vars, postgres_server

TEAM_KEY = "team-key-" + "7" * 24


@pytest.fixture
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return postgres_server(tmp_path_factory).create_database("t_" + uuid.uuid4().hex[:12])


def _machine(root: Path, url: str, key: str | None) -> Env:
    """One runner of the team: its own config directory and work root, the shared store."""
    root.mkdir()
    vars = _base_vars(root)
    vars["IACCTL_DATABASE_URL"] = url
    if key is not None:
        vars["IACCTL_SECRET_KEY"] = key
    return Env(root=root, vars=vars, backend="postgres")


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iacctl: "), err
    assert "internal error" not in err and "Traceback" not in err, err
    return lines[0]


def _snapshot(env: Env) -> tuple[object, ...]:
    return (env.ok("workspace", "list", "--json").out, env.ok("workspace", "var", "list", "net", "--json").out,
            env.ok("tasks", "list", "--json").out, env.ok("pods", "list", "--json").out)


def test_a_runner_without_the_teams_key_is_refused_before_it_writes(pg_url: str, tmp_path: Path) -> None:
    a = _machine(tmp_path / "a", pg_url, TEAM_KEY)
    a.workspace("net")
    a.ok("workspace", "var", "set", "net", "db_password", "hunter22", "--sensitive")
    a.ok("plan", "net", "--quiet", code=2)
    before = _snapshot(a)

    for key, expected in ((None, "this machine has none"), ("another key", "is not the key of the store")):
        b = _machine(tmp_path / f"b-{key or 'none'}".replace(" ", "-"), pg_url, key)
        for args in (("workspace", "var", "set", "net", "api_token", "s3cret", "--sensitive"),
                     ("plan", "net", "--quiet"), ("workspace", "list"), ("confirm-apply", "1")):
            r = b.run(*args)
            assert r.code == 5, (args, r.code, r.err)  # C3: refused
            line = _one_line(r.err)
            assert expected in line and "nothing was changed" in line, line
            assert "set IACCTL_SECRET_KEY to the team's key" in line, line
        # No key was generated for a store that has one.
        assert not (b.root / "config" / "secret.key").exists()
        assert _snapshot(a) == before

    # The team's runner goes on: its plan is applied with its secrets readable.
    a.ok("confirm-apply", "1", "--quiet")
    assert a.task(1)["status"] == "applied"


def test_a_store_made_before_the_key_check_gets_it_from_the_key_that_opens_it(env: Env) -> None:
    env.workspace("net")
    env.ok("workspace", "var", "set", "net", "db_password", "hunter22", "--sensitive")
    app = env.app()
    with app.store.write() as session:  # as a store made before this change: no check yet
        from sqlalchemy import text

        session.execute(text("DELETE FROM store_meta"))
    app.close()
    key_file = env.root / "config" / "secret.key"
    saved = key_file.read_bytes()
    key_file.unlink()
    r = env.run("workspace", "list")  # no key at all: refused, and none is generated
    assert r.code == 5 and "this machine has none" in _one_line(r.err)
    assert not key_file.exists()
    r = env.run("workspace", "list", extra_env={"IACCTL_SECRET_KEY": "a key that opens nothing"})
    assert r.code == 5 and "is not the key of the store" in _one_line(r.err)
    key_file.write_bytes(saved)
    key_file.chmod(0o600)
    env.ok("workspace", "list")  # the key that opens the secrets writes the check
    r = env.run("workspace", "list", extra_env={"IACCTL_SECRET_KEY": "a key that opens nothing"})
    assert r.code == 5 and "is not the key of the store" in _one_line(r.err)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_postgresql_stores_name_the_fix(pg_url: str, tmp_path: Path) -> None:
    base = pg_url.rsplit("/", 1)[0]  # postgresql+psycopg://postgres@127.0.0.1:PORT
    host_port = base.split("@", 1)[1]
    cases = [
        (f"postgresql://nobody_{uuid.uuid4().hex[:6]}@{host_port}/postgres", "createuser"),
        (f"{base}/missing_{uuid.uuid4().hex[:6]}", "createdb"),
        (f"postgresql://postgres@127.0.0.1:{_free_port()}/iacctl", "start the server"),
    ]
    for i, (url, fix) in enumerate(cases):
        m = _machine(tmp_path / f"m{i}", url, TEAM_KEY)
        r = m.run("workspace", "list")
        assert r.code == 1, (url, r.code, r.err)
        line = _one_line(r.err)
        assert fix in line and "IACCTL_DATABASE_URL" in line, line


def test_a_wrong_password_names_the_fix_and_the_right_one_opens_the_store(
        pg_url: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    server = postgres_server(tmp_path_factory)
    role = f"runner_{uuid.uuid4().hex[:6]}"
    server.role_with_password(role, "right-horse")
    host_port = pg_url.rsplit("/", 1)[0].split("@", 1)[1]
    database = pg_url.rsplit("/", 1)[1]
    wrong = _machine(tmp_path / "wrong", f"postgresql://{role}:battery@{host_port}/{database}", TEAM_KEY)
    r = wrong.run("workspace", "list")
    assert r.code == 1, r.err
    line = _one_line(r.err)
    assert "password" in line and role in line and "IACCTL_DATABASE_URL" in line, line
    assert "battery" not in r.err  # the password given is never printed
    right = _machine(tmp_path / "right", f"postgresql://{role}:right-horse@{host_port}/postgres", TEAM_KEY)
    r = right.run("workspace", "list")
    assert "password" not in r.err, r.err


def test_a_missing_postgresql_driver_names_the_extra(pg_url: str, tmp_path: Path) -> None:
    # The runner's Python cannot import psycopg (a module on PYTHONPATH that raises, as an
    # interpreter without the extra would): setting up the environment, not changing iacctl.
    shadow = tmp_path / "shadow"
    (shadow / "psycopg").mkdir(parents=True)
    (shadow / "psycopg" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'psycopg'\", "
                                                    "name='psycopg')\n")
    m = _machine(tmp_path / "m", pg_url, TEAM_KEY)
    r = m.run("workspace", "list", extra_env={"PYTHONPATH": str(shadow)})
    assert r.code == 1, r.err
    assert "pip install 'iacctl[postgres]'" in _one_line(r.err)


def test_a_machine_of_the_team_without_the_key_is_refused(team: Any) -> None:
    a, b = team.machine("ci-a"), team.machine("ci-b", key=None)
    a.workspace("net")
    a.ok("workspace", "var", "set", "net", "db_password", "hunter22", "--sensitive")
    before = _snapshot(a)
    for args in (("workspace", "var", "set", "net", "api_token", "s3cret", "--sensitive"),
                 ("plan", "net", "--quiet"), ("workspace", "list")):
        r = b.run(*args)
        assert r.code == 5, (args, r.code, r.err)
        assert "this machine has none" in _one_line(r.err)
    assert not (b.root / "config" / "secret.key").exists()
    assert _snapshot(a) == before
    a.ok("plan", "net", "--quiet", code=2)  # the team's runner goes on



@pytest.mark.parametrize("same_key", [True, False])
def test_two_runners_opening_a_new_store_at_once_agree_on_its_key(
        pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, same_key: bool) -> None:
    """Issue 18 item 7 on a new PostgreSQL store: another runner writes the key check between this
    runner's read and its insert. With the same key this runner goes on (before, its command
    failed, as a workspace create saying "already exists"); with another key it is refused."""
    from sqlalchemy import create_engine, text

    from iacctl.config import Settings
    from iacctl.crypto import _parse_key, key_check
    from iacctl.errors import KeyRefused
    from iacctl.store.db import Store

    monkeypatch.setenv("IACCTL_SECRET_KEY", TEAM_KEY)
    store = Store(Settings(database_url=pg_url, db_path=None, config_dir=tmp_path / "config",
                           work_root=tmp_path / "work"))
    store.ensure_schema()
    others = TEAM_KEY if same_key else "another runner's key"
    engine = create_engine(pg_url)
    outcome: list[BaseException | None] = []

    def open_it() -> None:
        try:
            store.check_key()
            outcome.append(None)
        except BaseException as exc:  # the test reads it below
            outcome.append(exc)

    try:
        with engine.connect() as other:  # the other runner: its insert made, not yet committed
            other.execute(text("INSERT INTO store_meta (name, value) VALUES ('key_check', :v)"),
                          {"v": key_check(_parse_key(others))})
            opener = threading.Thread(target=open_it)
            opener.start()
            # This runner's insert waits on the other's uncommitted row; then the other commits.
            deadline = time.monotonic() + 30
            while not other.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                         "AND datname = current_database()")).scalar():
                assert time.monotonic() < deadline and opener.is_alive(), outcome
                time.sleep(0.05)
            other.commit()
        opener.join(30)
    finally:
        engine.dispose()
        store.dispose()
    assert len(outcome) == 1
    if same_key:
        assert outcome[0] is None, repr(outcome[0])
    else:
        assert isinstance(outcome[0], KeyRefused) and "is not the key of the store" in str(outcome[0])
