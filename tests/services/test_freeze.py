"""Freeze windows (SPEC S4, issue 3 item 7): no task starts in a frozen pool; entering the
window deletes all its pods, reserved ones too, and resets warm-ups; after it, pods are
recreated and the lost plan contexts are handled (re-plan, S5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.background import Background, spawn
from tests.conftest import Env
from tests.kube import POOL, api_pods, kube_pool


def iso(delta_s: float) -> str:
    return (datetime.now(tz=UTC) + timedelta(seconds=delta_s)).strftime("%Y-%m-%dT%H:%M:%S")


def test_a_freeze_window_deletes_pods_and_holds_tasks_until_it_ends(
    env: Env, fake_kube: Any, processes: list[Background]
) -> None:
    kube_pool(env, fake_kube)
    env.workspace("net", "simple", "--pool", POOL)
    env.ok("plan", "net", code=2)
    old_pod = env.task(1)["pod"]

    env.ok("pool", "freeze", POOL, "--from", iso(-60), "--until", iso(3600), "--reason", "year end")
    shown = env.ok("pool", "show", POOL, "--json").json()
    assert shown["frozen"] is True and shown["freeze_windows"][0]["reason"] == "year end"
    assert "freeze window 1:" in env.ok("pool", "show", POOL).out

    # Confirming in a frozen pool is refused, nothing changes.
    r = env.run("confirm-apply", "1")
    assert r.code == 5 and f"pool {POOL} is frozen until" in r.err
    assert env.task(1)["status"] == "apply_pending"

    actions = env.ok("pods", "recover", "--json").json()
    kinds = [(a["action"], a["task"]) for a in actions]
    assert ("pod_deleted", None) in kinds and ("pool_frozen", None) in kinds and ("replanning", 1) in kinds
    assert api_pods(fake_kube) == []  # the reserved pod too
    assert env.task(1)["status"] == "pending"
    # Nothing starts while frozen: the task waits and says why.
    waiting = spawn(env, processes, "plan", "net", "--plan-only")
    line = waiting.wait_line("waits: pool k8s-prod is frozen until")
    assert "waits" in line
    waiting.kill()
    waiting.wait()
    # The killed command's task is cancelled, never run behind its back; otherwise idempotent.
    assert [(a["action"], a["task"]) for a in env.ok("pods", "recover", "--json").json()] == [("cancelled", 2)]
    assert env.ok("pods", "recover", "--json").json() == []  # still frozen
    assert api_pods(fake_kube) == [] and env.task(1)["status"] == "pending"

    # After the window: pods are recreated and the task is planned again.
    env.ok("pool", "unfreeze", POOL)
    actions = env.ok("pods", "recover", "--json").json()
    kinds = [a["action"] for a in actions]
    assert "pool_unfrozen" in kinds and "pod_created" in kinds and "started" in kinds
    task = env.wait_for(1, lambda t: t["status"] == "apply_pending", timeout=120)
    assert task["pod"] != old_pod and task["pod"] in api_pods(fake_kube)
    env.ok("confirm-apply", "1")
    assert env.task(1)["status"] == "applied"


def test_freeze_window_input_is_checked(env: Env, fake_kube: Any) -> None:
    kube_pool(env, fake_kube)
    for args, text in [
        (("--from", "tomorrow", "--until", iso(60)), "invalid --from"),
        (("--from", iso(120), "--until", iso(60)), "must end after it starts"),
        (("--from", iso(-120), "--until", iso(-60)), "ends in the past"),
    ]:
        r = env.run("pool", "freeze", POOL, *args)
        assert r.code == 64 and text in r.err and r.err.count("\n") == 1
    r = env.run("pool", "freeze", "local", "--from", iso(0), "--until", iso(60))
    assert r.code == 64 and "kubernetes pools" in r.err
    assert env.ok("pool", "show", POOL, "--json").json()["freeze_windows"] == []
    assert env.run("pool", "unfreeze", POOL).code == 5
