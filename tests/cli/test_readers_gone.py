"""Issue 19 item 6: the task's outcome never depends on who reads the command's output. A pipe
closed early (`iacctl plan net | head -3`), a closed stderr or a terminal that hangs up (SIGHUP)
neither fails nor cancels the task: the command stops printing and the task goes on."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.conftest import Env


def _start(env: Env, *args: str, stderr: int | None = subprocess.PIPE) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "iacctl", *args], stdout=subprocess.PIPE, stderr=stderr,
                            text=True, env=env.vars, cwd=env.root)


def test_a_pipe_closed_after_three_lines_neither_fails_nor_cancels_the_plan(env: Env) -> None:
    env.workspace("net")
    proc = _start(env, "plan", "net")
    assert proc.stdout is not None and proc.stderr is not None
    head = [proc.stdout.readline() for _ in range(3)]  # what `| head -3` reads
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 2, err  # the plan's own exit code: changes wait for confirmation
    assert all(head) and "Traceback" not in err and "Broken pipe" not in err
    task = env.task(1)
    assert task["status"] == "apply_pending" and task["error"] is None
    env.ok("confirm-apply", "1", "-q")
    assert env.task(1)["status"] == "applied"


def test_closed_stdout_and_stderr_from_the_start(env: Env) -> None:
    env.workspace("net")
    proc = _start(env, "plan", "net", "--plan-only")
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 2
    task = env.task(1)
    assert task["status"] == "planned_and_finished" and task["error"] is None


def test_a_terminal_that_hangs_up_does_not_cancel_the_task(env: Env) -> None:
    env.workspace("net")
    proc = _start(env, "plan", "net", stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    while "stage: init" not in proc.stdout.readline():
        pass
    proc.send_signal(signal.SIGHUP)
    proc.stdout.close()
    assert proc.wait(timeout=120) == 2
    task = env.task(1)
    assert task["status"] == "apply_pending" and task["error"] is None
