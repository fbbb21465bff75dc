"""The one end of a task (issue "Nothing waits forever", item 7): a transition to a terminal
status frees the task's slot, releases the workspace lock it holds (or keeps it with a stated
reason) and revokes its run-task tokens, in the same transaction, in `repo.transition` only.
A store on a real SQLite file; no Terraform, no processes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from iacctl.domain.lifecycle import ALLOWED, TERMINAL, Status
from iacctl.domain.slots import SlotState
from iacctl.services.app import App
from iacctl.store import repo
from iacctl.store.models import Slot, Task, TaskResult, Workspace

SRC = Path(__file__).resolve().parents[2] / "src" / "iacctl"


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    for key in ("IACCTL_DATABASE_URL", "IACCTL_SECRET_KEY", "IACCTL_LOCAL_SLOTS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("IACCTL_DB", str(tmp_path / "store.db"))
    monkeypatch.setenv("IACCTL_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("IACCTL_WORK_ROOT", str(tmp_path / "work"))
    application = App()
    yield application
    application.close()


def _holding_task(app: App, status: Status, *, name: str = "net") -> int:
    """A task in `status` that holds a slot, the workspace lock and an open run-task result, as
    a real plan leaves them (test setup writes the rows; the end goes through transition())."""
    with app.store.write() as session:
        pool = repo.get_pool(session, "local")
        ws = Workspace(name=name, source_dir="/tmp", pool_id=pool.id or 0, created_at=repo.now())
        session.add(ws)
        session.flush()
        t = repo.now()
        task = Task(workspace_id=ws.id or 0, kind="plan_and_apply", status=status, created_at=t, updated_at=t,
                    pool_id=pool.id)
        session.add(task)
        session.flush()
        task_id = task.id or 0
        slot = repo.claim_slot(session, pool.id or 0, task_id, grow=True)
        assert slot is not None
        if status == Status.APPLY_PENDING:
            repo.set_slot_state(session, slot.id or 0, task_id, SlotState.RUNNING, SlotState.RESERVED)
        repo.update_task(session, task_id, slot_id=slot.id)
        assert repo.lock_workspace(session, ws.id or 0, task_id=task_id, holder=f"task {task_id}", reason="held")
        session.add(TaskResult(task_id=task_id, run_task_name="check", stage="post_plan", enforcement="mandatory",
                               access_token_secret=b"sealed", created_at=t, updated_at=t, deadline_at=t + 600))
    return task_id


def _left(app: App, task_id: int) -> tuple[list[str], Workspace, TaskResult]:
    with app.store.read() as session:
        slots = session.exec(select(Slot).where(Slot.task_id == task_id)).all()
        task = repo.get_task(session, task_id)
        ws = repo.workspace_by_id(session, task.workspace_id)
        result = session.exec(select(TaskResult).where(TaskResult.task_id == task_id)).one()
    return [s.state for s in slots], ws, result


ENDINGS = [(current, target) for current in (Status.RUNNING, Status.APPLY_PENDING, Status.PENDING)
           for target in sorted(ALLOWED[current] & TERMINAL)]


@pytest.mark.parametrize(("current", "target"), ENDINGS, ids=[f"{c}->{t}" for c, t in ENDINGS])
def test_every_ending_frees_slot_lock_and_tokens(app: App, current: Status, target: Status) -> None:
    task_id = _holding_task(app, current)
    with app.store.write() as session:
        repo.transition(session, task_id, current, target, "ends")
    slots, ws, result = _left(app, task_id)
    assert slots == []  # no slot is held by an ended task
    assert (result.status, result.access_token_secret, result.token_used) == ("errored", None, True)
    if target == Status.APPLIED_STATE_ERROR:
        # E8: the stored state is behind reality; the lock stays, with the reason.
        assert ws.locked_by_task_id == task_id
        assert ws.lock_reason == f"task {task_id} applied but its state is not stored"
    else:
        assert (ws.locked_by_task_id, ws.lock_holder) == (None, None)


def test_a_kept_lock_states_its_reason(app: App) -> None:
    task_id = _holding_task(app, Status.RUNNING)
    with app.store.write() as session:
        repo.transition(session, task_id, Status.RUNNING, Status.FAILED, "pod lost", keep_lock="pod lost mid-apply")
    slots, ws, _ = _left(app, task_id)
    assert slots == []
    assert (ws.locked_by_task_id, ws.lock_reason) == (task_id, "pod lost mid-apply")


def test_planning_again_gives_back_slot_and_lock(app: App) -> None:
    """S5: apply_pending -> pending (the plan context is lost) leaves slot and lock too."""
    task_id = _holding_task(app, Status.APPLY_PENDING)
    with app.store.write() as session:
        repo.transition(session, task_id, Status.APPLY_PENDING, Status.PENDING, "context lost")
    slots, ws, result = _left(app, task_id)
    assert slots == [] and ws.locked_by_task_id is None
    assert result.status == "pending"  # not ended: its results are not revoked


def test_a_lock_held_by_someone_else_is_left_alone(app: App) -> None:
    task_id = _holding_task(app, Status.RUNNING)
    with app.store.write() as session:
        task = repo.get_task(session, task_id)
        repo.unlock_workspace(session, task.workspace_id)
        assert repo.lock_workspace(session, task.workspace_id, task_id=None, holder="user ana", reason="mine")
        repo.transition(session, task_id, Status.RUNNING, Status.FAILED, "ends")
    _, ws, _ = _left(app, task_id)
    assert (ws.lock_holder, ws.lock_reason) == ("user ana", "mine")


def test_the_local_pool_grows_slots_for_waiting_plans(app: App) -> None:
    """Item 2: plans waiting for confirmation keep their directories in reserved slots beyond the
    slot count; the count limits running tasks only."""
    ids = [_holding_task(app, Status.APPLY_PENDING, name=f"ws{i}") for i in range(5)]
    with app.store.read() as session:
        slots = session.exec(select(Slot).order_by(Slot.slot_index)).all()  # type: ignore[arg-type]
    assert [(s.slot_index, s.state, s.task_id) for s in slots] == [
        (i, SlotState.RESERVED, task_id) for i, task_id in enumerate(ids)]


def test_nothing_else_frees_slots_or_locks_of_an_ending_task() -> None:
    """No code outside the store's transition() releases a task's slots or its lock. (A forced
    unlock by an operator, the sweep's repair of a lock whose task no longer holds it, and
    `state save-partial` giving back a lock kept after the task ended, are the three unlocks
    that are not the end of a task; the machine that ran an apply another machine ended frees
    the slot the end kept for it once it has saved what was there: issue 18 item 3.)"""
    calls = {
        f"{path.relative_to(SRC)}:{n}"
        for path in SRC.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\b(release_slot_of|unlock_workspace)\(", line) and "def " not in line
    }
    assert {c.split(":")[0] for c in calls} == {"store/repo.py", "services/workspaces.py", "services/recovery.py",
                                                "services/state.py", "services/ending.py"}
    assert len([c for c in calls if not c.startswith("store/")]) == 4
