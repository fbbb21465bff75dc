"""The outbox in the store (SPEC F1): entries written by `repo.transition()` in the status
change's own transaction under a unique key, and claims that let an entry be marked delivered
at most once. A store on a real SQLite file; no Terraform, no processes, no HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from iacctl.domain.lifecycle import Status
from iacctl.errors import TransitionConflict
from iacctl.services.app import App
from iacctl.store import repo
from iacctl.store.models import NotificationDestination, OutboxEntry, Task, Workspace


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    for key in ("IACCTL_DATABASE_URL", "IACCTL_SECRET_KEY", "IACCTL_LOCAL_SLOTS", "IACCTL_FOLLOW_UP_BUDGET"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("IACCTL_DB", str(tmp_path / "store.db"))
    monkeypatch.setenv("IACCTL_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("IACCTL_WORK_ROOT", str(tmp_path / "work"))
    application = App()
    yield application
    application.close()


def _setup(app: App, events: str = "needs_confirmation,planning,cancelled", *, enabled: bool = True) -> int:
    """A workspace with a running task and a destination (rows written as the commands write them;
    the store's outbox is not delivered here: no URL answers)."""
    with app.store.write() as session:
        pool = repo.get_pool(session, "local")
        ws = Workspace(name="net", source_dir="/tmp", pool_id=pool.id or 0, created_at=repo.now())
        session.add(ws)
        session.flush()
        t = repo.now()
        session.add(NotificationDestination(name="ops", url="http://127.0.0.1:9/x", events=events,
                                            enabled=enabled, created_at=t, updated_at=t))
        session.add(NotificationDestination(name="other", url="http://127.0.0.1:9/y", events="applied",
                                            created_at=t, updated_at=t))
        task = Task(workspace_id=ws.id or 0, kind="plan_and_apply", status=Status.RUNNING, created_at=t,
                    updated_at=t, pool_id=pool.id, runner_host="ci-7")
        session.add(task)
        session.flush()
        return task.id or 0


def _entries(app: App) -> list[OutboxEntry]:
    with app.store.read() as session:
        return list(session.exec(select(OutboxEntry).order_by(OutboxEntry.id)).all())  # type: ignore[arg-type]


def _quiet(app: App) -> None:
    app.store.on_outbox_written = None  # these tests look at rows, not deliveries


def test_a_status_change_writes_its_follow_ups_in_its_own_transaction(app: App) -> None:
    _quiet(app)
    task_id = _setup(app)
    with app.store.write() as session:
        repo.transition(session, task_id, Status.RUNNING, Status.APPLY_PENDING, "plan has changes")
    [entry] = _entries(app)  # ops chose needs_confirmation; other did not
    assert (entry.destination_name, entry.event, entry.status, entry.task_id) == \
        ("ops", "needs_confirmation", "pending", task_id)
    assert entry.key == f"notification:1:task-{task_id}:needs_confirmation:1"
    assert '"actor":"ci-7"' in entry.facts_json
    # A change that does not happen (the compare-and-set loses) writes nothing.
    with pytest.raises(TransitionConflict), app.store.write() as session:
        repo.transition(session, task_id, Status.RUNNING, Status.CANCELLED, "too late")
    assert len(_entries(app)) == 1
    # A change rolled back with its transaction leaves no entry behind.
    with pytest.raises(RuntimeError), app.store.write() as session:
        repo.transition(session, task_id, Status.APPLY_PENDING, Status.CANCELLED, "rolled back")
        raise RuntimeError("the transaction fails after the change")
    assert len(_entries(app)) == 1


def test_the_same_event_again_is_a_new_entry_with_its_own_key(app: App) -> None:
    """S5: a re-planned task needs confirmation a second time: a second notification, not a
    duplicate key, and going back to pending is no event."""
    _quiet(app)
    task_id = _setup(app)
    steps = [(Status.RUNNING, Status.APPLY_PENDING), (Status.APPLY_PENDING, Status.PENDING),
             (Status.PENDING, Status.RUNNING), (Status.RUNNING, Status.APPLY_PENDING)]
    for current, target in steps:
        with app.store.write() as session:
            repo.transition(session, task_id, current, target, "step")
    assert [(e.event, e.key.rsplit(":", 1)[1]) for e in _entries(app)] == [
        ("needs_confirmation", "1"), ("planning", "1"), ("needs_confirmation", "2")]


def test_a_disabled_destination_gets_no_entries(app: App) -> None:
    _quiet(app)
    task_id = _setup(app, enabled=False)
    with app.store.write() as session:
        repo.transition(session, task_id, Status.RUNNING, Status.CANCELLED, "cancelled by user")
    assert _entries(app) == []


def test_a_claim_is_won_once_and_only_it_marks_the_entry(app: App) -> None:
    _quiet(app)
    task_id = _setup(app)
    with app.store.write() as session:
        repo.transition(session, task_id, Status.RUNNING, Status.APPLY_PENDING, "plan has changes")
    with app.store.read() as session:
        [head] = repo.open_outbox_entries(session)
    claims = []
    for token in ("first", "second"):  # both read the entry as pending, both try to claim it
        with app.store.write() as session:
            claims.append(repo.claim_outbox_entry(session, head, at=repo.now(), lease_s=60, token=token, host="h",
                                                  pid=1, start=None))
    assert claims == [True, False]
    with app.store.write() as session:
        assert not repo.settle_outbox_entry(session, head.id or 0, "second", status="delivered")
        assert repo.settle_outbox_entry(session, head.id or 0, "first", status="delivered", attempts=1)
        assert not repo.settle_outbox_entry(session, head.id or 0, "first", status="delivered", attempts=2)
    [entry] = _entries(app)
    assert (entry.status, entry.attempts, entry.claim_token) == ("delivered", 1, None)
