"""Issue 9 item 8: global options wherever a user puts them. The argument list the parser gets
(pure: no store, no subprocess)."""

from __future__ import annotations

import typer

from iacctl.cli.main import build_app, hoist_global_options

ROOT = typer.main.get_command(build_app())


def hoisted(*args: str) -> list[str]:
    front, rest = hoist_global_options(ROOT, list(args))
    return front + rest


def test_db_and_verbose_after_the_command_go_before_it() -> None:
    assert hoisted("tasks", "list", "--db", "s.db", "--verbose") == ["--db", "s.db", "--verbose", "tasks", "list"]
    assert hoisted("plan", "net", "--db=s.db") == ["--db=s.db", "plan", "net"]


def test_json_before_the_command_goes_after_it() -> None:
    assert hoisted("--json", "tasks", "show", "1") == ["tasks", "show", "1", "--json"]
    assert hoisted("tasks", "--json", "list", "--", "x") == ["tasks", "list", "--json", "--", "x"]


def test_values_of_the_commands_own_options_are_left_alone() -> None:
    args = ["workspace", "lock", "net", "--reason", "--verbose"]
    assert hoisted(*args) == args
    assert hoisted("workspace", "var", "set", "net", "k", "--", "--db") == [
        "workspace", "var", "set", "net", "k", "--", "--db"]
