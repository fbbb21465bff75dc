"""Issue 21 item 2: commands say what they did. confirm-apply names each follower plan its run
triggers queued; a forced unlock names the task it ended; `cancel` and `workspace unlock` take
--message/-m, recorded as confirm's is; --json carries the same facts."""

from __future__ import annotations

from tests.conftest import Env


def test_confirm_unlock_and_cancel_say_what_they_did(env: Env) -> None:
    env.workspace("net")
    env.workspace("app")
    env.ok("workspace", "trigger", "add", "app", "--source", "net")
    env.ok("plan", "net", "-q", code=2)

    applied = env.ok("confirm-apply", "1", "-q", "-m", "ship it")
    assert "task 1: applied" in applied.out
    assert ("run trigger: task 2 queued in workspace app; it plans in the background and waits for: "
            "iacctl confirm-apply 2") in applied.out
    env.wait_for(2, lambda t: t["status"] == "apply_pending")

    env.ok("workspace", "var", "set", "net", "region", "us-east-1")
    env.ok("plan", "net", "-q", code=2)
    doc = env.ok("confirm-apply", "3", "-q", "--json").json()
    assert doc["status"] == "applied"
    assert [(f["workspace"], f["task"]) for f in doc["queued_followers"]] == [("app", 4)]

    # Task 2 holds app's lock waiting for confirmation: a forced unlock cancels it and says so.
    unlocked = env.ok("workspace", "unlock", "app", "--force", "-m", "wrong tags")
    assert unlocked.out.strip() == "workspace app unlocked; task 2 (apply_pending) is now cancelled"
    shown = env.task(2)
    assert shown["status"] == "cancelled" and shown["cancelled_by"]["message"] == "wrong tags"

    cancelled = env.ok("cancel", "4", "--message", "not today", "--json").json()
    assert cancelled["status"] == "cancelled" and cancelled["cancelled_by"]["message"] == "not today"
    assert 'cancelled by' in env.ok("tasks", "show", "4").out and '"not today"' in env.ok("tasks", "show", "4").out


def test_unlock_json_names_the_task_it_ended(env: Env) -> None:
    env.workspace("net")
    env.ok("plan", "net", "-q", code=2)
    doc = env.ok("workspace", "unlock", "net", "--force", "--message", "abandoned", "--json").json()
    assert doc["ended_task"] == {"task": 1, "was": "apply_pending", "now": "cancelled"}
    assert doc["unlocked_by"]["message"] == "abandoned" and doc["lock"] is None
    assert env.task(1)["cancelled_by"]["message"] == "abandoned"
