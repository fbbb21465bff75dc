"""Issue 19 item 5: with --json, a command that created or touched a task prints the task's
document on stdout whatever its exit code; the error stays one line on stderr."""

from __future__ import annotations

import json
import shutil

from tests.conftest import Env


def test_json_on_a_replan_exit_4_and_a_wait_given_up_exit_5(env: Env) -> None:
    env.workspace("net")
    env.ok("plan", "net", "-q", code=2)
    # Task 2 waits behind task 1 (apply_pending holds the workspace) and gives up: exit 5.
    r = env.run("plan", "net", "-q", "--json", "--wait-timeout", "1s")
    assert r.code == 5, r.err
    doc = json.loads(r.out)
    assert (doc["id"], doc["status"]) == (2, "cancelled")
    assert r.err.strip().splitlines()[-1].startswith("iacctl: task 2 cancelled: gave up after")
    # Task 1's plan context is lost: confirm-apply re-plans it and exits 4.
    shutil.rmtree(env.work_root / "local" / "local" / "slot-0")
    r = env.run("confirm-apply", "1", "-q", "--json")
    assert r.code == 4, r.err
    doc = json.loads(r.out)
    assert (doc["id"], doc["status"], doc["replans"]) == (1, "apply_pending", 1)
    assert r.err.strip().splitlines()[-1].startswith("iacctl: task 1 was re-planned because")
    # A refusal (exit 5) of an existing task prints it too; an unknown task (exit 64) prints nothing.
    env.ok("cancel", "1")
    r = env.run("confirm-apply", "1", "--json")
    assert r.code == 5 and json.loads(r.out)["status"] == "cancelled"
    r = env.run("confirm-apply", "99", "--json")
    assert r.code == 64 and r.out == ""
