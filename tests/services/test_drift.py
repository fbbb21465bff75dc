"""Drift checks end to end (SPEC F5, issue 12 items 2 and 4) with real Terraform and real drift:
the test provider in tests/fixtures/drift_provider manages files whose refresh reads them, and
the tests change those files behind iacctl's back. Real SQLite, the real `iacctl` as a
subprocess, a real notification receiver on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.background import Background, spawn, wait_task
from tests.cli.test_bad_input import assert_one_clear_line, rows, snapshot
from tests.conftest import Env
from tests.fixtures.drift_provider import install
from tests.fixtures.receivers import running_receiver


@pytest.fixture
def drift_env(env: Env) -> Env:
    """The test provider served from a filesystem mirror named in a CLI configuration file:
    TF_CLI_CONFIG_FILE is on the environment allowlist (the machine's provider installation
    settings, like its proxy), so the caller's setting reaches Terraform."""
    env.vars["TF_CLI_CONFIG_FILE"] = str(install(env.root / "provider"))
    return env


def _workspace(env: Env, name: str, *, apply: bool = True) -> Path:
    """A workspace managing data-NAME/a.txt and b.txt, applied (task ids: see the callers)."""
    data = env.root / f"data-{name}"
    data.mkdir()
    env.workspace(name, "drift")
    env.ok("workspace", "var", "set", name, "dir", str(data))
    if apply:
        r = env.ok("plan", name, "-q", "--json", code=2)
        env.ok("confirm-apply", str(r.json()["id"]), "-q")
    return data


def _check(env: Env, *args: str, code: int) -> list[dict[str, Any]]:
    r = env.ok("drift", "check", *args, "-q", "--json", code=code)
    return r.json()  # type: ignore[no-any-return]


def _drift(env: Env, name: str) -> dict[str, Any]:
    return env.ok("drift", "show", name, "--json").json()  # type: ignore[no-any-return]


def test_no_drift_then_drift_found_shown_and_cleared_by_the_next_apply(drift_env: Env) -> None:
    env = drift_env
    data = _workspace(env, "net")  # task 1 applied
    assert env.ok("workspace", "show", "net", "--json").json()["drift"]["checked"] is False

    (result,) = _check(env, "net", code=0)
    assert result["outcome"] == "no_drift" and result["task"] == 2
    assert _drift(env, "net")["drifted"] is False

    (data / "a.txt").write_text("changed behind iacctl's back")
    (data / "b.txt").unlink()
    r = env.ok("drift", "check", "net", "-q", code=2)
    assert "net: drift in 2 resource(s) (task 3" in r.out
    assert "filedrift_file.a: content" in r.out and "filedrift_file.b: deleted outside Terraform" in r.out

    shown = _drift(env, "net")
    assert shown["drifted"] and shown["task"] == 3
    assert shown["resources"] == [
        {"address": "filedrift_file.a", "change": "updated", "attributes": ["content"]},
        {"address": "filedrift_file.b", "change": "deleted", "attributes": []},
    ]
    text = env.ok("drift", "show", "net").out
    assert "2 drifted resource(s)" in text and "filedrift_file.a  updated  content" in text
    ws = env.ok("workspace", "show", "net", "--json").json()
    assert ws["drift"]["resources"] == shown["resources"] and ws["lock"] is None
    assert "drift: 2 drifted resource(s)" in env.ok("workspace", "show", "net").out

    # The check's plan is saved like any plan: it is reviewed with tasks plan.
    check = env.task(3)
    assert check["kind"] == "drift_check" and check["status"] == "planned_and_finished" and check["plan_hash"]
    review = env.ok("tasks", "plan", "3").out
    assert "filedrift_file.a" in review and "content:" in review and "changed behind" in review
    assert env.ok("tasks", "plan", "3", "--json").json()["resource_drift"][0]["address"] == "filedrift_file.a"

    # The next successful apply clears it.
    env.ok("plan", "net", "-q", code=2)
    env.ok("confirm-apply", "4", "-q")
    cleared = _drift(env, "net")
    assert cleared["drifted"] is False and cleared["cleared_by_task"] == 4 and cleared["resources"] == []
    assert "cleared by the apply of task 4" in env.ok("workspace", "show", "net").out
    (result,) = _check(env, "net", code=0)
    assert result["outcome"] == "no_drift"
    # A deleted workspace takes its drift record with it.
    env.ok("workspace", "delete", "net", "--force")
    assert rows(env.db_path, "SELECT * FROM workspace_drift") == []


def test_a_drift_notification_only_when_the_drifted_set_is_new_or_changed(drift_env: Env) -> None:
    env = drift_env
    token = b"drift-token"
    data = _workspace(env, "net")
    with running_receiver("ok", token) as receiver:
        (env.root / "tok").write_bytes(token)
        # A check is no run a person started: of the run events it sends none but `failed`.
        env.ok("notify", "create", "ops", "--url", receiver.url, "--events", "created,planning,planned,drift_detected",
               "--token-file", str(env.root / "tok"))
        _check(env, "net", code=0)
        (data / "a.txt").write_text("s3cr3t-value")
        (first,) = _check(env, "net", code=2)
        assert first["notified"] is True
        (note,) = receiver.wait_for(1)
        payload = note.payload
        # Issue 19 item 7: HCP's assessment notification (payload version 2), as HCP receivers parse it.
        assert note.trigger == "assessment:drifted" and payload["payload_version"] == 2
        assert payload["trigger_scope"] == "assessment" and payload["message"] == "Drift Detected"
        assert payload["notification_configuration_id"] == "nc-1"
        details = payload["details"]
        assert (details["workspace_name"], details["workspace_id"], details["prior_assessment_result"]) == (
            "net", "ws-1", None)
        result = details["new_assessment_result"]
        assert result["id"] == f"asmtres-{first['task']}" and result["drifted"] is True
        assert (result["resources_drifted"], result["succeeded"], result["checks_failed"]) == (1, True, 0)
        assert "run_id" not in payload and "notifications" not in payload
        assert payload["iacctl"]["event"] == "drift_detected"
        assert payload["iacctl"]["drift"] == [{"address": "filedrift_file.a", "change": "updated",
                                               "attributes": ["content"]}]
        assert payload["iacctl"]["next_command"] == "iacctl drift show net"
        assert b"s3cr3t-value" not in note.body  # names, never values

        # The same drift again: recorded, no second notification.
        (again,) = _check(env, "net", code=2)
        assert again["notified"] is False and again["task"] == first["task"] + 1
        # A changed set: one more.
        (data / "b.txt").unlink()
        (changed,) = _check(env, "net", code=2)
        assert changed["notified"] is True
        notes = receiver.wait_for(2)
        assert [n.trigger for n in notes] == ["assessment:drifted", "assessment:drifted"]
        assert [n.payload["iacctl"]["task_id"] for n in notes] == [first["task"], changed["task"]]
        assert [d["address"] for d in notes[1].payload["iacctl"]["drift"]] == ["filedrift_file.a",
                                                                             "filedrift_file.b"]
        entries = env.ok("outbox", "list", "--kind", "notification", "--json").json()
        assert sorted(e["event"] for e in entries) == ["drift_detected", "drift_detected"]
        assert all(e["status"] == "delivered" for e in entries)


def test_a_busy_workspace_and_one_whose_last_task_failed_are_skipped_with_the_reason(drift_env: Env) -> None:
    env = drift_env
    _workspace(env, "busy", apply=False)
    env.ok("plan", "busy", "-q", code=2)  # task 1 waits for confirmation
    env.workspace("broken", "broken")
    env.ok("plan", "broken", "-q", code=1)  # task 2 failed
    _workspace(env, "fine", apply=False)
    env.ok("plan", "fine", "-q", code=2)
    env.ok("confirm-apply", "3", "-q")
    before = snapshot(env.db_path)["tasks"]

    r = env.run("drift", "check", "busy")
    assert r.code == 5 and "busy: skipped: workspace busy is busy: task 1 (plan_and_apply) is apply_pending" in r.out
    r = env.run("drift", "check", "broken")
    assert r.code == 5 and "broken: skipped: workspace broken's last task 2 (plan_and_apply) failed" in r.out
    assert snapshot(env.db_path)["tasks"] == before  # nothing queued for them

    r = env.ok("drift", "check", "--all", "-q")
    lines = r.out.splitlines()
    assert sum(line.startswith("busy: skipped: ") for line in lines) == 1
    assert sum(line.startswith("broken: skipped: ") for line in lines) == 1
    assert any(line.startswith("fine: no drift (task 4)") for line in lines)
    views = _check(env, "--all", code=0)
    assert {v["workspace"]: v["outcome"] for v in views} == {"broken": "skipped", "busy": "skipped",
                                                             "fine": "no_drift"}


def test_a_check_never_locks_and_never_blocks_a_plan(drift_env: Env, processes: list[Background]) -> None:
    env = drift_env
    data = _workspace(env, "net")  # task 1
    (data / "a.txt.slow").write_text("15")  # the check's refresh takes 15 s
    check = spawn(env, processes, "drift", "check", "net", "-q")
    wait_task(env, 2, lambda t: t["stage"] == "planning")
    assert env.ok("workspace", "show", "net", "--json").json()["lock"] is None
    # A plan of the same workspace starts at once: the check holds no lock and no turn.
    (data / "a.txt.slow").unlink()
    r = env.run("plan", "net", "-q", "--wait-timeout", "30s")
    assert r.code == 0 and "waits" not in r.err, r.err
    assert env.task(2)["status"] == "running"  # the check was still running meanwhile
    assert check.wait() == 0
    check_task = env.task(2)
    assert check_task["status"] == "planned_and_finished"
    assert not any("lock" in (h["reason"] or "") for h in check_task["history"])
    assert env.ok("workspace", "show", "net", "--json").json()["lock"] is None


@pytest.mark.timeout(600)
def test_all_checks_every_workspace_several_at_once(drift_env: Env) -> None:
    env = drift_env
    names = ["w1", "w2", "w3", "w4", "w5"]
    dirs = {n: _workspace(env, n) for n in names}  # tasks 1-5
    (dirs["w2"] / "a.txt").write_text("drifted")
    (dirs["w5"] / "b.txt").unlink()
    r = env.run("drift", "check", "--all", "--json")
    assert r.code == 2, r.err
    views = json.loads(r.out)  # one JSON document on stdout; progress went to stderr
    assert [v["workspace"] for v in views] == names
    assert {v["workspace"]: v["outcome"] for v in views} == {
        "w1": "no_drift", "w2": "drifted", "w3": "no_drift", "w4": "no_drift", "w5": "drifted"}
    assert "[w3] task" in r.err and "stage: planning" in r.err
    checks = [t for t in env.tasks() if t["kind"] == "drift_check"]
    assert len(checks) == 5 and {t["status"] for t in checks} == {"planned_and_finished"}
    # As many at once as the local pool's 3 running places allow: some ran side by side.
    spans = [(r["started_at"], r["finished_at"])
             for r in rows(env.db_path, "SELECT started_at, finished_at FROM tasks WHERE kind = 'drift_check'")]
    assert any(a[0] <= b[0] < a[1] for a in spans for b in spans if a is not b)
    assert _drift(env, "w5")["resources"] == [{"address": "filedrift_file.b", "change": "deleted",
                                               "attributes": []}]


def test_bad_input_is_one_line_and_changes_nothing(drift_env: Env) -> None:
    env = drift_env
    _workspace(env, "net", apply=False)
    before = snapshot(env.db_path)
    for args in (["drift", "check", "nte"], ["drift", "check"], ["drift", "check", "net", "--all"],
                 ["drift", "show", "nope"]):
        r = env.run(*args)
        assert r.code == 64, (args, r.code, r.err)
        line = assert_one_clear_line(r)
        if args[-1] == "nte":
            assert "unknown workspace 'nte'" in line and "net" in line  # did you mean
    assert snapshot(env.db_path) == before
