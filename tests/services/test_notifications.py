"""Notifications and the outbox end to end (SPEC F1, F3, E2, S8; seed 002 H5, M3-M5, O3): real
receivers on 127.0.0.1 written as teams write them for HCP Terraform (tests/fixtures/receivers.py),
the real `iacctl` commands, real Terraform. Where a test needs time to pass (a retry 30 s or a
day away), it moves the entry's due time in the store, as the clock would."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from typing import Any

from sqlalchemy import update
from sqlmodel import col

from iacctl.store.models import OutboxEntry
from tests.background import spawn
from tests.conftest import Env
from tests.fixtures.receivers import Receiver, running_receiver

ALL_EVENTS = "created,planning,needs_confirmation,applying,applied,planned,failed,cancelled"
HCP_FIELDS = ["payload_version", "notification_configuration_id", "run_url", "run_id", "run_message",
              "run_created_at", "run_created_by", "workspace_id", "workspace_name", "organization_name",
              "notifications"]
ISO_MS = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


def _create(env: Env, receiver: Receiver, name: str = "ops", *extra: str, events: str = ALL_EVENTS,
            token: bytes | None = None) -> None:
    args = ["notify", "create", name, "--url", receiver.url, "--events", events, *extra]
    if token is not None:
        (env.root / f"{name}.tok").write_bytes(token + b"\n")
        args += ["--token-file", str(env.root / f"{name}.tok")]
    env.ok(*args)


def _outbox(env: Env) -> list[dict[str, Any]]:
    # The notifications' entries (an apply also writes its inventory sync, F2).
    return env.ok("outbox", "list", "--kind", "notification", "--json").json()  # type: ignore[no-any-return]


def _deliveries(env: Env, *args: str) -> list[dict[str, Any]]:
    return env.ok("notify", "deliveries", *args, "--json").json()  # type: ignore[no-any-return]


def _time_passes(env: Env, entry_id: int | None = None, **values: float) -> None:
    """The clock moves on: the entry (or every open one) is due now, or past its last day."""
    app = env.app()
    try:
        with app.store.write() as session:
            stmt = update(OutboxEntry).where(col(OutboxEntry.status).in_(["pending", "delivering"]))
            if entry_id is not None:
                stmt = stmt.where(col(OutboxEntry.id) == entry_id)
            session.execute(stmt.values(**values))
    finally:
        app.close()


def test_hcp_receiver_checks_the_signature_and_gets_every_field(any_env: Env) -> None:
    env = any_env
    token = b"hcp-notification-token"
    env.workspace("net")
    env.workspace("boom", "failing_apply")
    with running_receiver("ok", token) as ops, running_receiver("ok") as boom_only:
        _create(env, ops, token=token)
        _create(env, boom_only, "boom-only", "--workspace", "boom", events="failed")
        assert [r.trigger for r in ops.requests] == ["verification"]
        verification = ops.requests[0].payload
        assert list(verification) == HCP_FIELDS and verification["notification_configuration_id"] == "nc-1"
        assert all(verification[k] is None for k in HCP_FIELDS[2:-1])

        env.ok("plan", "net", "-q", code=2)
        env.ok("confirm-apply", "1", "-q")
        env.ok("workspace", "var", "set", "net", "region", "eu-west-2")
        env.ok("plan", "net", "-q", code=2)
        env.ok("cancel", "2")
        env.ok("plan", "boom", "-q", code=2)
        r = env.run("confirm-apply", "3", "-q")
        assert r.code == 1

        got = ops.wait_for(14)
        assert ops.rejected_signatures == 0  # every body was signed with the token, byte for byte
        for received in got:
            expected = hmac.new(token, received.body, hashlib.sha512).hexdigest()
            assert received.headers["X-TFE-Notification-Signature"] == expected
            assert received.headers["Content-Type"] == "application/json"
        seen = [(p["run_id"], p["notifications"][0]["trigger"], p["notifications"][0]["run_status"])
                for p in (r.payload for r in got)]
        assert seen == [
            ("run-1", "run:created", "pending"), ("run-1", "run:planning", "planning"),
            ("run-1", "run:needs_attention", "planned"), ("run-1", "run:applying", "applying"),
            ("run-1", "run:completed", "applied"),
            ("run-2", "run:created", "pending"), ("run-2", "run:planning", "planning"),
            ("run-2", "run:needs_attention", "planned"), ("run-2", "run:errored", "canceled"),
            ("run-3", "run:created", "pending"), ("run-3", "run:planning", "planning"),
            ("run-3", "run:needs_attention", "planned"), ("run-3", "run:applying", "applying"),
            ("run-3", "run:errored", "errored"),
        ]
        last = got[-1].payload
        for received in got:
            p = received.payload
            assert list(p) == [*HCP_FIELDS, "iacctl"]
            assert p["payload_version"] == 1 and p["notification_configuration_id"] == "nc-1"
            assert p["organization_name"] == "iacctl"
            assert re.match(ISO_MS, p["run_created_at"]) and re.match(ISO_MS, p["notifications"][0]["run_updated_at"])
            assert p["run_created_by"] and p["notifications"][0]["run_updated_by"] == p["run_created_by"]
            assert p["run_url"].endswith(f"/app/iacctl/workspaces/{p['workspace_name']}/runs/{p['run_id']}")
            assert p["run_message"] == f"iacctl task {p['run_id'][4:]} (plan_and_apply)"
            assert p["workspace_id"] == ("ws-1" if p["workspace_name"] == "net" else "ws-2")
            extra = p["iacctl"]
            assert extra["task_id"] == int(p["run_id"][4:]) and extra["attempt"] == 1
            assert extra["event_id"].startswith("notification:1:task-")
        needs = got[2].payload
        assert needs["notifications"][0]["message"] == "Run Needs Attention"
        assert needs["iacctl"]["changes"] == {"add": 2, "change": 0, "destroy": 0, "replace": 0, "outputs": 1}
        assert needs["iacctl"]["plan_hash"] == env.task(1)["plan_hash"]
        assert needs["iacctl"]["next_command"] == "iacctl confirm-apply 1"
        assert "canceled" == got[8].payload["notifications"][0]["run_status"]
        assert re.search(r"cancelled by \S+@\S+", got[8].payload["iacctl"]["error"])  # the recorded actor (issue 9)
        assert "terraform apply failed" in last["iacctl"]["error"]

        # --workspace boom: that destination hears of boom's failure only.
        boom = boom_only.wait_for(1)
        assert [(r.payload["workspace_name"], r.trigger) for r in boom] == [("boom", "run:errored")]

    entries = _outbox(env)
    assert len(entries) == 15 and {e["status"] for e in entries} == {"delivered"}
    assert all(e["attempts"] == 1 for e in entries)
    log = _deliveries(env, "ops")
    assert [d["result"] for d in log] == ["verified"] + ["delivered"] * 14
    assert all(d["http_status"] == 200 and d["duration_ms"] >= 0 for d in log)
    # X1/X2: the token is in no output and not readable in the store.
    shown = env.ok("notify", "show", "ops", "--json").out + env.ok("notify", "list", "--json").out
    assert token.decode() not in shown and '"token":"********"' in shown
    if env.backend == "sqlite":
        assert token not in env.db_path.read_bytes()


def test_verification_must_be_answered_2xx_or_nothing_is_saved(env: Env) -> None:
    with running_receiver("ok", verification_status=403) as refusing:
        r = env.run("notify", "create", "ops", "--url", refusing.url, "--events", "failed")
    assert r.code == 1
    assert r.err.strip().splitlines() == ["iacctl: the verification request to ops failed: HTTP 403; it must be "
                                          "answered 2xx"]
    assert env.ok("notify", "list", "--json").json() == []
    assert _deliveries(env) == []
    with running_receiver("ok") as receiver:
        _create(env, receiver, events="failed")
        env.ok("notify", "disable", "ops")
        assert env.ok("notify", "show", "ops", "--json").json()["enabled"] is False
    # Enabling verifies again, as HCP Terraform does: a receiver that is gone keeps it disabled.
    r = env.run("notify", "enable", "ops")
    assert r.code == 1 and "cannot connect: connection refused" in r.err
    assert env.ok("notify", "show", "ops", "--json").json()["enabled"] is False
    r = env.run("notify", "verify", "ops")
    assert r.code == 1 and r.err.startswith("iacctl: the verification request to ops failed")


def test_answers_500_twice_then_200_is_delivered_on_the_third_attempt(env: Env) -> None:
    env.workspace("net")
    script = [(500, {"Retry-After": "1"}), (503, {"Retry-After": "1"})]
    with running_receiver("script", script=script) as receiver:
        _create(env, receiver, events="planned")
        r = env.run("plan", "net", "--plan-only", "-q")
        assert r.code == 2  # the plan's exit code, whatever the receiver said
        assert ("iacctl: 1 notification(s) not delivered yet: ops (task 1 planned, entry 1, pending): HTTP 500; "
                "`iacctl pods recover` retries the pending ones") in r.err
        time.sleep(1.1)  # Retry-After: 1 is honoured, not the 30 s of the schedule
        assert [a["action"] for a in env.ok("pods", "recover", "--json").json()] == ["notify_retry"]
        time.sleep(1.1)
        actions = env.ok("pods", "recover", "--json").json()
        assert [(a["action"], a["task"]) for a in actions] == [("notified", 1)]
        got = receiver.wait_for(3)
    assert [g.payload["iacctl"]["attempt"] for g in got] == [1, 2, 3]
    assert len({g.payload["iacctl"]["event_id"] for g in got}) == 1  # one event, three attempts
    entry = _outbox(env)[0]
    assert (entry["status"], entry["attempts"], entry["last_http_status"]) == ("delivered", 3, 200)
    log = [(d["attempt"], d["result"], d["http_status"], d["response"]) for d in _deliveries(env, "ops")][1:]
    assert log == [(1, "retry", 500, "answer 500"), (2, "retry", 503, "answer 503"),
                   (3, "delivered", 200, '{"ok":true}')]
    assert [d["attempt"] for d in _deliveries(env, "--failed")] == [1, 2]
    assert env.ok("pods", "recover", "--json").json() == []  # delivered once: nothing more to do


def test_a_receiver_that_is_down_is_retried_with_backoff_then_dead_and_said(env: Env) -> None:
    env.workspace("net")
    with running_receiver("ok") as receiver:
        _create(env, receiver, events="planned")
    # The receiver is gone now: its port is closed.
    started = time.time()
    r = env.run("plan", "net", "--plan-only", "-q")
    assert r.code == 2 and "ops (task 1 planned, entry 1, pending): cannot connect: connection refused" in r.err
    first = _outbox(env)[0]
    assert first["status"] == "pending" and first["attempts"] == 1
    due = _due_at(env, 1)
    assert 24 <= due - started <= 36 + (time.time() - started)  # about 30 s, with jitter
    assert env.ok("pods", "recover", "--json").json() == []  # not due yet: nothing is sent
    _time_passes(env, 1, next_attempt_at=0)
    before = time.time()
    [action] = env.ok("pods", "recover", "--json").json()
    assert action["action"] == "notify_retry" and "connection refused" in action["detail"]
    assert 96 <= _due_at(env, 1) - before <= 144 + (time.time() - before)  # then about 2 m
    # A day later the entry is dead, visible, and said by the next command of the workspace.
    _time_passes(env, 1, next_attempt_at=0, give_up_at=1)
    [action] = env.ok("pods", "recover", "--json").json()
    assert action["action"] == "notify_dead" and "gave up after 3 attempt(s)" in action["detail"]
    dead = env.ok("outbox", "list", "--status", "dead", "--json").json()
    assert [(d["id"], d["attempts"]) for d in dead] == [(1, 3)]
    notice = ("iacctl: workspace net has a dead follow-up: outbox entry 1 (notification ops, task 1 planned): "
              "cannot connect: connection refused; gave up after 3 attempt(s); retry it with: iacctl outbox retry 1, "
              "or dismiss it with: iacctl outbox dismiss 1")
    out = env.run("plan", "net", "--plan-only", "-q")
    assert notice in out.out.splitlines()
    assert out.out.count("dead follow-up") == 1
    env.ok("outbox", "dismiss", "1")
    assert "dead follow-up" not in env.run("plan", "net", "--plan-only", "-q").out


def _due_at(env: Env, entry_id: int) -> float:
    app = env.app()
    try:
        with app.store.read() as session:
            entry = session.get(OutboxEntry, entry_id)
            assert entry is not None
            return float(entry.next_attempt_at)
    finally:
        app.close()


def test_a_receiver_that_never_answers_does_not_hold_the_command(env: Env) -> None:
    env.workspace("net")
    with running_receiver("never") as receiver:
        _create(env, receiver, events="needs_confirmation")
        started = time.monotonic()
        r = env.run("plan", "net", "-q")
        elapsed = time.monotonic() - started
        assert r.code == 2  # unchanged
        # Terraform's plan takes about 2 s here; the receiver's 15 s timeout is not waited out.
        assert elapsed < 11, elapsed
        line = ("iacctl: 1 notification(s) not delivered yet: ops (task 1 needs_confirmation, entry 1, pending): "
                "no answer within the command's budget of 5 s")
        assert next(x for x in r.err.splitlines() if x.startswith("iacctl: 1 notification")).startswith(line)
        entry = _outbox(env)[0]
        assert (entry["status"], entry["attempts"]) == ("pending", 1)
        assert [d["result"] for d in _deliveries(env, "ops")] == ["verified", "abandoned"]


def test_slack_destination_gets_text_and_blocks_and_its_url_stays_secret(env: Env) -> None:
    env.workspace("net")
    with running_receiver("slack") as slack:
        env.ok("notify", "create", "chat", "--type", "slack", "--url", slack.url, "--events", "needs_confirmation")
        assert slack.requests[0].payload["text"] == "Verification of chat: iacctl notifications will arrive here."
        env.ok("plan", "net", "-q", code=2)
        [message] = slack.wait_for(1)
    doc = message.payload
    assert doc["text"] == "Run Needs Attention: workspace net, task 1 (needs_confirmation)"
    blocks = json.dumps(doc["blocks"])
    for part in ("*Workspace*\\nnet", "*Task*\\n1 (plan_and_apply)", "*Event*\\nneeds_confirmation",
                 "*Changes*\\n+2 ~0 -0 \\u00b10", "Next: `iacctl confirm-apply 1`"):
        assert part in blocks, part
    assert "X-TFE-Notification-Signature" not in message.headers
    # X1/X2: a Slack webhook URL is a secret: masked, and not readable in the store.
    for out in (env.ok("notify", "show", "chat").out, env.ok("notify", "show", "chat", "--json").out,
                env.ok("notify", "list").out, env.ok("notify", "deliveries", "--json").out):
        assert "xyzsecret" not in out
    assert "url: (hidden: a Slack webhook URL is a secret)" in env.ok("notify", "show", "chat").out
    assert b"xyzsecret" not in env.db_path.read_bytes()
    r = env.run("notify", "create", "x", "--type", "slack", "--url", slack.url, "--events", "failed",
                "--token-file", "t")
    assert r.code == 64 and "takes no --token-file" in r.err


def test_kill_9_in_the_middle_of_a_delivery_then_the_sweep_delivers_it_once(env: Env, processes: list[Any]) -> None:
    env.workspace("net")
    with running_receiver("hang_first") as receiver:
        _create(env, receiver, events="planned")
        plan = spawn(env, processes, "plan", "net", "--plan-only", "-q")
        receiver.wait_for(1)  # the POST is in the receiver's hands, unanswered
        plan.kill()
        receiver.release()
        assert [(e["status"], e["attempts"]) for e in _outbox(env)] == [("delivering", 0)]
        actions = env.ok("pods", "recover", "--json").json()
        assert [(a["action"], a["task"]) for a in actions] == [("notified", 1)]
        assert env.ok("pods", "recover", "--json").json() == []
        got = receiver.wait_for(2)
    assert len(got) == 2 and got[0].payload["iacctl"]["event_id"] == got[1].payload["iacctl"]["event_id"]
    [entry] = _outbox(env)
    assert (entry["status"], entry["attempts"]) == ("delivered", 1)
    assert [d["result"] for d in _deliveries(env, "ops")] == ["verified", "delivered"]  # marked delivered once


def test_two_sweeps_at_once_deliver_each_due_entry_once_and_in_order(any_env: Env) -> None:
    env = any_env
    env.workspace("net")
    with running_receiver("ok") as first:
        port = int(first.url.split(":")[2].split("/")[0])
        for name in ("a", "b", "c"):
            _create(env, first, name, events="created,planned")
    # The receiver is down while three plans run: their 18 notifications wait in the outbox.
    for _ in range(3):
        env.ok("plan", "net", "--plan-only", "-q", code=2, extra_env={"IACCTL_FOLLOW_UP_BUDGET": "1"})
    assert len([e for e in _outbox(env) if e["status"] == "pending"]) == 18
    _time_passes(env, next_attempt_at=0)
    with running_receiver("ok", port=port) as receiver:
        results: list[Any] = []
        threads = [threading.Thread(target=lambda: results.append(env.ok("pods", "recover", "--json").json()))
                   for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = receiver.wait_for(18)
        time.sleep(0.5)
        got = receiver.notifications()
    event_ids = [g.payload["iacctl"]["event_id"] for g in got]
    assert len(event_ids) == 18 and len(set(event_ids)) == 18  # each once
    notified = [a for r in results for a in r if a["action"] == "notified"]
    assert len(notified) == 18
    assert {e["status"] for e in _outbox(env)} == {"delivered"}
    delivered = [d for d in _deliveries(env) if d["result"] == "delivered"]
    assert len(delivered) == 18 and len({d["outbox_entry"] for d in delivered}) == 18
    # One at a time per destination, so each destination heard its events in the order they happened.
    for nc in ("nc-1", "nc-2", "nc-3"):
        mine = [g.payload for g in got if g.payload["notification_configuration_id"] == nc]
        order = [(int(p["run_id"][4:]), p["notifications"][0]["trigger"]) for p in mine]
        assert order == sorted(order, key=lambda x: (x[0], x[1] != "run:created")), order
