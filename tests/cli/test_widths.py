"""Issue 21 item 1: on a terminal of any width from 60 columns, the listings show every resource
address and action whole (columns wrap, less important ones are left out, rows are stacked);
--wide shows every column."""

from __future__ import annotations

import re

from tests.conftest import Env
from tests.terminal import run_on_a_terminal

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

LONG = "terraform_data.database_primary_replica_in_the_second_region"
OTHER = "terraform_data.application_server_behind_the_load_balancer"

CONFIG = """
resource "terraform_data" "database_primary_replica_in_the_second_region" {
  input = "db"
}
resource "terraform_data" "application_server_behind_the_load_balancer" {
  input = "%s"
}
"""


def _screen(env: Env, *args: str, columns: int) -> list[str]:
    code, text = run_on_a_terminal(env, *args, columns=columns)
    assert code == 0, text
    return [ANSI.sub("", line).rstrip() for line in text.replace("\r", "").splitlines()]


def _whole(lines: list[str], *words: str) -> None:
    for word in words:
        assert any(word in line for line in lines), (word, lines)


def test_listings_keep_addresses_and_actions_whole_at_60_80_and_100_columns(env: Env) -> None:
    src = env.root / "cfg"
    src.mkdir()
    (src / "main.tf").write_text(CONFIG % "v1")
    env.ok("workspace", "create", "net", "--dir", str(src))
    env.ok("plan", "net", "-q", code=2)
    env.ok("confirm-apply", "1", "-q")
    # The review that matters: one resource deleted, one updated in place.
    (src / "main.tf").write_text(CONFIG.split("resource", 2)[0] + "resource" + CONFIG.split("resource", 2)[2] % "v2")
    env.ok("plan", "net", "-q", code=2)

    for columns in (60, 80, 100):
        plan = _screen(env, "tasks", "plan", "2", columns=columns)
        assert any(LONG in line and "delete" in line for line in plan) or (
            f"ADDRESS: {LONG}" in plan and "ACTION: delete" in plan), plan
        _whole(plan, OTHER, "update")

        inventory = _screen(env, "inventory", "list", columns=columns)
        _whole(inventory, LONG, OTHER, "net")
        assert all(len(line) <= columns for line in inventory if LONG not in line and OTHER not in line), \
            "\n".join(inventory)

        listing = _screen(env, "tasks", "list", columns=columns)
        _whole(listing, "plan+apply", "apply_pending", "applied")
        assert all(len(line) <= columns for line in listing), "\n".join(listing)

        pods = _screen(env, "pods", "list", columns=columns)
        _whole(pods, "local", "ready", "(task 2)")

        workspaces = _screen(env, "workspace", "list", columns=columns)
        _whole(workspaces, "net", "locked by task 2")
        assert all(len(line) <= columns for line in workspaces), "\n".join(workspaces)

    # At 80 columns the inventory leaves columns out and says so; --wide shows them all.
    narrow = _screen(env, "inventory", "list", columns=80)
    assert any("left out at this width: --wide shows them" in line for line in narrow), narrow
    wide = _screen(env, "inventory", "list", "--wide", columns=80)
    assert wide[0].split() == ["WORKSPACE", "ADDRESS", "ID", "SERIAL", "FIRST", "SEEN", "LAST", "SEEN", "REMOVED"]
