"""The queue (SPEC L4, S2; core issue item 6): a plan waits for its workspace's turn or a running
place and says what it waits for and the way out; `--no-wait` only queues and the task is
started by whoever frees its turn; a plan whose command is gone never runs behind its back;
nothing stays pending."""

from __future__ import annotations

from tests.background import Background, spawn
from tests.conftest import Env


def _nothing_pending(env: Env) -> None:
    assert env.ok("tasks", "list", "--status", "pending", "--json").json() == []


def test_plan_waits_for_the_workspace_turn_and_plan_only_does_not(env: Env, processes: list[Background]) -> None:
    env.workspace("net")
    env.ok("plan", "net", "--quiet", code=2)

    waiter = spawn(env, processes, "plan", "net", "--quiet")
    line = waiter.wait_line("task 2 waits: task 1 (apply_pending since ")
    # The wait names its blocker and the way out.
    assert line.endswith("holds workspace net; confirm it (iacctl confirm-apply 1) or cancel it (iacctl cancel 1)")
    assert env.task(2)["status"] == "pending"

    # L4: a speculative plan never takes the turn nor the lock, so it runs at once beside them.
    beside = env.ok("plan", "net", "--plan-only", "--quiet", code=2)
    assert "task 3 waits" not in beside.out
    assert env.task(3)["status"] == "planned_and_finished"
    assert env.task(1)["status"] == "apply_pending"
    assert env.task(2)["status"] == "pending"
    assert env.ok("workspace", "show", "net", "--json").json()["lock"]["task"] == 1

    # The turn comes: the waiting process plans (nothing left to change after the apply).
    env.ok("confirm-apply", "1", "--quiet")
    assert waiter.wait() == 0, waiter.output
    assert "task 2: no changes" in waiter.out
    task = env.task(2)
    assert task["status"] == "planned_and_finished"
    started = [h for h in task["history"] if (h["from"], h["to"]) == ("pending", "running")]
    assert len(started) == 1
    _nothing_pending(env)


def test_plan_waits_for_a_running_place_in_a_one_slot_pool(env: Env, processes: list[Background]) -> None:
    """The local pool's slot count limits how many tasks run at once; a plan waiting for
    confirmation keeps its work directory without taking a running place."""
    env.ok("pool", "set", "local", "--slots-per-pod", "1")
    assert [s["index"] for s in env.ok("pods", "list", "--json").json()[0]["slots"]] == [0]
    env.workspace("a", "slow_apply")
    env.ok("workspace", "var", "set", "a", "sleep", "15")
    env.workspace("c")
    env.ok("plan", "a", "--quiet", code=2)  # apply_pending: its slot stays reserved (L3) ...
    env.ok("plan", "c", "--plan-only", "--quiet", code=2)  # ... and takes no running place

    applier = spawn(env, processes, "confirm-apply", "1")
    applier.wait_line("terraform_data.slow: Provisioning with 'local-exec'")
    assert env.task(1)["apply_path"] == "same_slot"  # it kept its work directory all along
    waiter = spawn(env, processes, "plan", "c", "--plan-only", "--quiet")
    line = waiter.wait_line("task 3 waits: all 1 running places of pool local are in use (task 1)")
    assert "iacctl pool set local --slots-per-pod N" in line
    assert env.task(3)["status"] == "pending"

    assert applier.wait() == 0, applier.output
    assert waiter.wait() == 2, waiter.output
    assert env.task(3)["status"] == "planned_and_finished"
    _nothing_pending(env)


def test_no_wait_queues_and_the_command_freeing_the_turn_runs_it_in_order(any_env: Env) -> None:
    env = any_env
    env.workspace("net")
    env.ok("plan", "net", "--quiet", code=2)

    queued = env.ok("plan", "net", "--no-wait", "--json").json()
    assert (queued["id"], queued["status"], queued["kind"]) == (2, "pending", "plan_and_apply")
    env.ok("plan", "net", "--no-wait")
    assert [env.task(i)["status"] for i in (2, 3)] == ["pending", "pending"]

    # Cancelling the task that has the turn starts the oldest queued one, in the background.
    env.ok("cancel", "1")
    env.wait_for(2, lambda t: t["status"] == "apply_pending")
    # L4: the younger one keeps waiting behind it, in creation order.
    assert env.task(3)["status"] == "pending"

    env.ok("confirm-apply", "2", "--quiet")
    third = env.wait_for(3, lambda t: t["status"] not in ("pending", "running"))
    assert third["status"] == "planned_and_finished"  # planned after task 2's apply: no changes
    assert not third["has_changes"]

    # With the turn free, --no-wait still returns at once and the plan runs in the background.
    four = env.ok("plan", "net", "--plan-only", "--no-wait", "--json").json()
    assert four["id"] == 4
    assert env.wait_for(4, lambda t: t["status"] not in ("pending", "running"))["status"] == "planned_and_finished"
    _nothing_pending(env)


def test_a_plan_whose_command_is_killed_while_waiting_never_runs_behind_its_back(
    env: Env, processes: list[Background]
) -> None:
    """A command that fails (here: killed while its plan waits) leaves nothing that acts later:
    its queued task is cancelled when the turn is freed, never started in the background."""
    env.workspace("net")
    env.ok("plan", "net", "--quiet", code=2)
    waiter = spawn(env, processes, "plan", "net", "--quiet")
    waiter.wait_line("task 2 waits: task 1 (apply_pending since ")
    waiter.kill()
    assert env.task(2)["status"] == "pending"

    env.ok("cancel", "1")
    task = env.task(2)
    assert task["status"] == "cancelled"
    assert "exited before the task started" in task["error"]
    assert env.ok("workspace", "show", "net", "--json").json()["lock"] is None
    _nothing_pending(env)


def test_queued_task_nobody_waits_for_is_started_by_pods_recover(env: Env, processes: list[Background]) -> None:
    """The process holding the turn dies; the sweep ends the dead apply and starts the task
    queued with --no-wait (nothing stays pending forever)."""
    env.workspace("net", "slow_apply")
    env.ok("plan", "net", "--quiet", code=2)
    applier = spawn(env, processes, "confirm-apply", "1")
    applier.wait_line("terraform_data.slow: Provisioning with 'local-exec'")
    env.ok("plan", "net", "--no-wait")
    applier.kill()
    assert env.task(2)["status"] == "pending"

    actions = env.ok("pods", "recover", "--json").json()
    assert {"action": "failed", "task": 1} in [{"action": a["action"], "task": a["task"]} for a in actions]
    assert {"action": "started", "task": 2} in [{"action": a["action"], "task": a["task"]} for a in actions]
    task = env.wait_for(2, lambda t: t["status"] not in ("pending", "running"))
    assert task["status"] == "apply_pending" and task["has_changes"]
    # The dead apply ended through the termination path, its partial state kept (E2).
    versions = env.ok("state", "versions", "net", "--json").json()
    assert [(v["task"], v["partial"]) for v in versions] == [(1, True)]
    _nothing_pending(env)
