"""The inventory end to end (SPEC F2, F1, S8; seed 002 H6): the real `iacctl`, real Terraform,
real SQLite (and PostgreSQL where marked), real receivers on 127.0.0.1. After each apply the
state's resources are synced into the inventory (and POSTed, signed, to a configured URL); a
sync left `syncing` by a killed process is reset by the sweep; an older serial is never applied
over a newer one."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlmodel import col

from iacctl.store.models import OutboxEntry
from tests.background import spawn
from tests.conftest import Env
from tests.fixtures.receivers import running_receiver

CONFIG = """
variable "names" {
  type = list(string)
}

resource "terraform_data" "fixed" {
  input = "s3cret-fixed-value"
}

resource "terraform_data" "each" {
  for_each = toset(var.names)
  input    = "s3cret-${each.key}"
}
"""


def _workspace(env: Env, name: str = "net") -> Path:
    src = env.root / f"{name}-src"
    src.mkdir()
    (src / "main.tf").write_text(CONFIG)
    env.ok("workspace", "create", name, "--dir", str(src))
    return src


def _apply(env: Env, workspace: str, names: list[str], task_id: int) -> None:
    env.ok("workspace", "var", "set", workspace, "names", json.dumps(names), "--hcl")
    env.ok("plan", workspace, "-q", code=2)
    env.ok("confirm-apply", str(task_id), "-q")


def _inventory(env: Env, *args: str) -> dict[str, dict[str, Any]]:
    return {r["address"]: r for r in env.ok("inventory", "list", *args, "--json").json()}


def _serial(env: Env, workspace: str) -> int:
    return int(env.ok("state", "versions", workspace, "--json").json()[-1]["serial"])


def test_the_inventory_follows_adds_and_removals_across_three_applies(any_env: Env) -> None:
    env = any_env
    _workspace(env)
    _apply(env, "net", ["a", "b"], 1)
    first = _inventory(env)
    assert sorted(first) == ['terraform_data.each["a"]', 'terraform_data.each["b"]', "terraform_data.fixed"]
    a = first['terraform_data.each["a"]']
    assert (a["workspace"], a["type"], a["name"], a["index"], a["mode"], a["module"]) == (
        "net", "terraform_data", "each", '"a"', "managed", None)
    assert a["provider"] == 'provider["terraform.io/builtin/terraform"]'
    assert a["id"] and a["removed_at"] is None and a["serial"] == _serial(env, "net")
    assert a["first_seen"] == a["last_seen"]

    _apply(env, "net", ["b", "c"], 2)
    second = _inventory(env)
    assert second['terraform_data.each["a"]']["removed_at"] is not None
    assert second['terraform_data.each["c"]']["removed_at"] is None
    b = second['terraform_data.each["b"]']
    assert b["first_seen"] == first['terraform_data.each["b"]']["first_seen"] and b["serial"] == _serial(env, "net")
    assert b["id"] == first['terraform_data.each["b"]']["id"]

    _apply(env, "net", ["c"], 3)
    third = _inventory(env)
    assert {k for k, v in third.items() if v["removed_at"] is None} == {'terraform_data.each["c"]',
                                                                      "terraform_data.fixed"}
    assert third['terraform_data.each["a"]']["removed_at"] == second['terraform_data.each["a"]']["removed_at"]
    # The table by default shows what is there now; --type and the workspace filter.
    shown = env.ok("inventory", "list", "net", "--type", "terraform_data").out
    assert 'terraform_data.each["c"]' in shown and 'terraform_data.each["a"]' not in shown
    assert env.ok("inventory", "list", "--type", "aws_instance", "--json").json() == []
    status = env.ok("inventory", "status", "net", "--json").json()
    assert (status["status"], status["serial"], status["error"]) == ("idle", _serial(env, "net"), None)
    entries = env.ok("outbox", "list", "--kind", "inventory", "--json").json()
    assert [(e["task"], e["status"]) for e in entries] == [(1, "delivered"), (2, "delivered"), (3, "delivered")]
    # X2: no attribute value but `id` is kept, in the output or in the store.
    listed = env.ok("inventory", "list", "--json").out
    assert "s3cret" not in listed
    if env.backend == "sqlite":
        raw = env.db_path.read_bytes()
        assert b"s3cret" not in raw
        # X1: the `id` comes from the state, encrypted at rest: shown by the list, never in clear in the file.
        assert third['terraform_data.each["c"]']["id"].encode() not in raw
    r = env.run("inventory", "list", "nope")
    assert r.code == 64 and r.err.splitlines() == ["iacctl: unknown workspace 'nope'"]


def test_the_records_are_posted_signed_to_the_inventory_url(env: Env) -> None:
    key = b"inventory-hmac-key"
    (env.root / "key").write_bytes(key + b"\n")
    _workspace(env)
    with running_receiver("ok", key) as receiver:
        env.ok("inventory", "endpoint", "set", receiver.url, "--hmac-key-file", str(env.root / "key"))
        _apply(env, "net", ["a"], 1)
        _apply(env, "net", [], 2)
        got = receiver.wait_for(2)
    assert receiver.rejected_signatures == 0
    for received in got:
        assert received.headers["X-TFE-Notification-Signature"] == hmac.new(key, received.body,
                                                                              hashlib.sha512).hexdigest()
    first, second = (g.payload for g in got)
    assert first["kind"] == "inventory" and first["workspace_name"] == "net" and first["task_id"] == 1
    assert [r["address"] for r in first["resources"]] == ['terraform_data.each["a"]', "terraform_data.fixed"]
    assert second["removed"] == ['terraform_data.each["a"]'] and second["serial"] > first["serial"]
    assert b"s3cret" not in got[0].body + got[1].body
    # Issue 19 item 7: the POST and `inventory list --json` name each field the same way.
    listed = {r["address"]: r for r in env.ok("inventory", "list", "--json").json()}
    posted = first["resources"][1]
    assert list(posted) == ["address", "module", "type", "name", "index", "provider", "mode", "id"]
    assert {k: listed["terraform_data.fixed"][k] for k in posted} == posted
    shown = env.ok("inventory", "endpoint", "show", "--json").json()
    assert shown["url"] == receiver.url and shown["hmac_key"] == "********"
    assert key.decode() not in env.ok("inventory", "endpoint", "show").out
    assert key not in env.db_path.read_bytes()  # X1: encrypted at rest


def test_a_sync_left_syncing_by_a_killed_process_is_reset_by_the_sweep(env: Env, processes: list[Any]) -> None:
    _workspace(env)
    env.ok("workspace", "var", "set", "net", "names", '["a"]', "--hcl")
    env.ok("plan", "net", "-q", code=2)
    with running_receiver("hang_first") as receiver:
        env.ok("inventory", "endpoint", "set", receiver.url)
        confirm = spawn(env, processes, "confirm-apply", "1", "-q")
        receiver.wait_for(1)  # the sync's POST is in the receiver's hands, unanswered
        assert env.ok("inventory", "status", "net", "--json").json()["status"] == "syncing"
        confirm.proc.kill()
        confirm.wait()
        receiver.release()
        assert env.task(1)["status"] == "applied"
        status = env.ok("inventory", "status", "net", "--json").json()
        assert (status["status"], status["serial"]) == ("syncing", None)  # left behind by the killed process
        assert env.ok("inventory", "list", "--json").json() == []
        actions = env.ok("pods", "recover", "--json").json()
        receiver.wait_for(2)
    kinds = [(a["action"], a["workspace"], a["task"]) for a in actions]
    assert kinds == [("inventory_reset", "net", None), ("inventory_synced", "net", 1)]
    assert actions[0]["detail"].startswith("sync of serial ") and "is gone" in actions[0]["detail"]
    status = env.ok("inventory", "status", "net", "--json").json()
    assert (status["status"], status["serial"]) == ("idle", _serial(env, "net"))
    assert sorted(_inventory(env)) == ['terraform_data.each["a"]', "terraform_data.fixed"]
    assert [a for a in env.ok("pods", "recover", "--json").json() if a["action"].startswith("inventory")] == []


def test_a_sync_of_an_older_serial_is_not_applied(env: Env) -> None:
    _workspace(env)
    with running_receiver("down") as receiver:
        env.ok("inventory", "endpoint", "set", receiver.url)
        _apply(env, "net", ["a"], 1)  # its sync cannot reach the URL: it waits for a retry
    [entry] = env.ok("outbox", "list", "--kind", "inventory", "--json").json()
    assert entry["status"] == "pending" and "inventory URL: cannot connect" in entry["last_error"]
    assert env.ok("inventory", "list", "--json").json() == []
    env.ok("inventory", "endpoint", "remove")
    _apply(env, "net", ["b"], 2)  # a newer state, synced at once
    newest = _serial(env, "net")
    assert sorted(_inventory(env)) == ['terraform_data.each["b"]', "terraform_data.fixed"]

    app = env.app()
    try:
        with app.store.write() as session:  # the clock moves on: the first sync is due again
            session.execute(update(OutboxEntry).where(col(OutboxEntry.id) == entry["id"]).values(next_attempt_at=0))
    finally:
        app.close()
    actions = env.ok("pods", "recover", "--json").json()
    [skipped] = [a for a in actions if a["action"] == "inventory_skipped"]
    assert skipped["task"] == 1
    assert f"is not newer than the last synced one ({newest}): not applied" in skipped["detail"]
    got = _inventory(env)
    assert {k for k, v in got.items() if v["removed_at"] is None} == {'terraform_data.each["b"]',
                                                                     "terraform_data.fixed"}
    assert {v["serial"] for v in got.values()} == {newest}
