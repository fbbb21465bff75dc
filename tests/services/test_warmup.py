"""Warm-up (SPEC S6, issue 3 items 4 and 6) on a pool with `--on-lost-context warmup`: a lost
plan context is prepared on a new slot from the store (init, plan restored, hash verified)
before confirmation; at confirm time the apply rebuilds it on another pod (E6 rebuild path);
warm-ups expire and are retried up to the limit, then the task is re-planned."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import Env
from tests.kube import NS, POOL, api_pods, kube_pool, log_of


def recover(env: Env) -> list[dict[str, Any]]:
    return env.ok("pods", "recover", "--json").json()  # type: ignore[no-any-return]


def planned_then_pod_lost(env: Env, fake_kube: Any, *pool_args: str) -> dict[str, Any]:
    kube_pool(env, fake_kube, "--on-lost-context", "warmup", *pool_args)
    env.workspace("net", "simple", "--pool", POOL)
    env.ok("plan", "net", code=2)
    task = env.task(1)
    fake_kube.delete_pod(NS, task["pod"])
    return task


def test_the_sweep_warms_up_a_new_slot_and_the_apply_uses_it(env: Env, fake_kube: Any) -> None:
    before = planned_then_pod_lost(env, fake_kube)
    actions = recover(env)
    kinds = [(a["action"], a["task"]) for a in actions]
    assert ("pod_lost", None) in kinds and ("warmed_up", 1) in kinds and ("replanning", 1) not in kinds
    task = env.task(1)
    assert task["status"] == "apply_pending" and task["replans"] == 0
    assert task["plan_hash"] == before["plan_hash"]  # the same plan, not a new one
    assert task["warmup"]["status"] == "ready" and task["warmup"]["attempts"] == 1
    assert task["pod"] != before["pod"] and task["pod"] in api_pods(fake_kube)
    slot_dir = fake_kube.container_path(NS, task["pod"], f"/var/lib/iacctl/slots/{task['slot']}")
    assert (slot_dir / "tfplan").is_file() and (slot_dir / ".terraform").is_dir()
    log = log_of(env, 1)
    assert "warm-up: preparing slot" in log and "plan restored and verified" in log
    assert recover(env) == []  # ready: nothing more to do

    env.ok("confirm-apply", "1")
    done = env.task(1)
    assert done["status"] == "applied" and done["apply_path"] == "warmed"
    assert f"the warm-up slot {POOL}/{task['pod']}/slot-{task['slot']} is ready" in log_of(env, 1)


def test_confirm_apply_rebuilds_a_lost_context_on_another_pod(env: Env, fake_kube: Any) -> None:
    before = planned_then_pod_lost(env, fake_kube)
    r = env.ok("confirm-apply", "1")
    assert "the apply rebuilds it from the store on a new slot" in r.out
    task = env.task(1)
    assert task["status"] == "applied" and task["apply_path"] == "rebuilt" and task["replans"] == 0
    assert task["pod"] != before["pod"]
    log = log_of(env, 1)
    assert "rebuilding the work directory from the store: the apply runs in another slot than the plan" in log
    assert "plan restored and verified" in log
    assert len(env.ok("state", "versions", "net", "--json").json()) == 1


def test_warm_ups_expire_and_after_the_retry_limit_the_task_is_replanned(env: Env, fake_kube: Any) -> None:
    planned_then_pod_lost(env, fake_kube, "--warmup-lifetime", "1s", "--warmup-retries", "2")
    assert ("warmed_up", 1) in [(a["action"], a["task"]) for a in recover(env)]
    first = env.task(1)
    time.sleep(1.2)
    # Expired: prepared again on a fresh slot (attempt 2).
    assert ("warmed_up", 1) in [(a["action"], a["task"]) for a in recover(env)]
    second = env.task(1)
    assert second["warmup"]["attempts"] == 2 and (second["pod"], second["slot"]) != (first["pod"], first["slot"])
    time.sleep(1.2)
    # Retry limit reached: fall back to re-planning (S5), which waits for a new confirmation.
    actions = recover(env)
    replanning = [a for a in actions if a["action"] == "replanning"]
    assert replanning and "warm-up retry limit (2) reached" in replanning[0]["detail"]
    task = env.wait_for(1, lambda t: t["status"] == "apply_pending" and t["replans"] == 1, timeout=120)
    assert task["warmup"] is None and task["confirmed_at"] is None


def test_a_freeze_resets_warm_ups_and_they_are_made_again_after_it(env: Env, fake_kube: Any) -> None:
    planned_then_pod_lost(env, fake_kube)
    assert ("warmed_up", 1) in [(a["action"], a["task"]) for a in recover(env)]
    env.ok("pool", "freeze", POOL, "--from", "2020-01-01T00:00", "--until", "2099-01-01T00:00")
    actions = recover(env)
    frozen = [a for a in actions if a["action"] == "pool_frozen"]
    assert frozen and "1 warm-up(s) reset" in frozen[0]["detail"]
    assert api_pods(fake_kube) == []
    task = env.task(1)
    assert task["status"] == "apply_pending" and task["warmup"] is None  # waits, no re-plan
    assert recover(env) == []
    env.ok("pool", "unfreeze", POOL)
    kinds = [(a["action"], a["task"]) for a in recover(env)]
    assert ("pool_unfrozen", None) in kinds and ("warmed_up", 1) in kinds
    assert env.task(1)["warmup"]["status"] == "ready"
    env.ok("confirm-apply", "1")
    assert env.task(1)["apply_path"] == "warmed"
