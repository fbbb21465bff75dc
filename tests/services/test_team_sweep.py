"""A sweep touches only what it can know (issue 18 item 3), with machines of a team (tests/fixtures/
machines.py: Linux namespaces with their own hostname, pids, machine id and work root) on one
PostgreSQL store.

Another machine's waiting plan is never re-planned; another machine's runner is judged dead only
by its heartbeat (IACCTL_HEARTBEAT_TIMEOUT, low here); an apply that died there ends
applied_state_error (or cancelled) with the lock kept and the way to recover, and the machine that
ran it stops what is left of its Terraform and stores the partial state; a forced unlock never
releases a lock while Terraform still runs; two reconciles at once never see one pod two ways.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.background import SLOW_STARTED, Background, spawn, wait_log
from tests.conftest import Env
from tests.kube import NS, POOL, api_pods, kube_env, kube_pool

HEARTBEAT_TIMEOUT = 8.0  # s; the runner beats every 2 s with it
SLEEP = "173"  # the slow provisioner's `sleep`, long enough to outlive every step of a test


def _machines(team: Any) -> tuple[Any, Any]:
    a, b = team.machine("ci-a"), team.machine("ci-b")
    for m in (a, b):
        m.vars["IACCTL_HEARTBEAT_TIMEOUT"] = str(int(HEARTBEAT_TIMEOUT))
    return a, b


def _recover(machine: Env) -> list[dict[str, Any]]:
    return machine.ok("pods", "recover", "--json").json()  # type: ignore[no-any-return]


def _lock(machine: Env, workspace: str) -> dict[str, Any] | None:
    return machine.ok("workspace", "show", workspace, "--json").json()["lock"]  # type: ignore[no-any-return]


def _slow_apply_killed(a: Any, processes: list[Background], *extra: str) -> str:
    """Plan and start the slow apply on A, then kill -9 its runner once the slow provisioner runs,
    as an OOM killer would. A's machine name as the store holds it."""
    a.workspace("app", "slow_apply", *extra)
    a.ok("workspace", "var", "set", "app", "sleep", SLEEP)
    a.ok("plan", "app", code=2)
    spawn(a, processes, "confirm-apply", "1")
    wait_log(a, 1, SLOW_STARTED)
    runner = a.task(1)["runner"]
    assert runner["host"].startswith("ci-a/")
    killed = a.shell(f"kill -9 {runner['pid']}")
    assert killed.returncode == 0, killed.stderr
    return str(runner["host"])


def _provisioner_runs(machine: Any) -> bool:
    return any(p == f"sleep {SLEEP}" or p.endswith(f"-c sleep {SLEEP}") for p in machine.processes())


def test_a_sweep_on_another_machine_leaves_a_waiting_plan_alone(team: Any) -> None:
    a, b = _machines(team)
    a.workspace("net")
    a.ok("plan", "net", code=2)
    before = a.task(1)
    assert before["status"] == "apply_pending"

    assert [x for x in _recover(b) if x["task"] == 1] == []  # not "replanning": A's slot is on A's disk
    after = b.task(1)
    assert after["status"] == "apply_pending" and after["plan_hash"] == before["plan_hash"]
    assert [h["to"] for h in after["history"] if h["kind"] == "status"] == ["pending", "running", "apply_pending"]

    a.ok("confirm-apply", "1")
    assert a.task(1)["status"] == "applied"


def test_an_apply_dead_on_another_machine_keeps_its_lock_and_its_machine_saves_the_partial_state(
    team: Any, processes: list[Background]
) -> None:
    a, b = _machines(team)
    machine_a = _slow_apply_killed(a, processes)
    killed_at = time.monotonic()

    # Its heartbeat is still fresh: B's sweep leaves the task alone.
    assert [x for x in _recover(b) if x["task"] == 1] == []
    assert b.task(1)["status"] == "running"

    deadline = killed_at + HEARTBEAT_TIMEOUT + 30
    while not (actions := [x for x in _recover(b) if x["task"] == 1]):
        assert time.monotonic() < deadline, "B's sweep never judged the dead runner"
        time.sleep(0.5)
    # Judged by the heartbeat, not before: its last beat came at most one interval (a quarter of
    # the timeout) before the kill.
    assert time.monotonic() - killed_at >= HEARTBEAT_TIMEOUT * 3 / 4 - 0.5
    assert [x["action"] for x in actions] == ["applied_state_error"]
    task = b.task(1)
    assert task["status"] == "applied_state_error"
    assert f"its apply ran on {machine_a}" in task["error"]
    assert "iacctl state save-partial 1" in task["error"] and "iacctl state push app" in task["error"]
    lock = _lock(b, "app")
    assert lock is not None and lock["task"] == 1 and machine_a in lock["reason"]
    assert b.ok("state", "versions", "app", "--json").json() == []
    # Nothing else is B's to do, and a second sweep unlocks nothing.
    assert [x for x in _recover(b) if x["task"] == 1] == []
    assert _lock(b, "app") is not None

    # A's next CI job plans another workspace before any sweep runs on A: it gets another slot,
    # and the dead apply's directory (the state it wrote) is left as it is.
    a.workspace("web")
    a.ok("plan", "web", "--plan-only", "-q", code=2)
    assert a.task(2)["slot"] != task["slot"]
    assert (a.work_root / "local" / "local" / f"slot-{task['slot']}" / "terraform.tfstate").exists()

    # A's own sweep: the dead apply's process group is ended, its partial state stored.
    settled = [x for x in _recover(a) if x["task"] == 1]
    assert [x["action"] for x in settled] == ["settled_here"], settled
    assert "partial state saved as state version 1" in settled[0]["detail"]
    assert not _provisioner_runs(a)
    versions = a.ok("state", "versions", "app", "--json").json()
    assert [(v["task"], v["partial"]) for v in versions] == [(1, True)]
    state = json.loads(b.ok("state", "pull", "app").out)
    assert "first" in {r["name"] for r in state["resources"]}  # created before the kill, not lost
    assert _lock(a, "app") is None
    assert not (a.work_root / "local" / "local" / f"slot-{task['slot']}").exists()
    assert [x for x in _recover(a) if x["task"] == 1] == []  # done once


def test_cancel_on_another_machine_of_a_dead_runner_concludes_and_unlock_waits_for_the_heartbeat(
    team: Any, processes: list[Background]
) -> None:
    a, b = _machines(team)
    a.workspace("app", "slow_apply")
    a.ok("workspace", "var", "set", "app", "sleep", SLEEP)
    a.ok("plan", "app", code=2)
    spawn(a, processes, "confirm-apply", "1")
    wait_log(a, 1, SLOW_STARTED)

    # A's runner lives: a forced unlock on B is refused, the lock stays.
    r = b.run("workspace", "unlock", "app", "--force")
    assert r.code == 5 and "which is running" in r.err, r.err
    assert _lock(b, "app")["task"] == 1  # type: ignore[index]

    runner = a.task(1)["runner"]
    assert a.shell(f"kill -9 {runner['pid']}").returncode == 0
    started = time.monotonic()
    r = b.run("cancel", "1")
    took = time.monotonic() - started
    assert r.code == 0, r.out + r.err
    assert took < HEARTBEAT_TIMEOUT + 10, took
    task = b.task(1)
    assert task["status"] == "cancelled"
    assert f"its apply ran on {runner['host']}" in task["error"] and "iacctl state save-partial 1" in task["error"]
    assert _lock(b, "app")["task"] == 1  # type: ignore[index]  # its state is on A: kept locked

    # A later sweep on B does not override the cancel; A's sweep stores the partial state.
    _recover(b)
    assert b.task(1)["status"] == "cancelled"
    assert _lock(b, "app")["task"] == 1  # type: ignore[index]  # nor gives the lock back before A stored the state
    settled = [x for x in _recover(a) if x["task"] == 1]
    assert [x["action"] for x in settled] == ["settled_here"], settled
    assert not _provisioner_runs(a)
    versions = a.ok("state", "versions", "app", "--json").json()
    assert [(v["task"], v["partial"]) for v in versions] == [(1, True)], settled[0]["detail"]
    assert _lock(a, "app") is None
    assert a.task(1)["status"] == "cancelled"


def test_a_kubernetes_pool_shared_by_two_machines(team: Any, fake_kube: Any, processes: list[Background]) -> None:
    """The runner on A dies mid-apply; Terraform goes on in the pod. A forced unlock on A is
    refused while it runs there; `cancel` on B stops it in the pod and ends the task cancelled
    with its partial state, within the heartbeat timeout and a few seconds."""
    a, b = _machines(team)
    kube_pool(a, fake_kube)
    kube_env(b, fake_kube)
    _slow_apply_killed(a, processes, "--pool", POOL)
    pod = a.task(1)["pod"]

    r = a.run("workspace", "unlock", "app", "--force")
    assert r.code == 5 and "still applies in its pod" in r.err, r.err
    assert _lock(a, "app")["task"] == 1  # type: ignore[index]
    assert a.task(1)["status"] == "running"

    started = time.monotonic()
    r = b.run("cancel", "1")
    took = time.monotonic() - started
    assert r.code == 0, r.out + r.err
    assert took < HEARTBEAT_TIMEOUT + 15, took
    task = b.task(1)
    assert task["status"] == "cancelled" and "partial state saved as state version 1" in task["error"]
    assert _lock(b, "app") is None
    # Nothing of it runs in the pod (the fake cluster's pod processes live on this host).
    pod_dir = str(fake_kube.pod_dir(NS, pod))

    def in_pod(proc: Path) -> bool:
        try:
            return str(proc.joinpath("cwd").readlink()).startswith(pod_dir) and \
                b"sleep" in proc.joinpath("cmdline").read_bytes()
        except OSError:
            return False

    assert not [p for p in Path("/proc").glob("[0-9]*") if in_pod(p)]
    # A later sweep on either machine leaves the cancel as it is.
    _recover(a)
    _recover(b)
    assert b.task(1)["status"] == "cancelled"


def test_two_machines_reconciling_at_once_never_see_one_pod_two_ways(team: Any, fake_kube: Any) -> None:
    a, b = _machines(team)
    kube_pool(a, fake_kube, "--min-pods", "3", "--scale-down-delay", "15s")
    kube_env(b, fake_kube)
    assert [c["change"] for c in a.ok("pods", "reconcile", "--pool", POOL, "--json").json()] == ["created"] * 3
    created = time.monotonic()
    pods = api_pods(fake_kube)
    a.ok("pool", "set", POOL, "--min-pods", "0")  # reconciles: idle for less than the delay, all stay
    assert api_pods(fake_kube) == pods
    time.sleep(max(0.0, created + 15.5 - time.monotonic()))  # now idle past it: the next reconcile scales down
    fake_kube.list_latency = 1.0  # both list while neither holds the pool's lock, unless listing under it
    runs = [Background(m.spawn("pods", "reconcile", "--pool", POOL, "--json")) for m in (a, b)]
    seen: dict[str, list[str]] = {}
    for run in runs:
        code, out, err = run.finish()
        assert code == 0, err
        for change in json.loads(out):
            seen.setdefault(change["pod"], []).append(change["change"])
    assert seen == {pod: ["scaled_down"] for pod in pods}, seen
    assert all(p["metadata"].get("deletionTimestamp") for p in fake_kube.pods(NS))  # deleted, or going
