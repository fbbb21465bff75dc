"""The executor's failure paths (SPEC E2, E3): a failed apply keeps its partial state and ends
through the termination path; an error before Terraform even runs still leaves the task
terminal with the error recorded."""

from __future__ import annotations

import json

from tests.conftest import Env


def _all_idle(env: Env) -> bool:
    return all(s["state"] == "idle" for s in env.ok("pods", "list", "--json").json()[0]["slots"])


def test_a_failed_apply_keeps_its_partial_state(any_env: Env) -> None:
    env = any_env
    env.workspace("app", "failing_apply")
    env.ok("plan", "app", code=2)
    r = env.run("confirm-apply", "1")
    assert r.code == 1
    restated, failed = r.err.strip().splitlines()
    assert restated.startswith("iacctl: about to apply task 1 of workspace app: plan ")
    # Issue 9: Terraform's reason, then what iacctl kept, then where the whole log is.
    assert failed == (
        "iacctl: task 1 failed at stage applying: terraform apply failed (exit 1): Error: local-exec provisioner "
        "error: Error running command 'echo failing on purpose; exit 3': exit status 3. Output: failing on purpose; "
        "partial state saved as state version 1; full log: iacctl tasks logs 1")
    task = env.task(1)
    assert task["status"] == "failed" and task["stage"] == "applying"
    versions = env.ok("state", "versions", "app", "--json").json()
    assert [v["partial"] for v in versions] == [True]
    state = json.loads(env.ok("state", "pull", "app").out)
    names = {r["name"] for r in state["resources"]}
    assert "ok" in names  # what the apply did before it failed is not lost
    assert env.ok("workspace", "show", "app", "--json").json()["lock"] is None
    assert _all_idle(env)
    logs = env.ok("tasks", "logs", "1").out
    assert "failing on purpose" in logs
    assert "iacctl: task failed: terraform apply failed" in logs
    assert not (env.work_root / "local" / "local" / "slot-0").exists()


def test_a_work_directory_that_cannot_be_made_fails_the_task(env: Env) -> None:
    env.workspace("net")
    blocker = env.root / "not-a-dir"
    blocker.write_text("a file where the work root should be")
    r = env.run("plan", "net", extra_env={"IACCTL_WORK_ROOT": str(blocker)})
    assert r.code == 1
    assert len(r.err.strip().splitlines()) == 1
    assert "cannot make the work directory" in r.err
    task = env.task(1)
    assert task["status"] == "failed" and task["stage"] == "fetching"
    assert "cannot make the work directory" in task["error"]
    assert _all_idle(env)
    env.ok("plan", "net", code=2)  # nothing was left behind to block the next one


def test_a_broken_configuration_fails_at_init_and_leaves_nothing_held(env: Env) -> None:
    env.workspace("bad", "broken")
    r = env.run("plan", "bad")
    assert r.code == 1
    assert r.err.strip().splitlines() == [
        "iacctl: task 1 failed at stage init: terraform init failed (exit 1): Error: Unclosed configuration block: "
        "There is no closing brace for this block before the end of the file. This may be caused by incorrect brace "
        "nesting elsewhere in this file.; full log: iacctl tasks logs 1"]
    assert "Unclosed configuration block" in r.out + env.ok("tasks", "logs", "1").out
    assert env.ok("workspace", "show", "bad", "--json").json()["lock"] is None
    assert _all_idle(env)
