"""Who runs queued tasks (issue 3 item 10): a detached runner whose task has ended goes on with
the next queued task in its own process, and a kick starts at most one runner per idle slot."""

from __future__ import annotations

from sqlmodel import select

from tests.background import Background, spawn
from tests.conftest import Env


def test_one_runner_runs_the_queued_tasks_of_a_one_slot_pool_one_after_another(
    env: Env, processes: list[Background]
) -> None:
    env.ok("pool", "set", "local", "--slots-per-pod", "1")
    env.workspace("a", "slow_apply")
    env.ok("workspace", "var", "set", "a", "sleep", "30")
    for name in ("b", "c", "d"):
        env.workspace(name)
    env.ok("plan", "a", "--quiet", code=2)
    applier = spawn(env, processes, "confirm-apply", "1")  # the one running place is taken
    applier.wait_line("terraform_data.slow: Provisioning with 'local-exec'")
    for name in ("b", "c", "d"):
        env.ok("plan", name, "--plan-only", "--no-wait", "--quiet")
    assert [t["status"] for t in env.tasks()].count("pending") == 3

    # The apply's end frees the place and kicks the queue: one free place, one runner.
    assert applier.wait() == 0, applier.output
    for task_id in (2, 3, 4):
        env.wait_for(task_id, lambda t: t["status"] == "planned_and_finished", timeout=120)
    tasks = [env.task(i) for i in (2, 3, 4)]
    # In creation order, one at a time in the one running place (the slot task 1 left idle).
    assert [t["slot"] for t in tasks] == [0, 0, 0]
    assert tasks[0]["finished_at"] <= tasks[1]["started_at"] <= tasks[1]["finished_at"] <= tasks[2]["started_at"]
    assert env.ok("tasks", "list", "--status", "pending", "--json").json() == []

    # The runner that started task 2 ran the other two in the same process.
    from iacctl.store.models import Task

    app = env.app()
    try:
        with app.store.read() as session:
            runners = {t.runner_pid for t in session.exec(select(Task).where(Task.id != 1)).all()}
    finally:
        app.close()
    assert len(runners) == 1, runners


def test_a_queued_task_runs_in_a_runner_forked_from_the_command_that_freed_its_turn(env: Env) -> None:
    """The runner a kick starts is forked from the kicking `iacctl` (here the `plan --no-wait`
    that queued it: the plan waiting for confirmation takes no running place), with no Python
    start-up, shows as `iacctl-runner` in ps, and its output goes to IACCTL_RUNNER_LOG when set."""
    from pathlib import Path

    env.vars["IACCTL_RUNNER_LOG"] = str(env.root / "runner.log")
    env.workspace("big", "many_resources")
    env.ok("pool", "set", "local", "--slots-per-pod", "1")
    env.workspace("net")
    env.ok("plan", "net", "--quiet", code=2)
    env.ok("plan", "big", "--plan-only", "--no-wait", "--quiet")
    env.ok("cancel", "1")
    seen: list[str] = []

    def runner_seen(t: dict) -> bool:
        # Looked at while the task runs (any stage: a loaded machine can pass planning between
        # two looks); the runner process is alive as long as its task is running.
        if t["status"] != "running" or not t["runner"]:
            return False
        try:
            seen.append(Path(f"/proc/{t['runner']['pid']}/comm").read_text().strip())
        except OSError:
            return False
        return True

    env.wait_for(2, runner_seen, timeout=120)
    assert seen[-1] == "iacctl-runner"
    assert env.wait_for(2, lambda t: t["status"] != "running", timeout=180)["status"] == "planned_and_finished"
    assert (env.root / "runner.log").exists()
