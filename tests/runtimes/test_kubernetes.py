"""The Kubernetes runtime against the fake API server (issue 3 items 1, 2, 4): pods made from
the pool's spec, Terraform run in the slot's pod through exec, files over tar, the E6 paths."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.background import (
    FIRST_CREATED,
    SLOW_STARTED,
    Background,
    assert_partial_state_of_slow_apply,
    spawn,
    wait_log,
    wait_task,
)
from tests.conftest import Env
from tests.kube import NS, POOL, api_pods, kube_pool, log_of, pods_of


def test_plan_and_confirm_on_a_kubernetes_pool_takes_the_fast_path(env: Env, fake_kube: Any) -> None:
    kube_pool(env, fake_kube)
    env.workspace("net", "simple", "--pool", POOL)
    plan = env.ok("plan", "net", code=2)
    assert "plan has changes" in plan.out
    task = env.task(1)
    assert task["status"] == "apply_pending" and task["pool"] == POOL
    # A pod was created for the plan, from the pool's spec, labelled with pool and pod.
    (pod,) = fake_kube.pods(NS)
    name = pod["metadata"]["name"]
    assert pod["metadata"]["labels"]["iacctl.io/pool"] == POOL
    assert pod["metadata"]["labels"]["iacctl.io/pod"] == name
    assert pod["spec"]["containers"][0]["image"] == "registry.example/iacctl-runner:1"
    assert task["pod"] == name
    # The plan's work directory lives in the pod, in the slot's own directory.
    slot_dir = fake_kube.container_path(NS, name, f"/var/lib/iacctl/slots/{task['slot']}")
    assert (slot_dir / "tfplan").is_file() and (slot_dir / "main.tf").is_file()
    (listed,) = pods_of(env)
    assert listed["name"] == name and listed["status"] == "ready"
    assert [(s["state"], s["task"]) for s in listed["slots"]] == [("reserved", 1), ("idle", None), ("idle", None)]

    env.ok("confirm-apply", "1")
    done = env.task(1)
    assert done["status"] == "applied" and done["apply_path"] == "same_slot"
    log = log_of(env, 1)
    assert f"same work directory as the plan ({POOL}/{name}/slot-0" in log
    assert "Apply complete! Resources: 2 added" in log
    assert "problems with the CLI configuration" not in log  # the plugin cache dir exists in the pod
    versions = env.ok("state", "versions", "net", "--json").json()
    assert len(versions) == 1
    assert not slot_dir.exists()  # the work directory is removed after the apply
    assert api_pods(fake_kube) == [name]


def test_a_dropped_exec_connection_does_not_stop_a_long_apply(
    env: Env, fake_kube: Any, processes: list[Background]
) -> None:
    """Item 2: Terraform runs detached in the pod; when the exec connection drops mid-apply,
    iacctl reattaches and follows it from where it was, and the task ends applied."""
    kube_pool(env, fake_kube)
    env.workspace("app", "slow_apply", "--pool", POOL)
    env.ok("workspace", "var", "set", "app", "sleep", "4")
    env.ok("plan", "app", code=2)
    apply = spawn(env, processes, "confirm-apply", "1")
    wait_log(env, 1, SLOW_STARTED)
    assert fake_kube.drop_exec_connections() >= 1
    code, out, err = apply.finish()
    assert code == 0, out + err
    task = env.task(1)
    assert task["status"] == "applied"
    versions = env.ok("state", "versions", "app", "--json").json()
    assert [(v["task"], v["partial"]) for v in versions] == [(1, False)]
    state = json.loads(env.ok("state", "pull", "app").out)
    assert sorted(r["name"] for r in state["resources"]) == ["first", "slow"]
    log = log_of(env, 1)
    # Followed from the byte where the connection dropped: no line lost, none repeated.
    assert log.count(FIRST_CREATED) == 1 and log.count("Apply complete!") == 1
    assert "terraform_data.slow: Creation complete" in log


def test_the_sweep_settles_an_apply_whose_runner_died_from_the_pods_files(
    env: Env, fake_kube: Any, processes: list[Background]
) -> None:
    """Item 2: the runner dies mid-apply; Terraform goes on in the pod. The sweep leaves the
    task while Terraform runs, then settles it from the exit status and state in the slot."""
    kube_pool(env, fake_kube)
    env.workspace("app", "slow_apply", "--pool", POOL)
    # Long enough for the first sweep to find Terraform still applying on a loaded machine.
    env.ok("workspace", "var", "set", "app", "sleep", "20")
    env.ok("plan", "app", code=2)
    apply = spawn(env, processes, "confirm-apply", "1")
    wait_log(env, 1, SLOW_STARTED)
    apply.kill()
    actions = env.ok("pods", "recover", "--json").json()
    assert [(a["action"], a["task"]) for a in actions] == [("still_applying", 1)]
    assert env.task(1)["status"] == "running"
    deadline = time.monotonic() + 90
    while True:
        actions = env.ok("pods", "recover", "--json").json()
        if actions and actions[0]["action"] != "still_applying":
            break
        assert time.monotonic() < deadline, "the apply never ended"
        time.sleep(1)
    # F2: the apply the sweep ends writes its inventory sync, which the sweep then does.
    assert [(a["action"], a["task"]) for a in actions] == [("applied", 1), ("inventory_synced", 1)]
    task = env.task(1)
    assert task["status"] == "applied" and task["state_version"] == 1
    state = json.loads(env.ok("state", "pull", "app").out)
    assert sorted(r["name"] for r in state["resources"]) == ["first", "slow"]
    assert env.ok("workspace", "show", "app", "--json").json()["lock"] is None
    assert env.ok("pods", "recover", "--json").json() == []


def test_a_pod_deleted_while_applying_fails_the_task_and_keeps_the_lock(
    env: Env, fake_kube: Any, processes: list[Background]
) -> None:
    """S5: the pod goes while its task applies: failed with a clear message; the workspace
    stays locked with the reason until an operator unlocks it."""
    kube_pool(env, fake_kube)
    env.workspace("app", "slow_apply", "--pool", POOL)
    env.ok("workspace", "var", "set", "app", "sleep", "30")
    env.ok("plan", "app", code=2)
    pod = env.task(1)["pod"]
    apply = spawn(env, processes, "confirm-apply", "1")
    wait_log(env, 1, SLOW_STARTED)
    fake_kube.delete_pod(NS, pod)
    code, out, err = apply.finish()
    assert code == 1, out + err
    task = env.task(1)
    assert task["status"] == "failed"
    assert f"pod {pod} is gone" in task["error"] and "at stage applying" in task["error"]
    assert "the workspace stays locked" in task["error"]
    lock = env.ok("workspace", "show", "app", "--json").json()["lock"]
    assert lock["task"] == 1 and "was lost during applying" in lock["reason"]
    # The sweep leaves the lock to the operator.
    env.ok("pods", "recover")
    assert env.ok("workspace", "show", "app", "--json").json()["lock"]["task"] == 1
    env.ok("workspace", "unlock", "app")
    assert env.ok("workspace", "show", "app", "--json").json()["lock"] is None


def test_cancel_interrupts_terraform_in_the_pod_and_keeps_the_partial_state(
    env: Env, fake_kube: Any, processes: list[Background]
) -> None:
    """E1 on a pod: `iacctl cancel` makes the runner send SIGINT to Terraform's process group in
    the pod; Terraform stops gracefully and its partial state is kept (E2)."""
    kube_pool(env, fake_kube)
    env.workspace("app", "slow_apply", "--pool", POOL)
    env.ok("workspace", "var", "set", "app", "sleep", "60")
    env.ok("plan", "app", code=2)
    pod = env.task(1)["pod"]
    apply = spawn(env, processes, "confirm-apply", "1")
    wait_log(env, 1, SLOW_STARTED)
    started = time.monotonic()
    env.ok("cancel", "1")
    assert apply.wait() == 3
    assert time.monotonic() - started < 30  # not the 60 s sleep
    task = env.task(1)
    assert task["status"] == "cancelled" and "partial state saved as state version 1" in task["error"]
    assert_partial_state_of_slow_apply(env, "app")
    assert env.ok("workspace", "show", "app", "--json").json()["lock"] is None
    # Nothing of the apply is left running in the pod.
    pod_dir = str(fake_kube.pod_dir(NS, pod))
    assert not [p for p in Path("/proc").glob("[0-9]*") if _cwd_in(p, pod_dir) and "sleep" in _cmd(p)]


def test_a_pool_the_cluster_cannot_be_reached_for_keeps_the_task_queued(env: Env, fake_kube: Any) -> None:
    kube_pool(env, fake_kube)
    env.workspace("net", "simple", "--pool", POOL)
    del env.vars["KUBECONFIG"]
    env.vars["HOME"] = str(env.root / "home")  # no ~/.kube/config, not in a cluster either
    r = env.run("plan", "net")
    assert r.code == 1 and r.err.count("\n") == 1
    assert "task 1 stays queued" in r.err and "cannot load the Kubernetes configuration" in r.err
    assert env.task(1)["status"] == "pending"


def _cwd_in(proc: Path, prefix: str) -> bool:
    try:
        return str((proc / "cwd").resolve()).startswith(prefix)
    except OSError:
        return False


def _cmd(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_the_sweep_stops_a_plan_whose_runner_died_and_fails_it(
    env: Env, fake_kube: Any, processes: list[Background]
) -> None:
    """E3 on a pod: `iacctl plan` is killed while Terraform plans detached in the pod; the
    sweep interrupts that Terraform, fails the task and frees its slot."""
    kube_pool(env, fake_kube)
    env.workspace("big", "many_resources", "--pool", POOL)
    plan = spawn(env, processes, "plan", "big")
    task = wait_task(env, 1, lambda t: t["stage"] == "planning")
    plan.kill()
    actions = env.ok("pods", "recover", "--json").json()
    assert [(a["action"], a["task"]) for a in actions] == [("failed", 1)]
    failed = env.task(1)
    assert failed["status"] == "failed" and "is gone (found at stage planning)" in failed["error"]
    (pod,) = pods_of(env)
    assert [s["state"] for s in pod["slots"]] == ["idle"] * 3
    pod_dir = str(fake_kube.pod_dir(NS, task["pod"]))
    assert not [p for p in Path("/proc").glob("[0-9]*") if _cwd_in(p, pod_dir) and "terraform" in _cmd(p)]
    assert env.ok("pods", "recover", "--json").json() == []


# ---------------------------------------------------------------------------------------------
# issue 10: a cluster that behaves like a real one


@pytest.fixture
def runner_kube(tmp_path: Path) -> Iterator[Any]:
    """The fake API server running pods' commands as the runner image's user (uid 10001), in a
    directory that user can walk into."""
    from tests.fixtures.fake_kube import FakeKube

    root = Path(tempfile.mkdtemp(prefix="fake-kube-"))
    root.chmod(0o755)
    server = FakeKube(root, run_as=10001).start()
    server.write_kubeconfig(tmp_path / "kubeconfig", context="fake", namespace=NS)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_cut_exec_at_the_start_of_the_apply_finds_terraform_again(
    env: Env, runner_kube: Any, processes: list[Background]
) -> None:
    """Item 1: with 1 s of exec latency, the exec that starts `terraform apply` is cut after
    Terraform started. iacctl finds it again from its files (pid, output) and follows it: the
    task ends applied with the whole state, not failed with a mid-apply "partial" state while
    Terraform goes on applying."""
    fake_kube = runner_kube
    kube_pool(env, fake_kube)
    env.workspace("app", "slow_apply", "--pool", POOL)
    env.ok("workspace", "var", "set", "app", "sleep", "3")
    env.ok("plan", "app", code=2)
    fake_kube.exec_latency = 1.0
    fake_kube.cut_exec("terraform apply", after=0.5)
    code, out, err = spawn(env, processes, "confirm-apply", "1").finish()
    assert code == 0, out + err
    task = env.task(1)
    assert task["status"] == "applied" and task["error"] is None
    versions = env.ok("state", "versions", "app", "--json").json()
    assert [(v["task"], v["partial"]) for v in versions] == [(1, False)]
    state = json.loads(env.ok("state", "pull", "app").out)
    assert sorted(r["name"] for r in state["resources"]) == ["first", "slow"]
    log = log_of(env, 1)
    assert log.count(FIRST_CREATED) == 1 and log.count("Apply complete!") == 1
    assert env.ok("workspace", "show", "app", "--json").json()["lock"] is None


def test_a_command_whose_start_cannot_be_confirmed_keeps_the_task_running_and_locked(
    env: Env, fake_kube: Any, processes: list[Background]
) -> None:
    """Item 1: the exec starting the apply is cut and the pod cannot be asked again (exec is
    refused). Nothing is concluded: the task stays running, the workspace locked, the work
    directory in place; once the pod answers, the sweep settles it from Terraform's files."""
    kube_pool(env, fake_kube)
    env.workspace("app", "slow_apply", "--pool", POOL)
    env.ok("workspace", "var", "set", "app", "sleep", "3")
    env.ok("plan", "app", code=2)
    pod, slot = env.task(1)["pod"], env.task(1)["slot"]
    slot_dir = fake_kube.container_path(NS, pod, f"/var/lib/iacctl/slots/{slot}")
    fake_kube.cut_exec("terraform apply", after=0.5, then_forbid_exec=True)
    code, out, err = spawn(env, processes, "confirm-apply", "1").finish(timeout=180)
    assert code == 1, out + err
    # The restatement of what is applied (issue 9), then one line: the task stays as it is.
    restated, said = err.splitlines()
    assert restated.startswith("iacctl: about to apply task 1 of workspace app")
    assert "task 1 stays running at stage applying" in said
    assert env.task(1)["status"] == "running"
    lock = env.ok("workspace", "show", "app", "--json").json()["lock"]
    assert lock["task"] == 1 and "could not be confirmed" in lock["reason"]
    assert slot_dir.is_dir()  # never removed under a Terraform that may be alive
    fake_kube.allow_all()
    deadline = time.monotonic() + 90
    while (actions := env.ok("pods", "recover", "--json").json()) and actions[0]["action"] == "still_applying":
        assert time.monotonic() < deadline, "the apply never ended"
        time.sleep(1)
    assert [(a["action"], a["task"]) for a in actions][:1] == [("applied", 1)]
    versions = env.ok("state", "versions", "app", "--json").json()
    assert [(v["task"], v["partial"]) for v in versions] == [(1, False)]
    assert env.ok("workspace", "show", "app", "--json").json()["lock"] is None


WRAPPER = """#!/bin/sh
# A --terraform wrapper that cleans up when interrupted, as credential helpers and wrappers do.
trap 'echo "tfwrap: interrupted, cleaning up"; kill -INT $child 2>/dev/null; wait $child; exit 130' INT
terraform "$@" &
child=$!
wait $child
"""


def test_cancel_reaches_a_terraform_wrapper_in_the_pod(
    env: Env, fake_kube: Any, processes: list[Background]
) -> None:
    """Item 5: commands start in the pod with default signal dispositions, so the SIGINT of a
    cancel reaches the whole process group: a --terraform wrapper's trap runs (with SIGINT
    ignored, as for a background job of a non-interactive sh, it never could)."""
    bin_dir = env.root / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "tfwrap"
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    fake_kube.pod_env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    kube_pool(env, fake_kube)
    env.workspace("app", "slow_apply", "--pool", POOL, "--terraform", str(wrapper))
    env.ok("workspace", "var", "set", "app", "sleep", "60")
    env.ok("plan", "app", code=2)
    apply = spawn(env, processes, "confirm-apply", "1")
    wait_log(env, 1, SLOW_STARTED)
    env.ok("cancel", "1")
    assert apply.wait() == 3
    task = env.task(1)
    assert task["status"] == "cancelled" and "partial state saved" in task["error"]
    assert "tfwrap: interrupted, cleaning up" in log_of(env, 1)
