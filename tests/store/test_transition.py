"""The lifecycle table (SPEC L1-L7): every status change goes through `repo.transition`, which
checks the table, writes with a compare-and-set and appends a history row. Walks all 64 pairs
on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools

import pytest
from sqlmodel import select

from iacctl.domain.lifecycle import ALLOWED, TERMINAL, Status
from iacctl.domain.slots import SlotState
from iacctl.errors import TransitionConflict, TransitionRefused
from iacctl.store import repo
from iacctl.store.models import Task, TaskEvent, Workspace
from tests.conftest import Env


def _new_task(app, status: Status) -> int:  # type: ignore[no-untyped-def]
    with app.store.write() as session:
        ws = session.exec(select(Workspace).where(Workspace.name == "walk")).first()
        if ws is None:
            pool = repo.get_pool(session, "local")
            ws = Workspace(name="walk", source_dir="/tmp", pool_id=pool.id, created_at=repo.now())
            session.add(ws)
            session.flush()
        # Test setup writes the starting row directly; everything after goes through transition().
        t = repo.now()
        task = Task(workspace_id=ws.id, kind="plan_and_apply", status=status, created_at=t, updated_at=t)
        session.add(task)
        session.flush()
        if status == Status.APPLY_PENDING:
            # As a plan leaves it (E6): its slot reserved, which its confirmation runs in.
            slot = repo.claim_slot(session, ws.pool_id, task.id or 0, grow=True)
            assert slot is not None
            repo.set_slot_state(session, slot.id or 0, task.id or 0, SlotState.RUNNING, SlotState.RESERVED)
            repo.update_task(session, task.id or 0, slot_id=slot.id)
        return task.id or 0


def test_every_transition_outside_the_table_is_refused(any_env: Env) -> None:
    app = any_env.app()
    allowed_seen = 0
    for current, target in itertools.product(Status, Status):
        task_id = _new_task(app, current)
        if target in ALLOWED[current]:
            with app.store.write() as session:
                repo.transition(session, task_id, current, target, "walk")
            allowed_seen += 1
            with app.store.read() as session:
                task = repo.get_task(session, task_id)
                events = session.exec(select(TaskEvent).where(TaskEvent.task_id == task_id)).all()
            assert task.status == target
            assert [(e.from_value, e.to_value, e.reason) for e in events] == [(current, target, "walk")]
            if target in TERMINAL:
                assert task.finished_at is not None
        else:
            with pytest.raises(TransitionRefused), app.store.write() as session:
                repo.transition(session, task_id, current, target, "walk")
            with app.store.read() as session:
                assert repo.get_task(session, task_id).status == current
                assert session.exec(select(TaskEvent).where(TaskEvent.task_id == task_id)).all() == []
    assert allowed_seen == sum(len(v) for v in ALLOWED.values())


def test_terminal_statuses_are_final_except_the_state_resave() -> None:
    for status in TERMINAL:
        expected = {Status.APPLIED} if status == Status.APPLIED_STATE_ERROR else set()
        assert set(ALLOWED[status]) == expected


def test_compare_and_set_refuses_a_stale_expectation(any_env: Env) -> None:
    """Two processes that both saw `apply_pending`: the second one's write changes nothing."""
    app = any_env.app()
    task_id = _new_task(app, Status.APPLY_PENDING)
    with app.store.write() as session:
        repo.transition(session, task_id, Status.APPLY_PENDING, Status.RUNNING, "first confirm")
    with pytest.raises(TransitionConflict, match="is running, not apply_pending"), app.store.write() as session:
        repo.transition(session, task_id, Status.APPLY_PENDING, Status.RUNNING, "second confirm")
    with app.store.read() as session:
        events = session.exec(select(TaskEvent).where(TaskEvent.task_id == task_id)).all()
    assert [e.reason for e in events] == ["first confirm"]


def test_status_is_never_written_outside_transition(any_env: Env) -> None:
    app = any_env.app()
    task_id = _new_task(app, Status.PENDING)
    with pytest.raises(ValueError), app.store.write() as session:
        repo.update_task(session, task_id, status=Status.APPLIED)


def test_no_code_assigns_a_task_status_directly() -> None:
    """STYLE: no other code assigns task.status; only repo.transition writes it."""
    import re
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "src" / "iacctl"
    offenders = [
        f"{path.relative_to(src)}:{n}"
        for path in src.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\btask\.status\s*=[^=]", line)
    ]
    assert offenders == []
