"""Issue 24 item 4 (X2): every value a sensitive variable ever held is remembered, encrypted,
and `repo.values_to_mask` gives them with the current ones; a value is remembered once, a plain
value never, and a deleted workspace takes its former secrets along. A store on a real SQLite
file, changed through the variable commands' services; no Terraform, no processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from iacctl.domain.masking import FORMER_VALUES_KEPT
from iacctl.services import workspaces
from iacctl.services.app import App
from iacctl.store import repo
from iacctl.store.models import FormerSecret


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    for key in ("IACCTL_DATABASE_URL", "IACCTL_SECRET_KEY", "IACCTL_LOCAL_SLOTS", "IACCTL_FOLLOW_UP_BUDGET"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("IACCTL_DB", str(tmp_path / "store.db"))
    monkeypatch.setenv("IACCTL_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("IACCTL_WORK_ROOT", str(tmp_path / "work"))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.tf").write_text("")
    application = App()
    workspaces.create(application, "net", str(tmp_path / "src"))
    yield application
    application.close()


def _set(app: App, key: str, value: str, *, sensitive: bool = True, env: bool = False) -> None:
    workspaces.set_variable(app, "net", key, value, sensitive=sensitive, env=env, hcl=False)


def _masked(app: App, workspace: str = "net") -> list[str]:
    with app.store.read() as session:
        ws = repo.get_workspace(session, workspace)
        return repo.values_to_mask(session, app.store.cipher, ws.id or 0)


def _former_rows(app: App) -> list[FormerSecret]:
    with app.store.read() as session:
        return list(session.exec(select(FormerSecret)).all())


def test_a_replaced_secret_is_masked_with_the_current_one_and_kept_only_encrypted(app: App) -> None:
    _set(app, "pw", "secret-one")
    assert _masked(app) == ["secret-one"]
    _set(app, "pw", "secret-two")
    _set(app, "pw", "secret-three")
    assert _masked(app) == ["secret-three", "secret-one", "secret-two"]  # longest first
    rows = _former_rows(app)
    assert [(r.key, r.category) for r in rows] == [("pw", "terraform")] * 2
    for row in rows:
        assert b"secret" not in row.value_secret  # X1: encrypted with the store's key
    # X2: the variable commands never show one.
    assert workspaces.list_variables(app, "net") == [
        {"key": "pw", "category": "terraform", "sensitive": True, "hcl": False, "value": None}]


def test_a_value_is_remembered_once_and_one_set_again_is_still_current(app: App) -> None:
    _set(app, "pw", "secret-one")
    _set(app, "pw", "secret-one")  # the same again: nothing former
    assert _former_rows(app) == []
    _set(app, "pw", "secret-two")
    _set(app, "pw", "secret-one")
    _set(app, "pw", "secret-two")
    _set(app, "pw", "secret-one")
    assert len(_former_rows(app)) == 2
    assert _masked(app) == ["secret-one", "secret-two"]


def test_unset_and_made_plain_remember_the_secret_a_plain_value_is_never_one(app: App) -> None:
    _set(app, "region", "eu-west-1", sensitive=False)
    _set(app, "region", "region-secret")  # a plain value replaced by a sensitive one
    assert _masked(app) == ["region-secret"]
    _set(app, "token", "token-secret", env=True)
    workspaces.unset_variable(app, "net", "token", env=True)
    _set(app, "region", "eu-central-1", sensitive=False)  # made plain
    assert _masked(app) == ["region-secret", "token-secret"]
    assert sorted((r.category, r.key) for r in _former_rows(app)) == [("env", "token"), ("terraform", "region")]


def test_at_most_the_newest_former_values_are_kept_per_variable(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    assert FORMER_VALUES_KEPT >= 1000  # years of daily rotations
    monkeypatch.setattr(repo, "FORMER_VALUES_KEPT", 3)
    _set(app, "other", "other-secret")
    _set(app, "other", "other-two")
    for i in range(6):
        _set(app, "pw", f"secret-{i}")
    # secret-0 .. secret-4 were replaced: the newest 3 are kept; another variable's are its own.
    assert _masked(app) == ["other-secret", "other-two", "secret-2", "secret-3", "secret-4", "secret-5"]


def test_a_deleted_workspace_takes_its_former_secrets_along(app: App, tmp_path: Path) -> None:
    _set(app, "pw", "secret-one")
    _set(app, "pw", "secret-two")
    assert len(_former_rows(app)) == 1
    workspaces.delete(app, "net", force=False)
    assert _former_rows(app) == []
    workspaces.create(app, "net", str(tmp_path / "src"))
    assert _masked(app) == []  # a new workspace of the same name starts with none


def _migrate(path: Path, revision: str, *, down: bool) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    import iacctl.store.db as db

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)
        conn.commit()
    engine.dispose()


def test_a_store_of_0010_gets_the_table_and_keeps_its_variables(app: App, tmp_path: Path) -> None:
    """Migration 0011 on a store made before it (the store taken back to 0010 by its own
    downgrade): the variables are kept, and the first replaced secret is remembered."""
    import sqlite3

    _set(app, "pw", "secret-one")
    _set(app, "pw", "secret-two")
    app.close()
    path = tmp_path / "store.db"
    _migrate(path, "0010", down=True)
    con = sqlite3.connect(path)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        con.close()
    assert "former_secrets" not in tables and "variables" in tables
    upgraded = App()  # opens the store: migrates it to the head
    try:
        assert _masked(upgraded) == ["secret-two"]  # what 0010 knew
        _set(upgraded, "pw", "secret-three")
        assert _masked(upgraded) == ["secret-three", "secret-two"]
    finally:
        upgraded.close()
