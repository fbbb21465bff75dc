"""Seed 003's manual checklist, one test per line, in its order (the lines are quoted in each
docstring). The `task_cancelled` notifications of the first two lines belong to notifications
(SPEC F3), a later issue: everything else those lines ask is asserted here."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
from typing import Any

import httpx

from tests.background import SLOW_STARTED, Background, slot_states, spawn, wait_log, wait_task
from tests.conftest import Env
from tests.fixtures.runtask_services import body, running_service
from tests.runtasks.conftest import PLAN_JSON, CallbackApi, callback_api  # noqa: F401 (the fixture)

SLOT0 = ("local", "local", "slot-0")


def _cleaned(env: Env, workspace: str) -> None:
    assert env.ok("workspace", "show", workspace, "--json").json()["lock"] is None
    assert slot_states(env) == [("idle", None)] * 3
    assert not env.work_root.joinpath(*SLOT0).exists()


def _stages(view: dict[str, Any]) -> list[str]:
    return [h["to"] for h in view["history"] if h["kind"] == "stage"]


def _attach(env: Env, url: str, name: str, stage: str, enforcement: str = "mandatory",
            timeout: str | None = None) -> None:
    env.ok("runtask", "create", name, "--url", url, *(["--timeout", timeout] if timeout else []))
    env.ok("runtask", "attach", name, "net", "--stage", stage, "--enforcement", enforcement)


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


def test_01_plan_cancel_unlocks_and_cleans_the_work_directory(env: Env, processes: list[Background]) -> None:
    """"Plan cancelled -> workspace unlocked, work directory cleaned (, task_cancelled notification: F3)"."""
    env.workspace("net")
    with running_service("never") as svc:
        _attach(env, svc.url, "opa", "post_plan")
        plan = spawn(env, processes, "plan", "net")
        plan.wait_line("request delivered; waiting for its result")
        assert env.work_root.joinpath(*SLOT0).is_dir()
        env.ok("cancel", "1")
        code, _, _ = plan.finish()
    assert code == 3 and env.task(1)["status"] == "cancelled"
    _cleaned(env, "net")


def test_02_apply_cancel_unlocks_keeps_partial_state_and_cleans(env: Env, processes: list[Background]) -> None:
    """"Apply cancelled -> workspace unlocked, partial state saved, work directory cleaned
    (, task_cancelled notification: F3)"."""
    env.workspace("net", "slow_apply")
    env.ok("workspace", "var", "set", "net", "sleep", "30")
    env.ok("plan", "net", "-q", code=2)
    apply = spawn(env, processes, "confirm-apply", "1")
    wait_log(env, 1, SLOW_STARTED)
    apply.signal(signal.SIGINT)
    code, _, _ = apply.finish()
    assert code == 3 and env.task(1)["status"] == "cancelled"
    assert [v["partial"] for v in env.ok("state", "versions", "net", "--json").json()] == [True]
    _cleaned(env, "net")


def test_03_apply_error_leaves_the_critical_section(env: Env) -> None:
    """"Apply error path -> the critical section is left properly": the task ends at `applying`,
    failed, with nothing held, and the next plan of the workspace runs."""
    env.workspace("net", "failing_apply")
    env.ok("plan", "net", "-q", code=2)
    r = env.run("confirm-apply", "1", "-q")
    assert r.code == 1
    task = env.task(1)
    assert task["status"] == "failed" and task["stage"] == "applying"
    _cleaned(env, "net")
    assert "iacctl: task failed: terraform apply failed" in env.ok("tasks", "logs", "1").out
    env.ok("plan", "net", "-q", code=2)


def test_04_the_request_payload_carries_a_valid_jwt_access_token(env: Env) -> None:
    """"RunTask webhook payload contains a valid access_token (non-empty JWT)"."""
    from iacctl.runtasks import tokens

    env.workspace("net")
    with running_service("pass") as svc:
        _attach(env, svc.url, "opa", "post_plan")
        env.ok("plan", "net", "-q", code=2)
        [req] = svc.task_requests()
    token = req.payload["access_token"]
    app = env.app()
    claims = tokens.check(app.store.cipher, token, req.payload["task_result_id"])
    assert (claims.result_id, claims.task_id, claims.stage) == (1, 1, "post_plan")


def test_05_callback_without_a_token_is_401(callback_api: CallbackApi) -> None:  # noqa: F811
    """"RunTask callback without token -> 401"."""
    rid, _ = callback_api.result()
    assert httpx.patch(callback_api.callback_url(rid), json=body("passed")).status_code == 401


def test_06_callback_with_a_valid_token_is_200(callback_api: CallbackApi) -> None:  # noqa: F811
    """"RunTask callback with a valid token -> 200"."""
    rid, token = callback_api.result()
    r = httpx.patch(callback_api.callback_url(rid), json=body("passed"), headers=_auth(token))
    assert r.status_code == 200 and callback_api.row(rid).status == "passed"


def test_07_callback_with_a_wrong_token_is_401(callback_api: CallbackApi) -> None:  # noqa: F811
    """"RunTask callback with a wrong token -> 401"."""
    rid, token = callback_api.result()
    wrong = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    r = httpx.patch(callback_api.callback_url(rid), json=body("passed"), headers=_auth(wrong))
    assert r.status_code == 401 and callback_api.row(rid).status == "pending"


def test_08_callback_with_another_results_token_is_403(callback_api: CallbackApi) -> None:  # noqa: F811
    """"RunTask callback whose token's result_id does not match -> 403"."""
    _, token1 = callback_api.result()
    rid2, _ = callback_api.result()
    r = httpx.patch(callback_api.callback_url(rid2), json=body("passed"), headers=_auth(token1))
    assert r.status_code == 403 and callback_api.row(rid2).status == "pending"


def test_09_plan_json_with_a_valid_token(callback_api: CallbackApi) -> None:  # noqa: F811
    """"GET plan-json with a valid Bearer token -> 200 + plan_json"."""
    rid, token = callback_api.result()
    r = httpx.get(f"{callback_api.url}/api/v2/task-results/{rid}/plan-json", headers=_auth(token))
    assert r.status_code == 200 and r.json() == PLAN_JSON


def test_10_resource_changes_with_a_valid_token(callback_api: CallbackApi) -> None:  # noqa: F811
    """"GET resource-changes with a valid Bearer token -> 200 + resource_changes"."""
    rid, token = callback_api.result()
    r = httpx.get(f"{callback_api.url}/api/v2/task-results/{rid}/resource-changes", headers=_auth(token))
    assert r.status_code == 200 and r.json()["resource_changes"] == PLAN_JSON["resource_changes"]


def test_11_plan_json_without_a_token_is_401(callback_api: CallbackApi) -> None:  # noqa: F811
    """"GET plan-json without token -> 401"."""
    rid, _ = callback_api.result()
    assert httpx.get(f"{callback_api.url}/api/v2/task-results/{rid}/plan-json").status_code == 401


def test_12_the_token_is_cleared_after_the_callback(env: Env) -> None:
    """"After the callback the token is cleared (AccessTokenUsed=true)": in the store the
    encrypted token is gone and token_used is set."""
    env.workspace("net")
    with running_service("pass") as svc:
        _attach(env, svc.url, "opa", "post_plan")
        env.ok("plan", "net", "-q", code=2)
    con = sqlite3.connect(env.db_path)
    row = con.execute("SELECT status, token_used, access_token_secret FROM task_results").fetchone()
    con.close()
    assert row == ("passed", 1, None)


def test_13_all_webhooks_failing_with_a_mandatory_one_blocks(env: Env) -> None:
    """"All webhooks fail + mandatory -> plan/apply blocked" (seed 002 C3)."""
    env.workspace("net")
    with running_service("pass") as svc:
        _attach(env, svc.url, "advisory-check", "post_plan", "advisory")
        _attach(env, svc.url, "mandatory-check", "post_plan", "mandatory")
    # Both services are gone now (the block above stopped the server).
    r = env.run("plan", "net", "-q")
    assert r.code == 1 and "mandatory run task failed at post_plan: mandatory-check: webhook_error" in r.err
    statuses = {x["run_task"]: x["status"] for x in env.ok("runtask", "results", "1", "--json").json()}
    assert statuses == {"advisory-check": "webhook_error", "mandatory-check": "webhook_error"}
    assert env.task(1)["status"] == "failed" and env.task(1)["plan_hash"] is not None
    _cleaned(env, "net")


def test_14_pre_plan_runs_after_init_and_before_planning(env: Env) -> None:
    """"pre_plan RunTask -> runs after init, before planning"."""
    env.workspace("net")
    with running_service("pass") as svc:
        _attach(env, svc.url, "opa", "pre_plan")
        env.ok("plan", "net", "-q", code=2)
        [req] = svc.task_requests()
    assert _stages(env.task(1))[:4] == ["fetching", "init", "pre_plan", "planning"]
    assert req.payload["stage"] == "pre_plan" and req.payload["plan_json_api_url"] is None


def test_15_pre_apply_runs_after_restoring_plan_and_before_applying(env: Env) -> None:
    """"pre_apply RunTask -> runs after restoring_plan, before applying"."""
    env.workspace("net")
    with running_service("pass") as svc:
        _attach(env, svc.url, "opa", "pre_apply")
        env.ok("plan", "net", "-q", code=2)
        env.ok("confirm-apply", "1", "-q", "--rebuild")
        [req] = svc.task_requests()
    assert _stages(env.task(1))[-5:] == ["init", "restoring_plan", "pre_apply", "applying", "saving_state"]
    assert req.payload["stage"] == "pre_apply" and req.payload["plan_json_api_url"]


def test_16_post_apply_runs_after_the_apply_and_never_rolls_it_back(env: Env) -> None:
    """"post_apply RunTask -> runs after a successful apply; a mandatory failure does not roll
    the apply back"."""
    env.workspace("net")
    with running_service("fail") as svc:
        _attach(env, svc.url, "opa", "post_apply")
        env.ok("plan", "net", "-q", code=2)
        r = env.ok("confirm-apply", "1", "-q")
    task = env.task(1)
    assert task["status"] == "applied" and _stages(task)[-2:] == ["saving_state", "post_apply"]
    assert "warning at post_apply" in r.out
    assert len(env.ok("state", "versions", "net", "--json").json()) == 1


def test_17_a_task_that_cannot_read_its_workspace_fails(env: Env) -> None:
    """"Plan: GetWorkspace fails -> task failed (not stuck running)": the task's workspace
    settings cannot be read when it starts (a sensitive variable sealed with another key), before
    any log exists; the task ends failed with the reason, nothing held."""
    env.workspace("net")
    env.ok("plan", "net", "-q", code=2)
    env.ok("plan", "net", "--no-wait")  # task 2 waits for task 1's turn
    env.ok("workspace", "var", "set", "net", "password", "hunter22", "--sensitive")
    # Sealed with another installation's key (a command with that key is refused at once since
    # issue 18 item 7, so the row is rewritten as a damaged or foreign store would hold it).
    from iacctl.crypto import Cipher

    other = Cipher(hashlib.sha256(b"another installation's key").digest()).encrypt_text("hunter22")
    with sqlite3.connect(env.db_path) as db:
        db.execute("UPDATE variables SET value_secret = ? WHERE key = 'password'", (other,))
    env.ok("cancel", "1")  # frees the turn: a detached runner starts task 2
    task = env.wait_for(2, lambda t: t["status"] not in ("pending", "running"))
    assert task["status"] == "failed" and "cannot start" in task["error"]
    assert slot_states(env) == [("idle", None)] * 3
    assert env.ok("workspace", "show", "net", "--json").json()["lock"] is None


def test_18_a_work_directory_that_cannot_be_prepared_fails_the_task(env: Env) -> None:
    """"Plan: PrepareWorkspace fails -> task failed"."""
    env.workspace("net")
    blocker = env.root / "not-a-dir"
    blocker.write_text("a file where the work root should be")
    r = env.run("plan", "net", extra_env={"IACCTL_WORK_ROOT": str(blocker)})
    assert r.code == 1 and "cannot make the work directory" in r.err
    task = env.task(1)
    assert task["status"] == "failed" and task["stage"] == "fetching"


def test_19_a_lock_that_cannot_be_taken_fails_the_task(env: Env, processes: list[Background]) -> None:
    """"Workspace lock fails -> task failed, never apply_pending" (H7): an operator locks the
    workspace while the plan waits for its (advisory) run task."""
    env.workspace("net")
    with running_service("gated") as svc:
        _attach(env, svc.url, "opa", "post_plan", "advisory")
        plan = spawn(env, processes, "plan", "net", "-q")
        plan.wait_line("request delivered; waiting for its result")
        env.ok("workspace", "lock", "net", "--reason", "maintenance")
        svc.open_gate()  # the result passes only once the operator holds the lock
        code, _, err = plan.finish()
    assert code == 1 and "the plan cannot wait for confirmation without the lock" in err
    task = wait_task(env, 1, lambda t: True)
    assert task["status"] == "failed" and "apply_pending" not in [
        h["to"] for h in task["history"] if h["kind"] == "status"]
    assert json.loads(env.ok("workspace", "show", "net", "--json").out)["lock"]["task"] is None
