"""E8: iacctl keeps the state; a configuration that names a remote backend still runs with a
local state file in the slot, stored by iacctl (no network, no credentials needed)."""

from __future__ import annotations

from tests.conftest import Env


def test_a_remote_backend_in_the_configuration_is_overridden(env: Env) -> None:
    src = env.config("simple", into="src")
    (src / "backend.tf").write_text(
        'terraform {\n  backend "s3" {\n    bucket = "somewhere"\n    key = "net.tfstate"\n'
        '    region = "eu-west-1"\n  }\n}\n'
    )
    env.ok("workspace", "create", "net", "--dir", str(src))
    env.ok("plan", "net", code=2)
    env.ok("confirm-apply", "1")
    assert len(env.ok("state", "versions", "net", "--json").json()) == 1
    assert not (src / "terraform.tfstate").exists()  # the user's directory is never written
    env.ok("plan", "net", code=0)
