"""Kubernetes pools (issue 3 items 3 and 5): slots and scaling (S2, S3), lost pods (S5).

Against the fake API server, with real Terraform run in the pods' directories."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.background import Background, spawn, statuses, wait_task
from tests.conftest import Env
from tests.kube import NS, POOL, api_pods, kube_pool, log_of, pods_of


def reconcile(env: Env) -> list[dict[str, Any]]:
    return env.ok("pods", "reconcile", "--pool", POOL, "--json").json()  # type: ignore[no-any-return]


def test_a_lost_reserved_pod_makes_confirm_apply_replan_on_a_new_pod(env: Env, fake_kube: Any) -> None:
    kube_pool(env, fake_kube)
    env.workspace("net", "simple", "--pool", POOL)
    env.ok("plan", "net", code=2)
    first = env.task(1)
    fake_kube.delete_pod(NS, first["pod"])

    r = env.run("confirm-apply", "1")
    assert r.code == 4, r.out + r.err
    assert f"pod {first['pod']} is gone" in r.err and "iacctl confirm-apply 1" in r.err
    task = env.task(1)
    # S5: re-planned on a new pod, apply_pending again, waiting for a NEW confirmation.
    assert task["status"] == "apply_pending" and task["confirmed_at"] is None
    assert task["pod"] != first["pod"] and task["replans"] == 1
    assert task["pod"] in api_pods(fake_kube) and first["pod"] not in api_pods(fake_kube)
    assert statuses(task)[-3:] == ["pending", "running", "apply_pending"]
    assert env.ok("state", "versions", "net", "--json").json() == []  # nothing was applied
    assert env.ok("workspace", "show", "net", "--json").json()["lock"]["task"] == 1
    # The lost pod's record is gone once nothing holds its slots.
    reconcile(env)
    assert [p["name"] for p in pods_of(env)] == [task["pod"]]

    env.ok("confirm-apply", "1")
    assert env.task(1)["status"] == "applied"


def test_the_sweep_replans_a_task_whose_reserved_pod_was_evicted(env: Env, fake_kube: Any) -> None:
    kube_pool(env, fake_kube)
    env.workspace("net", "simple", "--pool", POOL)
    env.ok("plan", "net", code=2)
    old = env.task(1)["pod"]
    fake_kube.set_pod_phase(NS, old, "Failed", reason="Evicted")

    actions = env.ok("pods", "recover", "--json").json()
    kinds = [(a["action"], a["task"]) for a in actions]
    assert ("pod_lost", None) in kinds and ("replanning", 1) in kinds and ("started", 1) in kinds
    task = env.wait_for(1, lambda t: t["status"] == "apply_pending" and t["replans"] == 1, timeout=120)
    assert task["pod"] != old and task["confirmed_at"] is None
    assert old not in api_pods(fake_kube)  # the failed pod was deleted
    assert "plan context lost: pod" in " ".join(h["reason"] or "" for h in task["history"])
    env.ok("confirm-apply", "1")
    assert env.task(1)["status"] == "applied"


def test_two_concurrent_plans_never_share_a_slot(any_env: Env, fake_kube: Any, processes: list[Background]) -> None:
    """S2 on SQLite and PostgreSQL: plans racing for slots (and for the pods they scale up)."""
    env = any_env
    kube_pool(env, fake_kube, "--slots-per-pod", "2")
    for name in ("a", "b", "c"):
        env.workspace(name, "simple", "--pool", POOL)
    plans = [spawn(env, processes, "plan", name) for name in ("a", "b", "c")]
    assert [p.wait() for p in plans] == [2, 2, 2], [p.output for p in plans]
    places = {(env.task(i)["pod"], env.task(i)["slot"]) for i in (1, 2, 3)}
    assert len(places) == 3
    reserved = [(p["name"], s["index"], s["task"]) for p in pods_of(env) for s in p["slots"]
                if s["state"] == "reserved"]
    assert sorted(t for _, _, t in reserved) == [1, 2, 3]
    # ceil(3 reserved / 2 per pod) = 2 pods.
    reconcile(env)
    assert len(api_pods(fake_kube)) == len(pods_of(env)) == 2


def test_reconcile_scales_down_idle_pods_after_the_delay_only(env: Env, fake_kube: Any) -> None:
    kube_pool(env, fake_kube, "--min-pods", "1", "--scale-down-delay", "8s")
    assert [c["change"] for c in reconcile(env)] == ["created"]  # min pods
    assert reconcile(env) == []  # idempotent
    env.workspace("a", "simple", "--pool", POOL)
    env.workspace("b", "simple", "--pool", POOL)
    env.ok("plan", "a", code=2)
    env.ok("plan", "b", code=2)
    env.ok("pool", "set", POOL, "--slots-per-pod", "3")
    assert reconcile(env) == []
    assert len(api_pods(fake_kube)) == 1
    # A pod for a speculative plan: more pods than needed once it ends.
    env.ok("pool", "set", POOL, "--slots-per-pod", "2")
    env.workspace("c", "simple", "--pool", POOL)
    env.ok("plan", "c", "--plan-only", code=2)
    assert len(api_pods(fake_kube)) == 2
    busy_pod = env.task(1)["pod"]
    changes = reconcile(env)
    assert changes == []  # idle since its plan ended, less than the delay ago
    time.sleep(8.2)
    changes = reconcile(env)
    assert [c["change"] for c in changes] == ["scaled_down"]
    assert api_pods(fake_kube) == [busy_pod]  # the pod with reserved slots stays
    assert [p["name"] for p in pods_of(env)] == [busy_pod]
    assert reconcile(env) == []
    assert "plan saved" in log_of(env, 3)


def test_a_queued_plan_gets_a_pod_and_runs_in_the_background(env: Env, fake_kube: Any) -> None:
    kube_pool(env, fake_kube)
    env.workspace("net", "simple", "--pool", POOL)
    r = env.ok("plan", "net", "--no-wait")
    assert "pool k8s-prod: pod iacctl-k8s-prod-" in r.out and "created: 3 slots" in r.out
    task = env.wait_for(1, lambda t: t["status"] == "apply_pending", timeout=120)
    assert task["pod"] in api_pods(fake_kube)


def test_a_full_pool_at_its_maximum_names_the_tasks_holding_its_slots(
    env: Env, fake_kube: Any, processes: list[Background]
) -> None:
    """S3 (issue 8 item 2): reserved slots count on Kubernetes pools; when the pool cannot grow,
    the wait names the tasks holding the slots and what frees them, and `pool set --max-pods`
    lets the waiting plan run."""
    kube_pool(env, fake_kube, name="tight")
    env.ok("pool", "set", "tight", "--max-pods", "1")
    env.ok("pool", "set", "tight", "--slots-per-pod", "1")
    env.workspace("a", "simple", "--pool", "tight")
    env.workspace("b", "simple", "--pool", "tight")
    env.ok("plan", "a", "--quiet", code=2)

    waiter = spawn(env, processes, "plan", "b", "--quiet")
    line = waiter.wait_line("task 2 waits: pool tight is at its maximum of 1 pod(s) and every slot is taken")
    assert "(waiting for confirmation: task 1)" in line
    assert "iacctl confirm-apply 1 / iacctl cancel 1" in line and "iacctl pool set tight --max-pods N" in line
    assert env.task(2)["status"] == "pending"

    env.ok("pool", "set", "tight", "--max-pods", "2")
    assert waiter.wait() == 2, waiter.output
    assert env.task(2)["pod"] != env.task(1)["pod"]
    assert env.run("pool", "set", "local", "--max-pods", "3").code == 64


# ---------------------------------------------------------------------------------------------
# issue 10: pools that hold up on a real cluster


def test_a_pod_deleted_behind_iacctls_back_is_never_given_the_next_plan(env: Env, fake_kube: Any) -> None:
    """Item 2: an idle pod deleted by someone else stays Terminating (its processes running) for
    its grace period. The next plan finds it gone before Terraform starts, marks it lost and is
    placed on a new pod, instead of failing at fetching (exit 1) until a sweep runs."""
    kube_pool(env, fake_kube)
    env.workspace("net", "simple", "--pool", POOL)
    env.ok("plan", "net", "--plan-only", code=2)
    (old,) = api_pods(fake_kube)
    fake_kube.delete_grace = 30.0
    fake_kube.delete_pod(NS, old)  # kubectl delete pod: Terminating for 30 s
    r = env.run("plan", "net")
    assert r.code == 2, r.out + r.err
    task = env.task(2)
    assert task["status"] == "apply_pending" and task["pod"] != old
    assert f"pod {old} is gone" in " ".join(h["reason"] or "" for h in task["history"])
    assert statuses(task) == ["pending", "running", "pending", "running", "apply_pending"]
    assert old not in [p["name"] for p in pods_of(env) if p["status"] == "ready"]


def test_after_a_task_fails_with_its_pod_gone_the_next_plan_lands_elsewhere(
    env: Env, fake_kube: Any, processes: list[Background]
) -> None:
    """Item 2: a pod found gone by a running task is marked lost at once; the next plan never
    claims one of its idle slots, no sweep needed."""
    kube_pool(env, fake_kube)
    env.workspace("big", "many_resources", "--pool", POOL)
    env.workspace("net", "simple", "--pool", POOL)
    plan = spawn(env, processes, "plan", "big")
    pod = wait_task(env, 1, lambda t: t["stage"] == "planning")["pod"]
    fake_kube.delete_pod(NS, pod)
    code, out, err = plan.finish()
    assert code == 1 and f"pod {pod} is gone" in err, out + err
    r = env.run("plan", "net")
    assert r.code == 2, r.out + r.err
    assert env.task(2)["pod"] != pod


def test_scale_down_counts_idle_time_from_the_end_of_the_last_task(env: Env, fake_kube: Any) -> None:
    """Item 3: a pod looked at while idle, then used, is idle from the end of that use: the
    scale-down delay starts again when its last slot becomes idle."""
    kube_pool(env, fake_kube, "--scale-down-delay", "6s")
    env.workspace("net", "simple", "--pool", POOL)
    env.ok("plan", "net", "--plan-only", code=2)
    assert reconcile(env) == []  # idle now: the delay runs
    time.sleep(5)
    env.ok("plan", "net", "--plan-only", code=2)  # uses the pod again
    ended = time.monotonic()
    assert reconcile(env) == []  # more than 6 s after the first look, but not after the last use
    (pod,) = pods_of(env)
    assert pod["idle_since"] is not None
    time.sleep(max(0.0, 6.2 - (time.monotonic() - ended)))
    assert [c["change"] for c in reconcile(env)] == ["scaled_down"]


def test_a_burst_queued_without_waiting_scales_the_pool_up(env: Env, fake_kube: Any) -> None:
    """Item 4: 7 plans queued with --no-wait on a pool of 3 slots per pod: whatever queues or
    frees work scales the pool to every waiting task, so all 7 get a slot (ceil(7/3) = 3 pods),
    not 3 at a time on the one pod the first plan made."""
    kube_pool(env, fake_kube, "--max-pods", "4")
    names = [f"ws{i}" for i in range(7)]
    for name in names:
        env.workspace(name, "simple", "--pool", POOL)
    for name in names:
        env.ok("plan", name, "--no-wait")
    for i in range(1, 8):
        env.wait_for(i, lambda t: t["status"] == "apply_pending", timeout=180)
    assert len(api_pods(fake_kube)) == len(pods_of(env)) == 3
    reserved = [s["task"] for p in pods_of(env) for s in p["slots"] if s["state"] == "reserved"]
    assert sorted(reserved) == list(range(1, 8))


REFUSALS = {
    "namespace": ("namespace iac does not exist", "kubectl create namespace iac"),
    "rbac": ("forbidden by the cluster's RBAC", "kubectl apply -n iac -f deploy/kubernetes/rbac.yaml"),
    "quota": ("the quota of namespace iac refuses it", "--max-pods"),
    "admission": ("the cluster rejects pool k8s-prod's pod", "iacctl pool show k8s-prod"),
    "image": ("image registry.example/iacctl-runner:1 cannot be pulled", "iacctl pool set k8s-prod --image"),
}


def _refuse(fake_kube: Any, kind: str) -> None:
    if kind == "namespace":
        fake_kube.namespaces = {"default"}
    elif kind == "rbac":
        fake_kube.forbid("create")
    elif kind == "quota":
        fake_kube.refuse_creates(403, "Forbidden", 'pods "{name}" is forbidden: exceeded quota: compute, requested: '
                                                   "limits.cpu=1, used: limits.cpu=4, limited: limits.cpu=4")
    elif kind == "admission":
        fake_kube.refuse_creates(422, "Invalid", 'Pod "{name}" is invalid: spec.containers[0].securityContext.'
                                                 "runAsNonRoot: Invalid value: false: must be true")
    else:
        fake_kube.image_cannot_be_pulled("registry.example/iacctl-runner:1", "401 Unauthorized")


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_a_cluster_that_refuses_the_pools_pods_ends_the_wait(env: Env, fake_kube: Any, kind: str) -> None:
    """Item 6: a missing namespace, RBAC 403, a quota, an admission 422 and an image that
    cannot be pulled each end the waiting plan with one line naming the cause and the fix
    (exit 1); the task is failed, not left pending; `pods reconcile` reports it (exit 1)."""
    kube_pool(env, fake_kube, "--min-pods", "1")
    env.workspace("net", "simple", "--pool", POOL)
    _refuse(fake_kube, kind)
    cause, fix = REFUSALS[kind]
    r = env.run("plan", "net", timeout=120)
    assert r.code == 1, r.out + r.err
    assert r.err.count("\n") == 1 and r.err.startswith("iacctl: task 1 failed")
    assert cause in r.err and fix in r.err
    task = env.task(1)
    assert task["status"] == "failed" and cause in task["error"]
    assert api_pods(fake_kube) == [] and pods_of(env) == []
    rec = env.run("pods", "reconcile", "--pool", POOL)
    assert rec.code == 1 and "refused: " in rec.out and cause in rec.out
    assert rec.err.count("\n") == 1 and fix in rec.err
    # --no-wait: the queued task fails too; nothing waits for a pod that cannot come.
    env.ok("plan", "net", "--no-wait", code=1)
    assert env.task(2)["status"] == "failed"
