"""Secrets at rest (SPEC X1, X2): sensitive variables, state, plans and logs are encrypted with
AES-256-GCM; the raw database files hold none of them."""

from __future__ import annotations

import json
import os
import stat

from tests.conftest import Env

SENSITIVE = "hunter2-xyzzy-9431"


def _raw_store_bytes(env: Env) -> bytes:
    data = b""
    for suffix in ("", "-wal", "-shm"):
        path = env.db_path.with_name(env.db_path.name + suffix)
        if path.exists():
            data += path.read_bytes()
    return data


def test_raw_database_holds_no_secret_and_no_state_string(env: Env) -> None:
    env.workspace("net")
    env.ok("workspace", "var", "set", "net", "region", "marker-7f3a")
    env.ok("workspace", "var", "set", "net", "db_password", "-", "--sensitive", input=SENSITIVE + "\n")
    env.ok("plan", "net", code=2)
    env.ok("confirm-apply", "1")
    state = json.loads(env.ok("state", "pull", "net").out)
    resources = {r["name"]: r["instances"][0]["attributes"] for r in state["resources"]}
    from_state = [resources["net"]["id"], resources["db"]["id"], "net-marker-7f3a", state["lineage"]]
    assert resources["net"]["output"]["value"] == "net-marker-7f3a"
    assert resources["db"]["output"]["value"] == f"db-{SENSITIVE}"  # Terraform got the real value

    raw = _raw_store_bytes(env)
    assert len(raw) > 10_000
    assert SENSITIVE.encode() not in raw
    for value in from_state:
        assert value.encode() not in raw, f"{value} from the state is stored in clear"
    # A plain variable is stored as given (it is not a secret) ...
    assert b"marker-7f3a" in raw


def test_sensitive_values_are_never_printed(env: Env) -> None:
    env.workspace("net")
    env.ok("workspace", "var", "set", "net", "db_password", SENSITIVE, "--sensitive")
    outputs = [
        env.ok("plan", "net", code=2),
        env.ok("workspace", "show", "net", "--json"),
        env.ok("workspace", "show", "net"),
        env.ok("workspace", "var", "list", "net", "--json"),
        env.ok("tasks", "show", "1", "--json"),
        env.ok("tasks", "logs", "1"),
        env.ok("confirm-apply", "1"),
        env.ok("tasks", "logs", "1"),
    ]
    for r in outputs:
        assert SENSITIVE not in r.out + r.err
    assert "(sensitive value)" in outputs[5].out
    var = env.ok("workspace", "var", "list", "net", "--json").json()[0]
    assert var == {"key": "db_password", "category": "terraform", "sensitive": True, "hcl": False, "value": None}


def test_key_file_is_private_and_another_key_cannot_read(env: Env) -> None:
    env.workspace("net")
    env.ok("workspace", "var", "set", "net", "db_password", SENSITIVE, "--sensitive")
    key = env.root / "config" / "secret.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    r = env.run("plan", "net", extra_env={"IACCTL_SECRET_KEY": "another key entirely"})
    assert r.code == 5  # issue 18 item 7: refused at open, before anything is written
    assert r.err.strip().splitlines() == [
        f"iacctl: the secret key of this machine (IACCTL_SECRET_KEY) is not the key of the store {env.db_path}; "
        "nothing was changed; set IACCTL_SECRET_KEY to the team's key, or copy the key file of a machine that "
        f"uses this store to {key}"
    ]
    assert env.tasks() == []  # refused before any task was written


# Issue 24 item 4: terraform_data's `output` copies its input without Terraform's sensitive mark,
# so a plan after a secret is rotated or unset shows the old value as the "before" of a change.
ROTATING = """
variable "pw" {
  type      = string
  sensitive = true
}
resource "terraform_data" "s" {
  input = var.pw
}
"""


def _config(env: Env, text: str) -> str:
    path = env.root / "cfg"
    path.mkdir(exist_ok=True)
    (path / "main.tf").write_text(text)
    return str(path)


def _everything_shown(env: Env, task_ids: range) -> str:
    shown = []
    for task_id in task_ids:
        for args in (("tasks", "plan", str(task_id)), ("tasks", "plan", str(task_id), "--json"),
                     ("tasks", "plan", str(task_id), "--format", "markdown"),
                     ("tasks", "logs", str(task_id)), ("tasks", "show", str(task_id)),
                     ("tasks", "show", str(task_id), "--json")):
            r = env.run(*args)
            shown.append(r.out + r.err)
    for args in (("workspace", "var", "list", "w", "--json"), ("workspace", "show", "w", "--json"),
                 ("tasks", "list", "--json"), ("outbox", "list", "--json")):
        r = env.ok(*args)
        shown.append(r.out + r.err)
    return "\n".join(shown)


def test_a_rotated_secret_is_masked_everywhere_after_and_stored_encrypted(env: Env) -> None:
    values = ["former-one-5d1c", "former-two-a93e", "current-three-0b77"]
    env.ok("workspace", "create", "w", "--dir", _config(env, ROTATING))
    commands = []
    summary = env.root / "job-summary.md"  # issue 24 item 3: the GitHub job summary gets the review
    ci = {"GITHUB_STEP_SUMMARY": str(summary)}
    for task_id, value in enumerate(values, start=1):
        env.ok("workspace", "var", "set", "w", "pw", value, "--sensitive")
        commands.append(env.ok("plan", "w", code=2, extra_env=ci))
        commands.append(env.ok("confirm-apply", str(task_id), extra_env=ci))
    # The plans of tasks 2 and 3 change the output from the value before: it is there, masked.
    for task_id in (2, 3):
        review = env.ok("tasks", "plan", str(task_id)).out
        assert 'output: "(sensitive value)" -> (known after apply)' in review
        assert '~ output = "(sensitive value)" -> (known after apply)' in env.ok("tasks", "logs", str(task_id)).out
    assert "(sensitive value)" in summary.read_text()
    shown = _everything_shown(env, range(1, 4)) + "".join(r.out + r.err for r in commands) + summary.read_text()
    for value in values:
        assert value not in shown
    raw = _raw_store_bytes(env)
    for value in values:
        assert value.encode() not in raw  # X1: the former values are kept encrypted
    # Terraform got each value as it was set (the state holds the current one).
    state = json.loads(env.ok("state", "pull", "w").out)
    assert state["resources"][0]["instances"][0]["attributes"]["output"]["value"] == values[-1]


# The variable goes from the configuration: the resource now takes a plain value, and the old
# instance is replaced (triggers_replace); its destroy-time provisioner fails and prints the
# output it had, which was the secret. The plan and the task's error must mask it.
UNSET_BEFORE = """
variable "pw" {
  type      = string
  sensitive = true
}
resource "terraform_data" "s" {
  input            = var.pw
  triggers_replace = "v1"
  provisioner "local-exec" {
    when    = destroy
    command = "echo gone: ${self.output}; exit 1"
  }
}
"""
UNSET_AFTER = """
resource "terraform_data" "s" {
  input            = "plain-now"
  triggers_replace = "v2"
  provisioner "local-exec" {
    when    = destroy
    command = "echo gone: ${self.output}; exit 1"
  }
}
"""


def test_an_unset_secret_stays_masked_in_the_plan_and_the_error_that_show_it(env: Env) -> None:
    secret = "unset-secret-e41f"
    env.ok("workspace", "create", "w", "--dir", _config(env, UNSET_BEFORE))
    env.ok("workspace", "var", "set", "w", "pw", secret, "--sensitive")
    commands = [env.ok("plan", "w", code=2), env.ok("confirm-apply", "1")]
    env.ok("workspace", "var", "unset", "w", "pw")
    _config(env, UNSET_AFTER)
    commands.append(env.ok("plan", "w", code=2))
    [change] = env.ok("tasks", "plan", "2", "--json").json()["resource_changes"]
    assert change["change"]["actions"] == ["delete", "create"]
    assert change["change"]["before"]["output"] == "(sensitive value)"
    assert 'output: "(sensitive value)" -> (known after apply)' in env.ok("tasks", "plan", "2").out
    commands.append(env.run("confirm-apply", "2"))
    assert commands[-1].code == 1
    task = env.task(2)
    assert task["status"] == "failed"
    assert "gone: (sensitive value)" in task["error"]
    shown = _everything_shown(env, range(1, 3)) + "".join(r.out + r.err for r in commands)
    assert secret not in shown
    assert secret.encode() not in _raw_store_bytes(env)
