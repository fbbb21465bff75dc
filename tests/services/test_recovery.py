"""The recovery sweep after a crash (SPEC S8, E2, E3 / H1; task 9 of the core issue).

An `iacctl` process is killed with SIGKILL (nothing of it runs after that: no handler, no
`finally`); its Terraform child gets SIGINT from the kernel. `iacctl pods recover` must find
the task left `running`, end it failed with the log kept, the lock and slot released and, for an
apply, the partial state stored; it must leave live tasks alone, change nothing when run again,
and start a queued task whose waiting process was killed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.background import (
    FIRST_CREATED,
    SLOW_STARTED,
    Background,
    assert_partial_state_of_slow_apply,
    slot_states,
    spawn,
    wait_log,
    wait_task,
)
from tests.conftest import Env


def recover(env: Env) -> list[dict[str, Any]]:
    return env.ok("pods", "recover", "--json").json()  # type: ignore[no-any-return]


def assert_recovered(env: Env, workspace: str, task_id: int, stage: str) -> dict[str, Any]:
    """The task ended failed as its own process would have ended it (E2), and a second sweep
    finds nothing left to do."""
    task = env.task(task_id)
    assert task["status"] == "failed" and task["stage"] == stage
    assert task["error"].startswith("its process (") and f"is gone (found at stage {stage})" in task["error"]
    assert [h["to"] for h in task["history"] if h["kind"] == "status"][-2:] == ["running", "failed"]
    assert env.ok("workspace", "show", workspace, "--json").json()["lock"] is None
    assert slot_states(env) == [("idle", None)] * 3
    assert not (env.work_root / "local" / "local" / f"slot-{task['slot']}").exists()
    # S8: idempotent. Nothing is left to repair, and nothing changes.
    assert recover(env) == []
    assert env.task(task_id) == task
    return task


def test_recover_a_plan_killed_while_planning(any_env: Env, processes: list[Background]) -> None:
    env = any_env
    env.workspace("big", "many_resources")
    plan = spawn(env, processes, "plan", "big")
    wait_task(env, 1, lambda t: t["stage"] == "planning")
    plan.kill()
    killed = env.task(1)
    assert killed["status"] == "running"  # nobody has noticed yet
    # On a loaded machine the plan may have reached its next stage before the kill landed.
    stage = killed["stage"]
    assert stage in ("planning", "saving_plan")

    actions = recover(env)
    assert [(a["action"], a["task"]) for a in actions] == [("failed", 1)]
    assert f"is gone (found at stage {stage})" in actions[0]["detail"]
    assert_recovered(env, "big", 1, stage)
    assert env.ok("state", "versions", "big", "--json").json() == []
    # The log written before the crash is kept.
    log = env.ok("tasks", "logs", "1").out
    assert "iacctl: config snapshot" in log
    assert "Terraform has been successfully initialized!" in log


def test_recover_an_apply_killed_while_applying_keeps_partial_state(env: Env, processes: list[Background]) -> None:
    env.workspace("app", "slow_apply")
    env.ok("workspace", "var", "set", "app", "sleep", "37")
    env.ok("plan", "app", code=2)
    apply = spawn(env, processes, "confirm-apply", "1")
    wait_task(env, 1, lambda t: t["stage"] == "applying")
    wait_log(env, 1, SLOW_STARTED)
    apply.kill()
    output = env.work_root / "local" / "local" / "slot-0" / ".iacctl-command-output"

    actions = recover(env)
    assert [(a["action"], a["task"]) for a in actions] == [("failed", 1)]
    task = assert_recovered(env, "app", 1, "applying")
    assert "partial state saved as state version 1" in task["error"]
    assert_partial_state_of_slow_apply(env, "app")
    log = env.ok("tasks", "logs", "1").out
    assert "Plan: 2 to add" in log and FIRST_CREATED in log
    # Terraform outlived its runner long enough to stop gracefully (its output went to a file,
    # not a pipe whose reader was dead) ...
    assert not output.exists()  # the work directory is gone with it
    # ... and nothing it started is left running.
    assert not [p for p in Path("/proc").glob("[0-9]*") if _cmdline(p) == "sleep 37"]


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_recover_leaves_live_tasks_alone_and_cancels_a_plan_whose_command_was_killed(
    any_env: Env, processes: list[Background]
) -> None:
    """A sweep from cron beside a running apply touches nothing of it; a queued plan whose
    waiting `iacctl plan` was killed is cancelled (never started behind the user's back), and
    a queued plan nobody waits for (--no-wait) is started once its turn is free."""
    env = any_env
    env.workspace("app", "slow_apply")
    # Long enough to outlast the sweeps below on a loaded machine: the apply is killed anyway.
    env.ok("workspace", "var", "set", "app", "sleep", "300")
    env.ok("plan", "app", code=2)
    apply = spawn(env, processes, "confirm-apply", "1")
    running = wait_task(env, 1, lambda t: t["stage"] == "applying")
    waiting = spawn(env, processes, "plan", "app")
    wait_task(env, 2, lambda t: t["status"] == "pending")

    # The apply is legitimately running: the sweep does not touch it (nor the queued plan,
    # whose process still waits for its turn).
    assert recover(env) == []
    waiting.kill()
    waiting.wait()
    actions = recover(env)
    assert [(a["action"], a["task"]) for a in actions] == [("cancelled", 2)]
    assert "exited before the task started" in actions[0]["detail"]
    now = env.task(1)
    assert (now["status"], now["stage"], now["runner"]) == ("running", "applying", running["runner"])
    assert slot_states(env)[0] == ("running", 1)
    assert env.task(2)["status"] == "cancelled"
    env.ok("plan", "app", "--no-wait")
    assert recover(env) == []  # task 3's turn is not free yet: task 1 still runs

    # The apply's process dies too: the sweep ends task 1 and starts task 3 in the background.
    wait_log(env, 1, SLOW_STARTED)
    apply.kill()
    actions = recover(env)
    assert [(a["action"], a["task"]) for a in actions] == [("failed", 1), ("started", 3)]
    queued = env.wait_for(3, lambda t: t["status"] not in ("pending", "running"), timeout=120)
    # It planned on top of the partial state task 1 left: `first` exists, only `slow` is to do
    # (created, or replaced when Terraform had stored it tainted).
    assert queued["status"] == "apply_pending", queued["error"]
    changes = queued["changes"]
    assert changes["add"] + changes["replace"] == 1 and changes["change"] == changes["destroy"] == 0
    assert env.ok("workspace", "show", "app", "--json").json()["lock"]["task"] == 3
    assert [state for state, _ in slot_states(env)].count("reserved") == 1
    assert env.task(1)["status"] == "failed"
    assert recover(env) == []


def _runner_died_after_terraform_apply(env: Env) -> None:
    """Task 1 as its process leaves it when it dies right after `terraform apply` finished:
    running, at stage saving_state, the new terraform.tfstate in its slot, runner gone.
    The apply itself is real (run by hand in the slot); only the crash is staged."""
    import subprocess
    import sys

    from iacctl.domain.lifecycle import Stage, Status
    from iacctl.domain.slots import SlotState
    from iacctl.store import repo

    env.ok("plan", "net", code=2)
    slot = env.work_root / "local" / "local" / "slot-0"
    subprocess.run(["terraform", "apply", "-input=false", "-no-color", "tfplan"], cwd=slot, check=True,
                   capture_output=True, env={k: v for k, v in env.vars.items() if k != "TF_CLI_CONFIG_FILE"})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    app = env.app()
    with app.store.write() as session:
        task = repo.get_task(session, 1)
        repo.transition(session, 1, Status.APPLY_PENDING, Status.RUNNING, "confirmed",
                        confirmed_at=repo.now(), runner_host=None, runner_pid=dead.pid, runner_start=None)
        repo.set_slot_state(session, task.slot_id or 0, 1, SlotState.RESERVED, SlotState.RUNNING)
        repo.set_stage(session, 1, Stage.SAVING_STATE)


def test_recover_an_apply_that_finished_stores_its_state(env: Env) -> None:
    """S8: when the apply had finished, the sweep stores its state and never calls it failed."""
    env.workspace("net")
    _runner_died_after_terraform_apply(env)
    # F2: the apply the sweep ends writes its inventory sync, which the sweep then does.
    assert [(a["action"], a["task"]) for a in recover(env)] == [("applied", 1), ("inventory_synced", 1)]
    task = env.task(1)
    assert task["status"] == "applied" and task["state_version"] == 1
    assert [v["partial"] for v in env.ok("state", "versions", "net", "--json").json()] == [False]
    assert env.ok("workspace", "show", "net", "--json").json()["lock"] is None
    assert [s for s, _ in slot_states(env)] == ["idle"] * 3
    env.ok("plan", "net", code=0)  # the stored state is what was applied


def test_recover_an_apply_that_finished_but_cannot_store_is_applied_state_error(env: Env) -> None:
    import sqlite3

    env.workspace("net")
    _runner_died_after_terraform_apply(env)
    with sqlite3.connect(env.db_path) as db:
        db.execute("CREATE TRIGGER no_state BEFORE INSERT ON state_versions "
                   "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    assert [(a["action"], a["task"]) for a in recover(env)] == [("applied_state_error", 1)]
    task = env.task(1)
    assert task["status"] == "applied_state_error" and "iacctl state save-applied 1" in task["error"]
    assert env.ok("workspace", "show", "net", "--json").json()["lock"]["task"] == 1
    with sqlite3.connect(env.db_path) as db:
        db.execute("DROP TRIGGER no_state")
    env.ok("state", "save-applied", "1")
    assert env.task(1)["status"] == "applied"
    env.ok("plan", "net", code=0)


def test_recover_repairs_leaked_slots_locks_and_stale_work_directories(env: Env) -> None:
    """What a bug or an operator's hand could leave behind: a slot and a lock still held by a
    task that has ended, and a work directory in an idle slot. The sweep repairs each once."""
    from iacctl.store import repo
    from iacctl.store.models import Slot

    env.workspace("net")
    env.ok("plan", "net", "--plan-only", code=2)  # task 1, ended planned_and_finished
    app = env.app()
    with app.store.write() as session:
        slot = session.get(Slot, 2)
        assert slot is not None
        slot.state, slot.task_id = "running", 1
        session.add(slot)
        assert repo.lock_workspace(session, 1, task_id=1, holder="task 1", reason="left behind")
    stale = env.work_root / "local" / "local" / "slot-2"
    stale.mkdir(parents=True)
    (stale / "terraform.tfstate").write_text("{}")

    actions = sorted((a["action"], a["task"], a["workspace"]) for a in recover(env))
    assert actions == [("slot_freed", 1, "net"), ("unlocked", 1, "net"), ("work_dir_removed", None, None)]
    assert [s for s, _ in slot_states(env)] == ["idle"] * 3
    assert env.ok("workspace", "show", "net", "--json").json()["lock"] is None
    assert not stale.exists()
    assert recover(env) == []


def test_a_runner_on_another_machine_is_judged_by_its_heartbeat(env: Env) -> None:
    """With a shared PostgreSQL store the runner may be another CI machine: its pid means
    nothing here, so the sweep waits until its heartbeat is older than two minutes."""
    from iacctl.domain.lifecycle import Stage, Status
    from iacctl.store import repo

    env.workspace("net")
    env.ok("plan", "net", "--no-wait", "--plan-only")
    env.wait_for(1, lambda t: t["status"] == "planned_and_finished")
    app = env.app()
    with app.store.write() as session:  # staged: task 2 runs on another machine
        from iacctl.store.models import Task

        t = repo.now()
        task = Task(workspace_id=1, kind="plan", status=Status.PENDING, created_at=t, updated_at=t, pool_id=1)
        session.add(task)
        session.flush()
        repo.transition(session, task.id or 0, Status.PENDING, Status.RUNNING, "started elsewhere",
                        runner_host="ci-runner-7", runner_pid=1, heartbeat_at=t)
        repo.set_stage(session, task.id or 0, Stage.PLANNING)
    assert recover(env) == []  # a fresh heartbeat: alive, left alone
    with app.store.write() as session:
        repo.update_task(session, 2, heartbeat_at=repo.now() - 300)
    assert [(a["action"], a["task"]) for a in recover(env)] == [("failed", 2)]
    assert "ci-runner-7 pid 1) is gone" in env.task(2)["error"]
