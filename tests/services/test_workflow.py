"""The core tour (issue: plan -> confirm-apply -> plan again), on SQLite and PostgreSQL."""

from __future__ import annotations

from tests.conftest import Env


def test_plan_confirm_apply_then_no_changes(any_env: Env) -> None:
    env = any_env
    env.workspace("net")
    env.ok("workspace", "var", "set", "net", "region", "eu-west-1")
    env.ok("workspace", "var", "set", "net", "db_password", "hunter2-secret", "--sensitive")

    plan = env.ok("plan", "net", code=2)
    assert "stage: planning" in plan.out
    task = env.task(1)
    assert task["status"] == "apply_pending"
    assert task["changes"]["add"] == 2
    assert len(task["plan_hash"]) == 64
    assert (task["pool"], task["pod"], task["slot"]) == ("local", "local", 0)
    ws = env.ok("workspace", "show", "net", "--json").json()
    assert ws["lock"] == {"holder": "task 1", "task": 1, "reason": "task 1 waits for confirm-apply",
                          "locked_at": ws["lock"]["locked_at"]}

    # S2: the apply_pending task keeps its slot reserved, with its work directory and plan file.
    slots = env.ok("pods", "list", "--json").json()[0]["slots"]
    assert slots[0] == {"index": 0, "state": "reserved", "task": 1}
    assert (env.work_root / "local" / "local" / "slot-0" / "tfplan").is_file()

    applied = env.ok("confirm-apply", "1")
    assert "same work directory as the plan" in applied.out
    task = env.task(1)
    assert task["status"] == "applied"
    assert task["apply_path"] == "same_slot"
    versions = env.ok("state", "versions", "net", "--json").json()
    assert len(versions) == 1 and versions[0]["task"] == 1 and not versions[0]["partial"]
    assert env.ok("workspace", "show", "net", "--json").json()["lock"] is None

    env.ok("plan", "net", code=0)
    assert env.task(2)["status"] == "planned_and_finished"
    statuses = [h["to"] for h in env.task(1)["history"] if h["kind"] == "status"]
    assert statuses == ["pending", "running", "apply_pending", "running", "applied"]
    # The sensitive value never shows, in output or in the stored log.
    logs = env.ok("tasks", "logs", "1").out
    assert "hunter2-secret" not in logs + plan.out + applied.out
    assert "(sensitive value)" in logs
    pods = env.ok("pods", "list", "--json").json()
    assert [s["state"] for s in pods[0]["slots"]] == ["idle", "idle", "idle"]
    assert not (env.work_root / "local" / "local" / "slot-0").exists()  # removed when the task ended
