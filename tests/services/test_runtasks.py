"""Run tasks end to end (SPEC R1-R8, seed 002 C3-C6, H3, M10, O4): real run-task services on
127.0.0.1 (tests/fixtures/runtask_services.py), the real `iacctl plan` and `confirm-apply`, the
results arriving through a server iacctl starts for the wait or through `iacctl runtask serve`
running in another process."""

from __future__ import annotations

import hashlib
import hmac
import signal
import socket
from typing import Any

import pytest

from tests.background import Background, slot_states, spawn, statuses, wait_task
from tests.conftest import Env
from tests.fixtures.runtask_services import RunTaskService, running_service

MANDATORY, ADVISORY = "mandatory", "advisory"


def _create(env: Env, svc: RunTaskService, name: str = "opa", *, timeout: str | None = None,
            key: bytes | None = None) -> None:
    args = ["runtask", "create", name, "--url", svc.url]
    if timeout:
        args += ["--timeout", timeout]
    if key is not None:
        (env.root / f"{name}.key").write_bytes(key + b"\n")
        args += ["--hmac-key-file", str(env.root / f"{name}.key")]
    env.ok(*args)


def _attach(env: Env, svc: RunTaskService, name: str = "opa", *, stage: str = "post_plan",
            enforcement: str = MANDATORY, timeout: str | None = None, key: bytes | None = None) -> None:
    _create(env, svc, name, timeout=timeout, key=key)
    env.ok("runtask", "attach", name, "net", "--stage", stage, "--enforcement", enforcement)


def _results(env: Env, task_id: int = 1) -> list[dict[str, Any]]:
    return env.ok("runtask", "results", str(task_id), "--json").json()  # type: ignore[no-any-return]


def _stages(view: dict[str, Any]) -> list[str]:
    return [h["to"] for h in view["history"] if h["kind"] == "stage"]


def _assert_failed_and_cleaned(env: Env, code_result: Any, reason: str) -> dict[str, Any]:
    """H3/C3: the mandatory failure went through the one termination path."""
    assert code_result.code == 1, code_result.out + code_result.err
    assert reason in code_result.err
    task = env.task(1)
    assert task["status"] == "failed" and task["stage"] == "post_plan" and reason in task["error"]
    assert env.ok("workspace", "show", "net", "--json").json()["lock"] is None
    assert slot_states(env) == [("idle", None)] * 3
    assert not (env.work_root / "local" / "local" / "slot-0").exists()
    log = env.ok("tasks", "logs", "1").out
    assert "Plan: 2 to add" in log and "task failed: mandatory run task failed at post_plan" in log
    return task


def test_passing_run_task_with_hmac_key(any_env: Env) -> None:
    """R1, R2, R3: verification, then the signed HCP request with a real JWT; the service reads
    the plan JSON with it and calls back; the plan waits for confirmation; the token is cleared.
    On SQLite and on PostgreSQL."""
    env = any_env
    env.workspace("net")
    with running_service("signature", key=b"k3y") as svc:
        _attach(env, svc, key=b"k3y")
        [verification] = svc.requests
        assert verification.payload["access_token"] == "test-token"
        r = env.ok("plan", "net", code=2)
        assert "run task opa (mandatory) at post_plan: passed - all checks passed (https://checks.example/r/1)" in r.out
        assert "callbacks for this wait go to http://127.0.0.1:" in r.out
        [req] = svc.task_requests()
    raw = req.body
    assert req.headers["X-TFC-Task-Signature"] == hmac.new(b"k3y", raw, hashlib.sha512).hexdigest()
    assert b", " not in raw and req.headers["Content-Type"] == "application/json"
    p = req.payload
    assert p["payload_version"] == 1 and p["stage"] == "post_plan" and p["is_speculative"] is False
    assert p["task_result_id"] == "1" and p["run_id"] == "run-1" and p["workspace_name"] == "net"
    assert p["task_result_enforcement_level"] == "mandatory"
    assert p["access_token"].count(".") == 2  # a JWT, not empty
    assert p["task_result_callback_url"].endswith("/api/v2/task-results/1/callback")
    assert p["plan_json_api_url"].endswith("/api/v2/task-results/1/plan-json")
    assert svc.plan_json_status == [200] and [c.status_code for c in svc.callbacks] == [200]
    [result] = _results(env)
    assert result["status"] == "passed" and result["token_used"] and result["token_cleared"]
    shown = env.ok("tasks", "show", "1").out
    assert "run task opa (mandatory) at post_plan: passed" in shown
    assert env.task(1)["run_task_results"][0]["status"] == "passed"
    env.ok("confirm-apply", "1")
    assert env.task(1)["status"] == "applied"


def test_failing_mandatory_run_task_fails_the_task_with_its_full_log(env: Env) -> None:
    env.workspace("net")
    with running_service("fail") as svc:
        _attach(env, svc)
        r = env.run("plan", "net")
    assert "run task opa (mandatory) at post_plan: failed - 2 policies violated" in r.out
    task = _assert_failed_and_cleaned(env, r, "opa: failed (2 policies violated)")
    assert statuses(task) == ["pending", "running", "failed"]
    assert "run task opa (mandatory) at post_plan: failed" in env.ok("tasks", "logs", "1").out


def test_failing_advisory_run_task_only_warns(env: Env) -> None:
    env.workspace("net")
    with running_service("fail") as svc:
        _attach(env, svc, enforcement=ADVISORY)
        r = env.ok("plan", "net", code=2)
    assert "warning: advisory run task opa: failed (2 policies violated); continuing" in r.out
    assert env.task(1)["status"] == "apply_pending"
    assert _results(env)[0]["status"] == "failed"


@pytest.mark.parametrize("enforcement", [MANDATORY, ADVISORY])
def test_a_service_that_never_calls_back_times_out(env: Env, enforcement: str) -> None:
    """R6/M10: marked `timeout` at once when its time is up; mandatory fails, advisory warns."""
    env.workspace("net")
    with running_service("never") as svc:
        _attach(env, svc, enforcement=enforcement, timeout="2s")
        r = env.run("plan", "net")
    [result] = _results(env)
    assert result["status"] == "timeout" and result["message"] == "no result within 2s"
    assert result["token_cleared"] and result["token_used"]
    assert "run task opa (" + enforcement + ") at post_plan: timeout" in r.out
    if enforcement == MANDATORY:
        _assert_failed_and_cleaned(env, r, "opa: timeout (no result within 2s)")
    else:
        assert r.code == 2 and env.task(1)["status"] == "apply_pending"


@pytest.mark.parametrize("enforcement", [MANDATORY, ADVISORY])
def test_a_service_that_is_down_is_a_webhook_error(env: Env, enforcement: str) -> None:
    """R5/O4/C3: not delivered is `webhook_error`, never "nothing was delivered, so it passed"."""
    env.workspace("net")
    with running_service("pass") as svc:
        _attach(env, svc, enforcement=enforcement)
    with running_service("down") as down:
        env.ok("runtask", "update", "opa", "--url", down.url, code=1)  # R1: a changed URL is verified
        env.ok("runtask", "update", "opa", "--timeout", "5m")
        # Point it at the closed port behind the verification's back, as a service that dies would.
        import sqlite3

        con = sqlite3.connect(env.db_path)
        con.execute("UPDATE run_tasks SET url = ?", (down.url,))
        con.commit()
        con.close()
        r = env.run("plan", "net")
    [result] = _results(env)
    assert result["status"] == "webhook_error" and "cannot reach" in result["message"]
    assert result["token_cleared"]
    if enforcement == MANDATORY:
        _assert_failed_and_cleaned(env, r, "opa: webhook_error (cannot reach")
    else:
        assert r.code == 2 and "warning: advisory run task opa: webhook_error" in r.out


def test_a_service_checking_signatures_rejects_a_wrong_key(env: Env) -> None:
    env.workspace("net")
    with running_service("signature", key=b"right") as svc:
        (env.root / "wrong.key").write_bytes(b"wrong")
        r = env.run("runtask", "create", "opa", "--url", svc.url, "--hmac-key-file", str(env.root / "wrong.key"))
        assert r.code == 1 and r.err.strip() == (
            f"iacctl: verification request failed: {svc.url} answered HTTP 401, not 200; the run task was not saved")
        assert env.ok("runtask", "list", "--json").json() == []
        _attach(env, svc, key=b"right")
        svc.key = b"rotated"  # the service's key changed; iacctl still signs with the old one
        r = env.run("plan", "net")
    assert [result["status"] for result in _results(env)] == ["webhook_error"]
    _assert_failed_and_cleaned(env, r, "answered HTTP 401, not 200")


def test_running_updates_and_outcomes_arrive_before_the_final_status(env: Env) -> None:
    env.workspace("net")
    with running_service("running") as svc:
        _attach(env, svc)
        r = env.ok("plan", "net", code=2)
    lines = [line for line in r.out.splitlines() if "run task opa (mandatory)" in line or "outcome" in line]
    assert lines == [
        "iacctl: run task opa (mandatory) at post_plan: running - scanning 3 resources",
        "iacctl: run task opa (mandatory) at post_plan: running - scanned 2 of 3",
        "iacctl:   outcome CKV-1: bucket is private",
        "iacctl: run task opa (mandatory) at post_plan: passed - no findings (https://checks.example/r/3)",
        "iacctl:   outcome CKV-1: bucket is private",
        "iacctl:   outcome CKV-2: encryption on",
    ]
    [result] = _results(env)
    assert [o["outcome_id"] for o in result["outcomes"]] == ["CKV-1", "CKV-2"]
    shown = env.ok("runtask", "results", "1").out
    assert "result 1 outcome CKV-2: encryption on" in shown


def test_a_callback_before_the_post_is_answered(env: Env) -> None:
    env.workspace("net")
    with running_service("early") as svc:
        _attach(env, svc)
        r = env.ok("plan", "net", code=2)
    assert "at post_plan: passed" in r.out
    assert [c.status_code for c in svc.callbacks] == [200]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_results_arrive_through_runtask_serve_in_another_process(env: Env, processes: list[Background]) -> None:
    """R8: with a `runtask serve` running on the same store, the waiting plan sends services to
    its public URL and starts no server of its own."""
    env.workspace("net")
    port = _free_port()
    serve = spawn(env, processes, "runtask", "serve", "--listen", f"127.0.0.1:{port}",
                  "--public-url", f"http://localhost:{port}/")
    serve.wait_line("run-task callback server listening on")
    with running_service("running") as svc:
        _attach(env, svc)
        r = env.ok("plan", "net", code=2)
        [req] = svc.task_requests()
    assert "no `iacctl runtask serve` is running" not in r.out
    assert req.payload["task_result_callback_url"] == f"http://localhost:{port}/api/v2/task-results/1/callback"
    assert "at post_plan: passed - no findings" in r.out
    serve.signal(signal.SIGTERM)
    code, out, _ = serve.finish()
    assert code == 0 and "run-task callback server stopped" in out


def test_all_four_stages_are_wired_where_the_seeds_put_them(env: Env) -> None:
    """C6/R7/L2: pre_plan after init and before planning; post_plan after saving_plan; pre_apply
    before applying; post_apply after saving_state."""
    env.workspace("net")
    with running_service("pass") as svc:
        for stage in ("pre_plan", "post_plan", "pre_apply", "post_apply"):
            _attach(env, svc, name=f"rt-{stage}", stage=stage)
        env.ok("plan", "net", code=2)
        env.ok("confirm-apply", "1", "--rebuild")
        payloads = [req.payload for req in svc.task_requests()]
    task = env.task(1)
    assert task["status"] == "applied"
    assert _stages(task) == ["fetching", "init", "pre_plan", "planning", "saving_plan", "post_plan",
                             "init", "restoring_plan", "pre_apply", "applying", "saving_state", "post_apply"]
    assert [p["stage"] for p in payloads] == ["pre_plan", "post_plan", "pre_apply", "post_apply"]
    assert [p["plan_json_api_url"] is None for p in payloads] == [True, False, False, False]
    assert [(r["stage"], r["status"]) for r in _results(env)] == [
        ("pre_plan", "passed"), ("post_plan", "passed"), ("pre_apply", "passed"), ("post_apply", "passed")]


def test_a_mandatory_failure_at_pre_plan_stops_before_planning(env: Env) -> None:
    env.workspace("net")
    with running_service("fail") as svc:
        _attach(env, svc, stage="pre_plan")
        r = env.run("plan", "net")
    assert r.code == 1 and "mandatory run task failed at pre_plan" in r.err
    task = env.task(1)
    assert task["stage"] == "pre_plan" and task["plan_hash"] is None and "planning" not in _stages(task)


def test_a_mandatory_failure_at_pre_apply_blocks_the_apply(env: Env) -> None:
    env.workspace("net")
    with running_service("fail") as svc:
        _attach(env, svc, stage="pre_apply")
        env.ok("plan", "net", code=2)
        r = env.run("confirm-apply", "1")
    assert r.code == 1 and "mandatory run task failed at pre_apply" in r.err
    task = env.task(1)
    assert task["status"] == "failed" and task["stage"] == "pre_apply" and "applying" not in _stages(task)
    assert env.ok("state", "versions", "net", "--json").json() == []
    assert env.ok("workspace", "show", "net", "--json").json()["lock"] is None


def test_a_mandatory_failure_at_post_apply_warns_and_keeps_the_apply(env: Env) -> None:
    """R7: the apply is done; a post_apply failure is a warning, the task stays applied."""
    env.workspace("net")
    with running_service("fail") as svc:
        _attach(env, svc, stage="post_apply")
        env.ok("plan", "net", code=2)
        r = env.ok("confirm-apply", "1")
    assert "warning at post_apply: mandatory run task failed at post_apply: opa: failed" in r.out
    task = env.task(1)
    assert task["status"] == "applied" and task["state_version"] == 1
    assert [(x["stage"], x["status"]) for x in _results(env)] == [("post_apply", "failed")]


def test_cancel_while_waiting_revokes_the_tokens(env: Env, processes: list[Background]) -> None:
    """E2: the task ends through the termination path; its waiting results end `errored` with
    their tokens cleared."""
    env.workspace("net")
    with running_service("never") as svc:
        _attach(env, svc)
        plan = spawn(env, processes, "plan", "net")
        plan.wait_line("request delivered; waiting for its result")
        env.ok("cancel", "1")
        code, _, err = plan.finish()
        token = svc.task_requests()[0].payload["access_token"]
        callback = svc.task_requests()[0].payload["task_result_callback_url"]
    assert code == 3 and "cancelled at stage post_plan" in err
    [result] = _results(env)
    assert result["status"] == "errored" and result["token_cleared"]
    assert "the task ended cancelled" in result["message"]
    assert token and callback  # the in-process server is gone with the task; nothing can call back


def test_recover_times_out_overdue_results(env: Env, processes: list[Background]) -> None:
    """S8/R6: the sweep marks a result past its timeout `timeout` even while its waiter is
    stopped; the waiter, resumed, fails the mandatory stage."""
    env.workspace("net")
    with running_service("never") as svc:
        _attach(env, svc, timeout="2s")
        plan = spawn(env, processes, "plan", "net")
        plan.wait_line("request delivered; waiting for its result")
        plan.signal(signal.SIGSTOP)
        try:
            wait_task(env, 1, lambda t: True)
            import time

            time.sleep(2.5)
            actions = env.ok("pods", "recover", "--json").json()
        finally:
            plan.signal(signal.SIGCONT)
        code, _, err = plan.finish()
    assert {"action": "run_task_timeout", "task": 1}.items() <= actions[0].items()
    assert code == 1 and "opa: timeout" in err
    [result] = _results(env)
    assert result["status"] == "timeout" and result["token_cleared"]


def test_list_show_update_detach_delete_and_the_key_is_never_shown(env: Env) -> None:
    """R1, C2, X2: listings in JSON, the HMAC key encrypted at rest and never printed."""
    env.workspace("net")
    with running_service("signature", key=b"very-secret-key") as svc:
        _attach(env, svc, key=b"very-secret-key", stage="pre_apply", enforcement=ADVISORY)
        updated = env.ok("runtask", "update", "opa", "--timeout", "90s", "--description", "policies", "--json").json()
        assert updated["timeout"] == "90s" and updated["description"] == "policies"
        # A new key is verified with the service before it is saved: the wrong one is refused.
        (env.root / "other.key").write_bytes(b"other")
        env.ok("runtask", "update", "opa", "--hmac-key-file", str(env.root / "other.key"), code=1)
    listed = env.ok("runtask", "list", "--json").json()
    assert listed == [{"name": "opa", "url": svc.url, "description": "policies", "hmac_key": True, "timeout": "90s",
                       "created_at": listed[0]["created_at"],
                       "attachments": [{"run_task": "opa", "workspace": "net", "stage": "pre_apply",
                                        "enforcement": "advisory"}]}]
    shown = env.ok("runtask", "show", "opa").out + env.ok("runtask", "list").out
    assert "very-secret-key" not in shown
    assert b"very-secret-key" not in env.db_path.read_bytes()
    env.ok("runtask", "attach", "opa", "net", "--stage", "post_plan", "--enforcement", MANDATORY)
    assert env.ok("runtask", "show", "opa", "--json").json()["attachments"][0]["stage"] == "post_plan"
    assert "run task opa detached from net" in env.ok("runtask", "detach", "opa", "net").out
    assert env.ok("runtask", "show", "opa", "--json").json()["attachments"] == []
    env.ok("runtask", "delete", "opa")
    assert env.ok("runtask", "list").out.strip().startswith("no run tasks: iacctl runtask create")
