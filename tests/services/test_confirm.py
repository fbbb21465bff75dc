"""confirm-apply (SPEC L6, E6, E8, S5): exactly the saved plan, the same-slot fast path and the
rebuild path, refusals that change nothing, re-planning when the plan context is lost, and
applied_state_error with the command that stores the state again."""

from __future__ import annotations

import shutil
import sqlite3
import sys
import time

from tests.conftest import Env


def _slot_dir(env: Env, slot: int = 0):  # type: ignore[no-untyped-def]
    return env.work_root / "local" / "local" / f"slot-{slot}"


def _stages(task: dict) -> list[str]:  # type: ignore[type-arg]
    return [h["to"] for h in task["history"] if h["kind"] == "stage"]


def test_rebuild_path_restores_and_verifies_the_plan(any_env: Env) -> None:
    env = any_env
    env.workspace("net")
    env.ok("plan", "net", code=2)
    plan_hash = env.task(1)["plan_hash"]
    r = env.ok("confirm-apply", "1", "--rebuild")
    assert "rebuilding the work directory from the store: --rebuild was given" in r.out
    assert f"plan restored and verified (sha256 {plan_hash[:16]})" in r.out
    task = env.task(1)
    assert task["status"] == "applied" and task["apply_path"] == "rebuilt"
    assert _stages(task) == ["fetching", "init", "planning", "saving_plan",
                             "init", "restoring_plan", "applying", "saving_state"]


def test_fast_path_skips_init_and_restore(env: Env) -> None:
    env.workspace("net")
    env.ok("plan", "net", code=2)
    r = env.ok("confirm-apply", "1")
    assert "same work directory as the plan (local/local/slot-0" in r.out
    stages = _stages(env.task(1))
    assert stages == ["fetching", "init", "planning", "saving_plan", "applying", "saving_state"]
    assert "iacctl: same work directory as the plan" in env.ok("tasks", "logs", "1").out


def test_a_changed_plan_file_in_the_slot_means_rebuild(env: Env) -> None:
    env.workspace("net")
    env.ok("plan", "net", code=2)
    (_slot_dir(env) / "tfplan").write_bytes(b"not the plan")
    r = env.ok("confirm-apply", "1")
    assert "the plan file in local/local/slot-0 does not match plan_hash" in r.out
    assert env.task(1)["apply_path"] == "rebuilt"
    assert env.ok("plan", "net", code=0)


def test_lost_work_directory_replans_and_exits_4(any_env: Env) -> None:
    """S5: confirm-apply never applies where the plan context is missing."""
    env = any_env
    env.workspace("net")
    env.ok("plan", "net", code=2)
    shutil.rmtree(_slot_dir(env))
    r = env.run("confirm-apply", "1")
    assert r.code == 4, r.err
    assert r.err.strip().splitlines() == [
        "iacctl: task 1 was re-planned because the work directory of slot local/local/slot-0 is gone; "
        "review it and run: iacctl confirm-apply 1"
    ]
    task = env.task(1)
    assert task["status"] == "apply_pending" and task["replans"] == 1 and task["confirmed_at"] is None
    statuses = [(h["from"], h["to"]) for h in task["history"] if h["kind"] == "status"]
    assert ("apply_pending", "pending") in statuses
    assert env.ok("state", "versions", "net", "--json").json() == []  # nothing was applied
    assert env.ok("workspace", "show", "net", "--json").json()["lock"]["task"] == 1
    env.ok("confirm-apply", "1")
    assert env.task(1)["status"] == "applied"


def test_recover_replans_a_lost_context_without_confirmation(env: Env) -> None:
    env.workspace("net")
    env.ok("plan", "net", code=2)
    shutil.rmtree(_slot_dir(env))
    actions = env.ok("pods", "recover", "--json").json()
    assert {"action": "replanning", "task": 1}.items() <= actions[0].items()
    task = env.wait_for(1, lambda t: t["status"] == "apply_pending" and t["replans"] == 1)
    assert task["confirmed_at"] is None
    assert _slot_dir(env, task["slot"]).is_dir()
    env.ok("confirm-apply", "1")


def _refused(env: Env, task_id: int, expected: str) -> None:
    before = env.task(task_id)
    pods_before = env.ok("pods", "list", "--json").json()
    r = env.run("confirm-apply", str(task_id))
    assert r.code == 5, (r.code, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert env.task(task_id) == before  # nothing changed
    assert env.ok("pods", "list", "--json").json() == pods_before


def test_refusals_change_nothing(any_env: Env) -> None:
    env = any_env
    env.workspace("net")
    env.ok("plan", "net", code=2)
    env.ok("cancel", "1")
    _refused(env, 1, "task 1 is cancelled, not apply_pending")

    env.ok("plan", "net", code=2)
    env.ok("confirm-apply", "2")
    _refused(env, 2, "task 2 was already confirmed (it is applied)")
    env.ok("plan", "net", "--plan-only", code=0)
    _refused(env, 3, "task 3 is planned_and_finished, not apply_pending")


def test_an_expired_plan_is_discarded_and_the_advice_works(env: Env) -> None:
    """L6, seed 002 M7: confirm-apply of an expired plan exits 5, and the plan is discarded
    (task cancelled, lock, slot and work directory freed), so planning again runs at once."""
    env.workspace("net", "simple", "--plan-lifetime", "1s")
    env.ok("plan", "net", code=2)
    work_dir = _slot_dir(env)
    assert work_dir.is_dir()
    time.sleep(1.2)
    r = env.run("confirm-apply", "1")
    assert r.code == 5, r.err
    assert r.err.strip().splitlines() == [
        "iacctl: the plan of task 1 expired (older than 1s) and was discarded; plan again with: iacctl plan net"
    ]
    task = env.task(1)
    assert task["status"] == "cancelled" and task["confirmed_at"] is None
    assert task["history"][-1]["reason"].startswith("plan expired after 1s without confirmation")
    assert env.ok("workspace", "show", "net", "--json").json()["lock"] is None
    assert not work_dir.exists()
    assert env.ok("state", "versions", "net", "--json").json() == []  # nothing was applied
    r = env.run("plan", "net", "--wait-timeout", "30s")
    assert r.code == 2 and "waits" not in r.err, r.err


def test_a_stale_plan_is_refused(env: Env) -> None:
    """The workspace's state changed after the plan was made (here written into the store the
    way `state save-applied` of another task would): applying would be wrong."""
    env.workspace("net")
    env.ok("plan", "net", code=2)
    app = env.app()
    from iacctl.executor.termination import add_state_version

    with app.store.write() as session:
        add_state_version(session, app.store, 1, 1, b'{"version": 4, "serial": 9, "lineage": "x"}',
                          partial=False)
    _refused(env, 1, "the plan of task 1 is stale")


def test_state_that_cannot_be_stored_is_applied_state_error(env: Env) -> None:
    env.workspace("app", "sabotage_state")
    env.ok("workspace", "var", "set", "app", "python", sys.executable)
    env.ok("workspace", "var", "set", "app", "store", str(env.db_path))
    env.ok("plan", "app", code=2)
    r = env.run("confirm-apply", "1")
    assert r.code == 1
    assert "Apply complete!" in r.out
    task = env.task(1)
    assert task["status"] == "applied_state_error"
    assert "iacctl state save-applied 1" in task["error"] and "disk full" in task["error"]
    kept = env.work_root / "kept" / "task-1.tfstate"
    assert kept.is_file()
    lock = env.ok("workspace", "show", "app", "--json").json()["lock"]
    assert lock["task"] == 1 and "state is not stored" in lock["reason"]
    assert all(s["state"] == "idle" for s in env.ok("pods", "list", "--json").json()[0]["slots"])
    assert env.ok("state", "versions", "app", "--json").json() == []

    with sqlite3.connect(env.db_path) as db:
        db.execute("DROP TRIGGER no_state")
    saved = env.ok("state", "save-applied", "1", "--json").json()
    assert saved["task"] == 1
    assert env.task(1)["status"] == "applied"
    assert env.ok("workspace", "show", "app", "--json").json()["lock"] is None
    assert not kept.exists()
    env.ok("plan", "app", code=0)  # the stored state matches what was applied
