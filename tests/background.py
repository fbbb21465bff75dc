"""Helpers for tests that run `iacctl` in the background: a spawned process whose output is read
as it comes, and waits on the tasks it works on. The `processes` fixture (tests/conftest.py)
kills whatever a test leaves running."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.conftest import Env

FIRST_CREATED = "terraform_data.first: Creation complete"
# Printed once `first` is done and stored, when the slow resource's provisioner starts.
SLOW_STARTED = "terraform_data.slow (local-exec): Executing"


class Background:
    """A background `iacctl` whose output is read as it comes (a full pipe would stall it), so
    its lines can be waited for while it runs."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [
            threading.Thread(target=self._drain, args=(stream, into), daemon=True)
            for stream, into in ((proc.stdout, self._out), (proc.stderr, self._err))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _drain(stream: IO[str], into: list[str]) -> None:
        for line in stream:
            into.append(line)

    @property
    def out(self) -> list[str]:
        """The lines written to stdout so far, without their line ends."""
        return [line.rstrip("\n") for line in list(self._out)]

    @property
    def err(self) -> list[str]:
        """The lines written to stderr so far, without their line ends."""
        return [line.rstrip("\n") for line in list(self._err)]

    @property
    def output(self) -> str:
        return "\n".join(self.out + self.err)

    def wait_line(self, text: str, timeout: float = 60) -> str:
        """The first stdout line containing `text`, once it is written."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.out:
                if text in line:
                    return line
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.poll()
                raise AssertionError(f"no line with {text!r} (exit {self.proc.returncode}):\n" + self.output)
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 120) -> int:
        """Wait for the process to end and its output to be read; its exit code."""
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=timeout)
        return code

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        """Wait for the process to end: its exit code, stdout and stderr."""
        code = self.wait(timeout)
        return code, "".join(self._out), "".join(self._err)

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a lost CI runner would; wait until it is gone."""
        self.proc.send_signal(signal.SIGKILL)
        assert self.wait(timeout=60) == -signal.SIGKILL


def spawn(env: Env, processes: list[Background], *args: str) -> Background:
    """Start `iacctl ARGS` in the test's environment, tracked by the `processes` fixture."""
    process = Background(env.spawn(*args))
    processes.append(process)
    return process


def wait_task(env: Env, task_id: int, predicate: Any, timeout: float = 120) -> dict[str, Any]:
    """Like env.wait_for, but the task may not exist yet (its `iacctl plan` is starting)."""
    deadline = time.monotonic() + timeout
    while env.run("tasks", "show", str(task_id)).code != 0:
        assert time.monotonic() < deadline, f"task {task_id} was never created"
        time.sleep(0.1)
    return env.wait_for(task_id, predicate, timeout=max(1.0, deadline - time.monotonic()))


def wait_log(env: Env, task_id: int, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in env.ok("tasks", "logs", str(task_id)).out:
        assert time.monotonic() < deadline, f"task {task_id}'s log never showed {text!r}"
        time.sleep(0.2)


def assert_partial_state_of_slow_apply(env: Env, workspace: str) -> None:
    """The slow_apply configuration stopped during `slow`: one partial state version, made by
    task 1, with `first` whole and `slow` absent or tainted (its provisioner did not finish)."""
    import json

    versions = env.ok("state", "versions", workspace, "--json").json()
    assert [(v["task"], v["partial"]) for v in versions] == [(1, True)]
    state = json.loads(env.ok("state", "pull", workspace).out)
    created = {r["name"]: r["instances"][0].get("status") for r in state["resources"]}
    assert created["first"] is None  # created whole before the stop
    assert created.get("slow", "tainted") == "tainted"


def slot_states(env: Env) -> list[tuple[str, int | None]]:
    return [(s["state"], s["task"]) for s in env.ok("pods", "list", "--json").json()[0]["slots"]]


def statuses(view: dict[str, Any]) -> list[str]:
    return [h["to"] for h in view["history"] if h["kind"] == "status"]
