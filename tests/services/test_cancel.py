"""Cancelling tasks (SPEC E1, E2, L5, C3; task 8 of the core issue): `iacctl cancel` on pending,
apply_pending and running tasks, and Ctrl-C / SIGTERM on a running `plan` or `confirm-apply`.

Every test runs real Terraform and sends real signals to the real `iacctl` processes. A task
that stops goes through the termination path: status cancelled, log kept, work directory
removed, workspace unlocked, slot freed, and a partial state version when an apply stopped
part-way.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.background import (
    FIRST_CREATED,
    SLOW_STARTED,
    Background,
    assert_partial_state_of_slow_apply,
    slot_states,
    spawn,
    statuses,
    wait_log,
    wait_task,
)
from tests.conftest import Env


def assert_cleaned_up(env: Env, workspace: str, view: dict[str, Any]) -> None:
    """E2: the slot is free, its work directory gone and the workspace unlocked."""
    assert env.ok("workspace", "show", workspace, "--json").json()["lock"] is None
    assert slot_states(env) == [("idle", None)] * 3
    assert not (env.work_root / "local" / "local" / f"slot-{view['slot']}").exists()


def test_cancel_pending_and_apply_pending_tasks(env: Env, processes: list[Background]) -> None:
    env.workspace("net")
    env.ok("plan", "net", code=2)
    work_dir = env.work_root / "local" / "local" / "slot-0"
    assert work_dir.is_dir() and slot_states(env)[0] == ("reserved", 1)

    # A plan queued behind the apply_pending task waits its turn; cancelling it ends it at once.
    queued = env.ok("plan", "net", "--no-wait")
    assert "task 2 queued (pending)" in queued.out
    cancelled = env.ok("cancel", "2")
    assert "task 2 cancelled" in cancelled.out
    task2 = env.task(2)
    who = task2["cancelled_by"]["display"]  # issue 9: who cancelled it
    assert task2["status"] == "cancelled" and task2["error"] == f"cancelled by {who}"
    assert statuses(task2) == ["pending", "cancelled"]

    # Ctrl-C on a plan that waits for its turn cancels its task too, and exits 3.
    waiting = spawn(env, processes, "plan", "net")
    wait_task(env, 3, lambda t: t["status"] == "pending")
    waiting.signal(signal.SIGINT)
    code, _, err = waiting.finish()
    assert code == 3, err
    assert "cancelled" in err
    assert env.task(3)["status"] == "cancelled"

    # Cancelling the apply_pending task releases the lock, the reserved slot and its work directory.
    assert env.ok("workspace", "show", "net", "--json").json()["lock"]["task"] == 1
    assert "task 1 cancelled" in env.ok("cancel", "1").out
    task1 = env.task(1)
    assert task1["status"] == "cancelled"
    assert statuses(task1) == ["pending", "running", "apply_pending", "cancelled"]
    assert_cleaned_up(env, "net", task1)
    assert "waits for confirmation" in env.ok("tasks", "logs", "1").out

    # The cancelled tasks never ran, even once the turn was free: no slot, no start, no log.
    for task_id in (2, 3):
        view = env.task(task_id)
        assert view["status"] == "cancelled" and view["started_at"] is None and view["slot"] is None
        assert env.ok("tasks", "logs", str(task_id)).out == ""

    # Cancelling a task that has already ended is refused (exit 5) and changes nothing.
    for terminal in ("1", "2"):
        refused = env.ok("cancel", terminal, code=5)
        assert f"task {terminal} is already cancelled" in refused.err
    assert env.task(1)["finished_at"] == task1["finished_at"]


@pytest.mark.parametrize("how", ["cancel", "ctrl-c"])
def test_cancel_running_apply_keeps_partial_state(env: Env, processes: list[Background], how: str) -> None:
    """E1: a cancel inside `applying` interrupts Terraform gracefully and waits for it to stop;
    the resource it created before stopping is kept as a partial state version."""
    env.workspace("app", "slow_apply")
    env.ok("workspace", "var", "set", "app", "sleep", "30")
    env.ok("plan", "app", code=2)
    apply = spawn(env, processes, "confirm-apply", "1")
    wait_task(env, 1, lambda t: t["stage"] == "applying")
    wait_log(env, 1, SLOW_STARTED)

    if how == "cancel":
        # From another terminal: the running process hears it and stops Terraform.
        assert "task 1 cancelled" in env.ok("cancel", "1").out
        assert env.task(1)["cancel_requested"]
    else:
        apply.signal(signal.SIGINT)
    code, _, err = apply.finish()
    assert code == 3, err
    assert "task 1 cancelled" in err

    task = env.task(1)
    assert task["status"] == "cancelled" and task["stage"] == "applying"
    assert "Terraform stopped gracefully" in task["error"]
    assert "partial state saved as state version 1" in task["error"]
    assert statuses(task)[-2:] == ["running", "cancelled"]
    # The full log is kept: the plan, the apply up to the interrupt, Terraform's own stop.
    log = env.ok("tasks", "logs", "1").out
    for line in ("Plan: 2 to add", FIRST_CREATED, "Interrupt received", "task cancelled"):
        assert line in log
    assert_cleaned_up(env, "app", task)

    assert_partial_state_of_slow_apply(env, "app")


@pytest.mark.parametrize("how", ["cancel", "SIGINT", "SIGTERM"])
def test_cancel_running_plan(env: Env, processes: list[Background], how: str) -> None:
    """A running plan stops at once on `iacctl cancel`, Ctrl-C, or SIGTERM (a CI job being
    cancelled); the `iacctl plan` process exits 3."""
    env.workspace("big", "many_resources")
    plan = spawn(env, processes, "plan", "big")
    wait_task(env, 1, lambda t: t["stage"] == "planning")
    if how == "cancel":
        assert "task 1 cancelled" in env.ok("cancel", "1").out
    else:
        plan.signal(getattr(signal, how))
    code, _, err = plan.finish()
    assert code == 3, err
    assert "task 1 cancelled: cancelled during planning" in err

    task = env.task(1)
    assert task["status"] == "cancelled" and task["stage"] == "planning"
    assert task["plan_hash"] is None
    if how == "cancel":
        assert task["cancel_requested"]
        who = task["cancelled_by"]["display"]
        assert [h["reason"] for h in task["history"] if h["kind"] == "note"] == [f"cancel requested by {who}"]
    assert_cleaned_up(env, "big", task)
    assert env.ok("state", "versions", "big", "--json").json() == []
    log = env.ok("tasks", "logs", "1").out
    assert "Terraform has been successfully initialized!" in log
    assert "task cancelled: cancelled during planning" in log
