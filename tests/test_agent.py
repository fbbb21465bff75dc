"""The agent (issue 20 items 1-4), end to end: the installed entry point, a real agent process
forking real workers, real Terraform, real signals. Every agent a test starts is stopped at
teardown; no other test has one (tests/conftest.py sets IACCTL_AGENT=off)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import iacctl
from tests.background import (
    SLOW_STARTED,
    Background,
    assert_partial_state_of_slow_apply,
    spawn,
    statuses,
    wait_log,
    wait_task,
)
from tests.conftest import PYTHON, Env, postgres_server
from tests.fixtures.receivers import running_receiver
from tests.terminal import run_on_a_terminal

INSTALLED = str(Path(PYTHON).parent / "iacctl")


def _status(env: Env) -> dict[str, Any]:
    return env.ok("agent", "status", "--json").json()  # type: ignore[no-any-return]


def _workers(env: Env) -> int:
    """Commands the agents of this runtime directory ran (an agent that handed over to a newer
    one, when another test upgrades the package, counts too)."""
    log = Path(env.vars["XDG_RUNTIME_DIR"]) / "iacctl" / "agent.log"
    return sum(" worker " in line for line in log.read_text().splitlines())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def _stop_agents(env: Env) -> None:
    pids = set()
    r = env.run("agent", "status", "--json", extra_env={"IACCTL_AGENT": "off"})
    if r.code == 0:
        pids.add(r.json()["pid"])
    env.run("agent", "stop", extra_env={"IACCTL_AGENT": "off"})
    for pid in pids:
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _with_agent(env: Env, **extra: str) -> Env:
    run = env.root / "run"
    run.mkdir(mode=0o700, exist_ok=True)
    env.vars.update({"XDG_RUNTIME_DIR": str(run), "IACCTL_AGENT": "on", **extra})
    env.ok("agent", "start")
    return env


@pytest.fixture
def agent_env(env: Env) -> Iterator[Env]:
    """`env` whose commands go through an agent (IACCTL_AGENT=on), stopped at teardown."""
    try:
        yield _with_agent(env)
    finally:
        _stop_agents(env)


def _installed(env: Env, *args: str, input: str | None = None, **extra: str | None) -> tuple[int, str, str]:
    """`iacctl ARGS` through the installed entry point; an `extra` variable given as None is unset."""
    variables = {k: v for k, v in {**env.vars, **extra}.items() if v is not None}
    proc = subprocess.run([INSTALLED, *args], capture_output=True, text=True, input=input,
                          env=variables, cwd=env.root, timeout=180)
    return proc.returncode, proc.stdout, proc.stderr


def _tour(env: Env, src: Path) -> list[tuple[int, str, str]]:
    """The README tour's plan/confirm flow, with the outputs each step gives."""
    steps = [
        ["workspace", "create", "net", "--dir", str(src)],
        ["workspace", "list"],
        ["plan", "net"],
        ["tasks", "list"],
        ["tasks", "list", "--json"],
        ["workspace", "show", "net"],
        ["confirm-apply", "1"],
        ["tasks", "show", "1"],
        ["workspace", "show", "nope"],
        ["confirm-apply", "1"],
        ["tasks", "list", "--bogus"],
    ]
    return [_installed(env, *step) for step in steps]


_TIMES = re.compile(
    r"\b[0-9a-f]{8}-[0-9a-f-]{27}\b|\b[0-9a-f]{12,64}\b"  # resource ids, plan hashes
    r"|\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d(\.\d+)?)?Z?|\d+(\.\d+)? ?(ms|s)\b|\"[a-z_]+_at\":[^,}]+"  # times
)


def _normal(text: str, root: Path) -> str:
    return _TIMES.sub("<t>", text.replace(str(root), "<root>"))


def test_the_tour_gives_the_same_outputs_and_exit_codes_with_and_without_the_agent(
        tmp_path_factory: pytest.TempPathFactory, env: Env) -> None:
    without = env
    with_root = tmp_path_factory.mktemp("with-agent")
    from tests.conftest import _base_vars

    vars = _base_vars(with_root)
    vars["IACCTL_DB"] = str(with_root / "store.db")
    agent = _with_agent(Env(root=with_root, vars=vars))
    try:
        served = _workers(agent)
        results = {}
        for side in (without, agent):
            results[side.root] = _tour(side, side.config("simple", into="src"))
        assert _workers(agent) >= served + 11  # every step went through the agent
        a, b = (results[without.root], results[agent.root])
        for i, (step_a, step_b) in enumerate(zip(a, b, strict=True)):
            assert step_a[0] == step_b[0]
            # Terraform creates resources in parallel: its lines of plan (2) and apply (6) come in
            # either order, on both sides alike.
            same = (lambda text: sorted(text.splitlines())) if i in (2, 6) else (lambda text: text)
            for out_a, out_b in ((step_a[1], step_b[1]), (step_a[2], step_b[2])):
                assert same(_normal(out_a, without.root)) == same(_normal(out_b, agent.root))
        assert [code for code, _, _ in b] == [0, 0, 2, 0, 0, 0, 0, 0, 64, 5, 64]
        # On a terminal: colours, table borders, widths; byte for byte the same.
        seen = ""
        for args in (["tasks", "list"], ["workspace", "show", "net"], ["tasks", "show", "1"]):
            code_a, out_a = run_on_a_terminal(without, *args, columns=100)
            code_b, out_b = run_on_a_terminal(agent, *args, columns=100)
            assert code_a == code_b == 0
            assert _normal(out_a, without.root) == _normal(out_b, agent.root)
            seen += out_b
        assert "\x1b[" in seen  # colours on a terminal, through the agent too
    finally:
        _stop_agents(agent)


def test_ctrl_c_during_an_apply_through_the_agent_cancels_and_keeps_partial_state(
        agent_env: Env, processes: list[Background]) -> None:
    env = agent_env
    env.workspace("app", "slow_apply")
    env.ok("workspace", "var", "set", "app", "sleep", "30")
    env.ok("plan", "app", code=2)
    apply = spawn(env, processes, "confirm-apply", "1")
    wait_task(env, 1, lambda t: t["stage"] == "applying")
    wait_log(env, 1, SLOW_STARTED)
    log = (Path(env.vars["XDG_RUNTIME_DIR"]) / "iacctl" / "agent.log").read_text()
    assert ": confirm-apply" in log  # the apply runs in the agent's worker
    apply.signal(signal.SIGINT)
    code, _, err = apply.finish()
    assert code == 3, err
    assert "task 1 cancelled" in err
    task = env.task(1)
    assert task["status"] == "cancelled" and task["stage"] == "applying"
    assert "partial state saved as state version 1" in task["error"]
    assert statuses(task)[-2:] == ["running", "cancelled"]
    assert_partial_state_of_slow_apply(env, "app")


def test_kill_9_of_the_agent_mid_command_leaves_the_task_as_a_killed_command_and_the_sweep_settles_it(
        agent_env: Env, processes: list[Background]) -> None:
    env = agent_env
    env.workspace("app", "slow_apply")
    env.ok("workspace", "var", "set", "app", "sleep", "37")
    env.ok("plan", "app", code=2)
    apply = spawn(env, processes, "confirm-apply", "1")
    wait_task(env, 1, lambda t: t["stage"] == "applying")
    wait_log(env, 1, SLOW_STARTED)
    agent_pid = _status(env)["pid"]
    os.kill(agent_pid, signal.SIGKILL)
    code, _, err = apply.finish()
    assert code == 1
    assert "the agent stopped during the command" in err
    off = {"IACCTL_AGENT": "off"}
    assert env.ok("tasks", "show", "1", "--json", extra_env=off).json()["status"] == "running"
    actions = env.ok("pods", "recover", "--json", extra_env=off).json()
    assert [(a["action"], a["task"]) for a in actions] == [("failed", 1)]
    task = env.ok("tasks", "show", "1", "--json", extra_env=off).json()
    assert task["status"] == "failed" and "partial state saved as state version 1" in task["error"]
    assert_partial_state_of_slow_apply(env, "app")


def test_another_users_connection_is_refused(env: Env) -> None:
    # A runtime directory another user may walk through (pytest's own tmp is closed to them).
    base = Path(tempfile.mkdtemp(prefix="iacctl-agent-"))
    os.chmod(base, 0o711)
    run = base / "run"
    run.mkdir(mode=0o700)
    env.vars.update({"XDG_RUNTIME_DIR": str(run), "IACCTL_AGENT": "on"})
    try:
        env.ok("agent", "start")
        served = _status(env)["served"]
        # The client side is stdlib only (iacctl.launch), so the system's Python runs it as nobody
        # (the virtualenv's interpreter lives under /root).
        system_python = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"
        as_nobody = ["runuser", "-u", "nobody", "--", system_python, "-c"]
        path = f"import sys; sys.path.insert(0, {str(Path(iacctl.__file__).parents[1])!r})\n"
        probe = (path + "from iacctl.launch import connect, NoAgent, agent_dir\n"
                 "try:\n    connect(agent_dir())\nexcept NoAgent as exc:\n    print('REFUSED', exc)\n"
                 "else:\n    print('CONNECTED')\n")
        nobody_env = {"PATH": os.environ["PATH"], "XDG_RUNTIME_DIR": str(run), "HOME": "/tmp"}
        # The directory is 0700: another user cannot reach the socket, and does not try.
        r = subprocess.run([*as_nobody, probe], capture_output=True, text=True, env=nobody_env, timeout=60)
        assert "REFUSED" in r.stdout and "Permission denied" in r.stdout, r.stdout + r.stderr
        # Opened by mistake: the agent itself checks the peer's uid (SO_PEERCRED), serves no one else.
        os.chmod(run, 0o755)
        os.chmod(run / "iacctl", 0o755)
        os.chmod(run / "iacctl" / "agent.sock", 0o777)
        sender = (path + "import socket\nfrom iacctl.launch import socket_address, send_message, receive_message\n"
                  "s = socket.socket(socket.AF_UNIX)\ns.connect(socket_address(sys.argv[1])[0])\n"
                  "try:\n"
                  "    send_message(s, {'op': 'run', 'argv': ['--version'], 'cwd': '/', 'env': {}, 'umask': 18}, "
                  "[0, 1, 2])\n"
                  "    print('REPLY', receive_message(s))\nexcept (EOFError, OSError) as exc:\n"
                  "    print('CLOSED', type(exc).__name__)\n")
        r = subprocess.run([*as_nobody, sender, str(run / "iacctl")], capture_output=True, text=True,
                           env=nobody_env, timeout=60)
        assert "CLOSED" in r.stdout and "REPLY" not in r.stdout, r.stdout + r.stderr
        os.chmod(run / "iacctl", 0o700)
        nobody = int(subprocess.check_output(["id", "-u", "nobody"]))
        assert f"refused a connection from uid {nobody}" in (run / "iacctl" / "agent.log").read_text()
        assert _status(env)["served"] == served
    finally:
        _stop_agents(env)
        shutil.rmtree(base, ignore_errors=True)


def test_an_upgraded_package_makes_the_agent_restart(agent_env: Env) -> None:
    env = agent_env
    before = _status(env)
    package_file = Path(iacctl.__file__)
    later = time.time() + 1
    os.utime(package_file, (later, later))  # what installing another version does to its files
    code, out, _ = _installed(env, "workspace", "list")
    assert code == 0 and "no workspaces yet" in out  # run in-process or by the new agent: never old code
    deadline = time.monotonic() + 20
    while True:
        r = env.run("agent", "status", "--json", extra_env={"IACCTL_AGENT": "off"})
        if r.code == 0 and r.json()["pid"] != before["pid"]:
            break
        assert time.monotonic() < deadline, "no new agent started"
        time.sleep(0.1)
    deadline = time.monotonic() + 10
    while _alive(before["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(before["pid"])
    assert "handing over to a new agent" in (env.root / "run" / "iacctl" / "agent.log").read_text()
    served = _status(env)["served"]
    assert _installed(env, "workspace", "list")[1] == out
    assert _status(env)["served"] == served + 1


def test_two_stores_through_one_agent_never_mix(agent_env: Env, tmp_path_factory: pytest.TempPathFactory) -> None:
    env = agent_env
    src = env.config("simple", into="src")
    other = env.root / "other.db"
    pg = postgres_server(tmp_path_factory).create_database("t_" + uuid.uuid4().hex[:12])
    stores: list[tuple[list[str], dict[str, str | None], str]] = [
        ([], {}, "in-default"),
        (["--db", str(other)], {}, "in-other"),
        ([], {"IACCTL_DATABASE_URL": pg, "IACCTL_DB": None}, "in-postgres"),
    ]
    for args, extra, name in stores:
        code, _, err = _installed(env, *args, "workspace", "create", name, "--dir", str(src), **extra)
        assert code == 0, err
    for args, extra, name in stores:
        code, out, _ = _installed(env, *args, "workspace", "list", "--json", **extra)
        assert code == 0
        assert [w["name"] for w in json.loads(out)] == [name]
    assert _workers(env) >= 6


def test_the_agents_housekeeping_delivers_a_due_retry_with_no_command_run(env: Env) -> None:
    agent = _with_agent(env, IACCTL_AGENT_SWEEP="1")
    try:
        env.workspace("net")
        with running_receiver("script", script=[(500, {"Retry-After": "1"})]) as receiver:
            env.ok("notify", "create", "ops", "--url", receiver.url, "--events", "planned")
            r = env.run("plan", "net", "--plan-only", "-q")
            assert r.code == 2 and "1 notification(s) not delivered yet" in r.err
            got = receiver.wait_for(2, timeout=30)  # no command runs: the agent's sweep delivers it
        assert [g.payload["iacctl"]["attempt"] for g in got] == [1, 2]
        off = {"IACCTL_AGENT": "off"}
        entries = env.ok("outbox", "list", "--kind", "notification", "--json", extra_env=off).json()
        assert [(e["status"], e["attempts"]) for e in entries] == [("delivered", 2)]
    finally:
        _stop_agents(agent)


def test_without_an_agent_or_a_terminal_commands_run_in_process_and_start_none(env: Env) -> None:
    """Item 2: auto never starts an agent without a TTY or in CI; a stale socket is ignored."""
    run = env.root / "run"
    (run / "iacctl").mkdir(parents=True, mode=0o700)
    os.chmod(run, 0o700)
    stale = (run / "iacctl" / "agent.sock")
    stale.write_text("")  # left by an agent that died
    code, out, err = _installed(env, "workspace", "list", XDG_RUNTIME_DIR=str(run), IACCTL_AGENT="auto")
    assert (code, out, err) == (0, "no workspaces yet: iacctl workspace create NAME --dir DIR\n", "")
    code, _, err = _installed(env, "workspace", "list", XDG_RUNTIME_DIR=str(run), IACCTL_AGENT="debug")
    assert code == 0 and "iacctl: agent: running in this process: no agent answers" in err
    time.sleep(0.5)
    assert env.run("agent", "status", extra_env={"XDG_RUNTIME_DIR": str(run)}).code == 1
    shutil.rmtree(run)
