"""The Kubernetes runtime against the fake API server (issue 3 items 1, 2, 4): pods made from
the pool's spec, Terraform run in the slot's pod through exec, files over tar, the E6 paths."""

from __future__ import annotations

from typing import Any

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
    assert f"E6 fast path: same slot {POOL}/{name}/slot-0" in log
    assert "Apply complete! Resources: 2 added" in log
    versions = env.ok("state", "versions", "net", "--json").json()
    assert len(versions) == 1
    assert not slot_dir.exists()  # the work directory is removed after the apply
    assert api_pods(fake_kube) == [name]
