"""Output (SPEC C2, C4, E4): stages show while they run, rich on a terminal and plain lines in CI
or with NO_COLOR; Terraform's lines stream to the terminal and to the stored log as they come;
every listing has --json."""

from __future__ import annotations

import json
import subprocess
import time

from tests.conftest import Env
from tests.terminal import run_on_a_terminal


def _read_until(proc: subprocess.Popen[str], needle: str, timeout: float = 60) -> str:
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        assert time.monotonic() < deadline, f"never saw {needle!r}; got:\n{seen}"
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"output ended before {needle!r}:\n{seen}")
        seen += line
    return seen


def test_stages_and_terraform_lines_stream_while_the_task_runs(env: Env) -> None:
    env.workspace("app", "slow_apply")
    env.ok("workspace", "var", "set", "app", "sleep", "6")
    env.ok("plan", "app", code=2)
    proc = env.spawn("confirm-apply", "1")
    seen = _read_until(proc, "terraform_data.slow: Provisioning with 'local-exec'")
    # The stage and Terraform's first lines are on the terminal while the apply still runs ...
    assert proc.poll() is None
    assert "[task 1] stage: applying" in seen
    assert "terraform_data.first: Creation complete" in seen
    # ... and already in the store, for `tasks logs -f` in another terminal.
    deadline = time.monotonic() + 10
    while "terraform_data.first: Creation complete" not in env.ok("tasks", "logs", "1").out:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    follow = env.spawn("tasks", "logs", "1", "--follow")
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    followed, _ = follow.communicate(timeout=30)
    assert "Apply complete! Resources: 2 added" in followed
    assert followed.index("Creation complete") < followed.index("Apply complete!")


def test_plain_lines_without_a_terminal(env: Env) -> None:
    env.workspace("net")
    r = env.ok("plan", "net", code=2)
    stages = [line for line in r.out.splitlines() if line.startswith("[task 1] stage: ")]
    assert stages == ["[task 1] stage: fetching", "[task 1] stage: init", "[task 1] stage: planning",
                      "[task 1] stage: saving_plan"]
    assert "\x1b[" not in r.out
    quiet = env.ok("confirm-apply", "1", "--quiet")
    assert "[task 1] stage: applying" in quiet.out
    assert "Creation complete" not in quiet.out  # Terraform's own output hidden with -q
    assert "Creation complete" in env.ok("tasks", "logs", "1").out  # but still stored


def test_rich_progress_on_a_terminal(env: Env) -> None:
    env.workspace("net")
    code, text = run_on_a_terminal(env, "plan", "net")
    assert code == 2
    assert "▸ task 1: planning" in text
    assert "\x1b[" in text  # styled
    assert "[task 1] stage:" not in text


def test_json_goes_alone_on_stdout(env: Env) -> None:
    env.workspace("net")
    r = env.ok("plan", "net", "--json", code=2)
    doc = json.loads(r.out)
    assert {"id", "status", "stage", "plan_hash"} <= doc.keys()
    assert doc["status"] == "apply_pending"
    assert "stage: planning" in r.err  # progress went to stderr


def test_every_listing_has_json(env: Env) -> None:
    env.workspace("net")
    env.ok("workspace", "var", "set", "net", "region", "x")
    env.ok("plan", "net", code=2)
    env.ok("confirm-apply", "1")
    listings = [
        ("workspace", "list"), ("workspace", "var", "list", "net"), ("tasks", "list"),
        ("state", "versions", "net"), ("pods", "list"), ("pool", "list"), ("pods", "recover"),
        ("pods", "reconcile"),
    ]
    for args in listings:
        doc = env.ok(*args, "--json").json()
        assert isinstance(doc, list), args
    for args in [("workspace", "show", "net"), ("tasks", "show", "1"), ("pool", "show", "local")]:
        assert isinstance(env.ok(*args, "--json").json(), dict), args
