"""Nothing waits forever (issue 8, items 2-6), end to end with real Terraform: confirmations left
waiting never starve the machine, expired plans are discarded instead of blocking, a forced
unlock frees the workspace for real, and waits are bounded and name their way out."""

from __future__ import annotations

import getpass
import socket
import time

import pytest

from tests.background import Background, spawn
from tests.conftest import Env


def _nothing_pending(env: Env) -> None:
    assert env.ok("tasks", "list", "--status", "pending", "--json").json() == []


@pytest.mark.timeout(900)
def test_twenty_waiting_confirmations_never_starve_the_default_local_pool(env: Env) -> None:
    for i in range(21):
        env.workspace(f"w{i:02}")
    for i in range(20):
        env.ok("plan", f"w{i:02}", "--no-wait")
    for task_id in range(1, 21):
        env.wait_for(task_id, lambda t: t["status"] not in ("pending", "running"), timeout=240)
    assert {t["status"] for t in env.tasks()} == {"apply_pending"}
    slots = env.ok("pods", "list", "--json").json()[0]["slots"]
    assert sorted(s["task"] for s in slots if s["state"] == "reserved") == list(range(1, 21))

    # A 21st workspace's plan and a speculative plan both run at once: no "waits" line.
    r = env.run("plan", "w20", "--quiet", "--wait-timeout", "60s")
    assert r.code == 2 and "waits" not in r.err, r.err
    r = env.run("plan", "w03", "--plan-only", "--quiet", "--wait-timeout", "60s")
    assert r.code == 2 and "waits" not in r.err, r.err

    # Each of the 20 still confirms on the fast path: its work directory was kept all along.
    for task_id in range(1, 21):
        env.ok("confirm-apply", str(task_id), "--quiet")
    assert {env.task(i)["apply_path"] for i in range(1, 21)} == {"same_slot"}
    _nothing_pending(env)


def test_an_expired_plan_is_discarded_when_a_new_plan_would_wait_behind_it(env: Env) -> None:
    env.workspace("net", "simple", "--plan-lifetime", "1s")
    env.ok("plan", "net", "--quiet", code=2)
    time.sleep(1.2)
    r = env.run("plan", "net", "--quiet", "--wait-timeout", "30s")
    assert r.code == 2, r.err
    assert "waits" not in r.err
    first = env.task(1)
    assert first["status"] == "cancelled"
    assert first["history"][-1]["reason"].startswith("plan expired after 1s without confirmation")
    assert env.ok("workspace", "show", "net", "--json").json()["lock"]["task"] == 2
    assert env.task(2)["status"] == "apply_pending"


def test_the_sweep_discards_expired_plans(env: Env) -> None:
    env.workspace("net", "simple", "--plan-lifetime", "1h")
    env.ok("plan", "net", "--quiet", code=2)
    assert env.ok("pods", "recover", "--json").json() == []  # not expired yet
    env.ok("workspace", "set", "net", "--plan-lifetime", "1s")
    time.sleep(1.2)
    actions = env.ok("pods", "recover", "--json").json()
    assert [(a["action"], a["task"], a["workspace"]) for a in actions] == [("cancelled", 1, "net")]
    assert env.task(1)["status"] == "cancelled"
    assert env.ok("workspace", "show", "net", "--json").json()["lock"] is None
    assert all(s["state"] == "idle" for s in env.ok("pods", "list", "--json").json()[0]["slots"])
    assert env.ok("pods", "recover", "--json").json() == []  # idempotent


def test_force_unlock_cancels_a_plan_waiting_for_confirmation(env: Env) -> None:
    env.workspace("net")
    env.ok("plan", "net", "--quiet", code=2)
    env.ok("workspace", "unlock", "net", "--force")
    task = env.task(1)
    assert task["status"] == "cancelled"
    assert task["error"] == f"lock removed with --force by {getpass.getuser()}@{socket.gethostname()}"
    assert task["cancelled_by"]["user"] == getpass.getuser()
    assert env.ok("workspace", "show", "net", "--json").json()["lock"] is None
    # Afterwards a plan on the workspace runs at once.
    r = env.run("plan", "net", "--quiet", "--wait-timeout", "30s")
    assert r.code == 2 and "waits" not in r.err, r.err


def test_force_unlock_of_a_running_task_is_refused_while_its_process_lives(
    env: Env, processes: list[Background]
) -> None:
    env.workspace("app", "slow_apply")
    env.ok("workspace", "var", "set", "app", "sleep", "60")
    env.ok("plan", "app", "--quiet", code=2)
    applier = spawn(env, processes, "confirm-apply", "1")
    applier.wait_line("terraform_data.slow: Provisioning with 'local-exec'")
    before = env.task(1)
    r = env.run("workspace", "unlock", "app", "--force")
    assert r.code == 5
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "is locked by task 1, which is running (stage applying)" in lines[0], lines
    assert "iacctl cancel 1" in lines[0]
    assert env.task(1) == before
    assert env.ok("workspace", "show", "app", "--json").json()["lock"]["task"] == 1

    # Its process dies: now the forced unlock ends the task as the sweep would, and frees it.
    applier.proc.kill()
    applier.wait()
    env.ok("workspace", "unlock", "app", "--force")
    task = env.task(1)
    assert task["status"] == "failed"
    assert task["error"].startswith(f"lock removed with --force by {getpass.getuser()}@")
    assert "; its process was gone" in task["error"]
    assert env.ok("workspace", "show", "app", "--json").json()["lock"] is None
    r = env.run("plan", "app", "--quiet", "--wait-timeout", "30s")
    assert r.code == 2 and "waits" not in r.err, r.err


def test_plan_wait_timeout_cancels_the_waiting_task_and_exits_5(env: Env) -> None:
    env.workspace("net")
    env.ok("plan", "net", "--quiet", code=2)
    started = time.monotonic()
    r = env.run("plan", "net", "--quiet", "--wait-timeout", "2s")
    assert r.code == 5, r.err
    assert time.monotonic() - started < 30
    assert "task 2 waits: task 1 (apply_pending since " in r.out + r.err
    lines = r.err.strip().splitlines()
    assert lines[-1].startswith("iacctl: task 2 cancelled: gave up after waiting 2s; it waited for: task 1 "), lines
    assert env.task(2)["status"] == "cancelled"
    _nothing_pending(env)
    # The same from the environment, as a CI job sets it once.
    r = env.run("plan", "net", "--quiet", extra_env={"IACCTL_WAIT_TIMEOUT": "1s"})
    assert r.code == 5 and "gave up after waiting 1s" in r.err, r.err
    _nothing_pending(env)
    assert env.run("plan", "net", "--wait-timeout", "soon").code == 64


def test_confirm_apply_wait_timeout_leaves_the_plan_waiting(env: Env, processes: list[Background]) -> None:
    """On the local pool an apply needs a running place; a confirmation that gives up waiting for
    one leaves its plan waiting for confirmation, and a later confirmation applies it."""
    env.ok("pool", "set", "local", "--slots-per-pod", "1")
    env.workspace("a", "slow_apply")
    env.ok("workspace", "var", "set", "a", "sleep", "5")
    env.workspace("b")
    env.ok("plan", "a", "--quiet", code=2)
    env.ok("plan", "b", "--quiet", code=2)
    applier = spawn(env, processes, "confirm-apply", "1")
    applier.wait_line("terraform_data.slow: Provisioning with 'local-exec'")
    r = env.run("confirm-apply", "2", "--quiet", "--wait-timeout", "1s")
    assert r.code == 5, r.err
    assert "task 2 waits: all 1 running places of pool local are in use (task 1)" in r.out + r.err
    assert r.err.strip().splitlines()[-1].endswith("it still waits for confirmation")
    assert env.task(2)["status"] == "apply_pending"
    assert applier.wait() == 0, applier.output
    env.ok("confirm-apply", "2", "--quiet")
    assert env.task(2)["apply_path"] == "same_slot"
