"""The drift record in the store (SPEC F5, F1): a check's result replaces the workspace's record
and writes its drift_detected entry in the same transaction only for a new or changed drifted
set; an apply clears the drift found before its plan. A store on a real SQLite file; no
Terraform, no HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from iacctl.domain.drift import DELETED, UPDATED, DriftedResource
from iacctl.domain.lifecycle import Status
from iacctl.services.app import App
from iacctl.store import repo
from iacctl.store.models import NotificationDestination, OutboxEntry, Task, Workspace

A = DriftedResource("x.a", UPDATED, ("content",))
B = DriftedResource("x.b", DELETED)


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    for key in ("IACCTL_DATABASE_URL", "IACCTL_SECRET_KEY", "IACCTL_LOCAL_SLOTS", "IACCTL_FOLLOW_UP_BUDGET"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("IACCTL_DB", str(tmp_path / "store.db"))
    monkeypatch.setenv("IACCTL_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("IACCTL_WORK_ROOT", str(tmp_path / "work"))
    application = App()
    application.store.on_outbox_written = None  # rows, not deliveries
    yield application
    application.close()


def _workspace(app: App) -> int:
    with app.store.write() as session:
        pool = repo.get_pool(session, "local")
        ws = Workspace(name="net", source_dir="/tmp", pool_id=pool.id or 0, created_at=repo.now())
        session.add(ws)
        t = repo.now()
        session.add(NotificationDestination(name="ops", url="http://127.0.0.1:9/x", events="drift_detected",
                                            created_at=t, updated_at=t))
        session.flush()
        return ws.id or 0


def _check(app: App, ws_id: int, found: list[DriftedResource]) -> bool:
    with app.store.write() as session:
        t = repo.now()
        task = Task(workspace_id=ws_id, kind="drift_check", status=Status.PLANNED_AND_FINISHED, created_at=t,
                    updated_at=t)
        session.add(task)
        session.flush()
        return repo.record_drift(session, ws_id, task.id or 0, found, t)


def _drift_entries(app: App) -> int:
    with app.store.read() as session:
        return len(session.exec(select(OutboxEntry).where(OutboxEntry.event == "drift_detected")).all())


def test_one_notification_per_new_or_changed_drifted_set(app: App) -> None:
    ws = _workspace(app)
    assert _check(app, ws, []) is False
    assert _check(app, ws, [A]) is True
    assert _check(app, ws, [A]) is False  # the same drift again
    assert _check(app, ws, [B, A]) is True  # changed
    assert _check(app, ws, [A, B]) is False
    assert _check(app, ws, []) is False  # gone: nothing to say
    assert _check(app, ws, [A, B]) is True  # back: new again
    assert _drift_entries(app) == 3


def test_an_apply_clears_the_drift_found_before_its_plan_only(app: App) -> None:
    ws = _workspace(app)
    with app.store.write() as session:
        t = repo.now()
        early = Task(workspace_id=ws, kind="plan_and_apply", status=Status.RUNNING, created_at=t, updated_at=t,
                     planned_at=t - 60)
        session.add(early)
        session.flush()
        early_id = early.id or 0
    _check(app, ws, [A])
    with app.store.write() as session:
        # A plan made before the check: its refresh never saw the drift, which stays.
        repo.transition(session, early_id, Status.RUNNING, Status.APPLIED, "apply finished")
        assert repo.drift_of(session, ws).cleared_at is None  # type: ignore[union-attr]
        t = repo.now()
        late = Task(workspace_id=ws, kind="plan_and_apply", status=Status.RUNNING, created_at=t, updated_at=t,
                    planned_at=t + 1)
        session.add(late)
        session.flush()
        repo.transition(session, late.id or 0, Status.RUNNING, Status.APPLIED, "apply finished")
        row = repo.drift_of(session, ws)
        assert row is not None and row.cleared_by_task_id == late.id and row.cleared_at is not None
    # After a clear, the same drift found again is new.
    assert _check(app, ws, [A]) is True
