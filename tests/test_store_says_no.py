"""Issue 19 item 4: a store that says no while `plan` waits for its task's turn leaves no task
behind to run later by itself, and the line says what became of the task."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.conftest import Env

# Holds a write transaction for `seconds`, then lets go by itself (nothing waits on the test).
HOLD = ("import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
        "c.execute('BEGIN IMMEDIATE'); print('held', flush=True); time.sleep(float(sys.argv[2]))\n"
        "c.execute('ROLLBACK')\n")


def test_a_store_busy_while_plan_waits_leaves_no_task_to_run_later(env: Env) -> None:
    env.workspace("net")
    env.ok("plan", "net", "-q", code=2)  # task 1 holds the workspace: task 2 will wait
    plan = subprocess.Popen([sys.executable, "-m", "iacctl", "plan", "net", "-q"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**env.vars, "IACCTL_BUSY_TIMEOUT": "1"},
                            cwd=env.root)
    deadline = time.monotonic() + 60
    while not any(t["id"] == 2 for t in env.tasks()):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(env.db_path), "4"], stdout=subprocess.PIPE,
                              text=True)
    try:
        _, err = plan.communicate(timeout=60)
    finally:
        holder.wait(timeout=30)
    assert plan.returncode == 1, err
    line = err.strip().splitlines()[-1]
    assert "is busy" in line and "task 2" in line and "never runs" in line, line
    assert "nothing was changed" not in line
    # The workspace is freed: whatever starts the queue now never starts task 2.
    env.ok("cancel", "1")
    env.ok("pods", "recover")
    task = env.task(2)
    assert task["status"] == "cancelled" and task["started_at"] is None, task
    assert {s["state"] for s in env.ok("pods", "list", "--json").json()[0]["slots"]} == {"idle"}
    assert env.ok("workspace", "show", "net", "--json").json()["lock"] is None
