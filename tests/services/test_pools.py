"""Kubernetes pools (issue 3 items 3 and 5): slots and scaling (S2, S3), lost pods (S5).

Against the fake API server, with real Terraform run in the pods' directories."""

from __future__ import annotations

import time
from typing import Any

from tests.background import Background, spawn, statuses
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
    kube_pool(env, fake_kube, "--min-pods", "1", "--scale-down-delay", "2s")
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
    assert changes == []  # the idle pod is only now seen idle: the delay starts
    time.sleep(2.2)
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
