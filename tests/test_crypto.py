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
