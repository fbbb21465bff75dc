"""Issue 21 item 5: help for people. Every command's --help (read in-process, so the walk is
fast) describes every option and argument, shows no internal integer ranges and no requirement
codes; one completion mechanism (the shipped scripts); `iacctl version`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import typer
from typer.testing import CliRunner

from iacctl.cli.main import build_app

RANGE = re.compile(r"-?\d+<=x|x<=-?\d+|x>=-?\d+")
# Requirement codes of the SPEC (S3, L6, C1...), seeds and issue numbers are for the code, not users.
INTERNAL = re.compile(r"\((?:[SLECRFXHMO]\d+\b|seed)|\bseed \d+|\bissue \d+|\b[SLECRFXHMO]\d+[:;)]")


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if not sub.hidden:
            yield from _commands(sub, (*path, name))


def test_every_command_describes_every_parameter_without_ranges_or_internal_tags() -> None:
    app = build_app()
    root = typer.main.get_command(app)
    runner = CliRunner()
    problems = []
    walked = 0
    for path, command in _commands(root):
        walked += 1
        for param in command.params:
            if getattr(param, "hidden", False) or param.name in ("help",):
                continue
            if not (getattr(param, "help", None) or "").strip():
                problems.append(f"iacctl {' '.join(path)}: {param.opts[0] if param.opts else param.name} "
                                "has no description")
        result = runner.invoke(app, [*path, "--help"], prog_name="iacctl", terminal_width=200)
        assert result.exit_code == 0, (path, result.output)
        text = result.output
        if RANGE.search(text):
            problems.append(f"iacctl {' '.join(path)} --help shows a range: {RANGE.search(text).group(0)}")  # type: ignore[union-attr]
        found = INTERNAL.search(text)
        if found:
            problems.append(f"iacctl {' '.join(path)} --help shows an internal tag: {found.group(0)}")
        if not path:
            assert "--install-completion" not in text and "--show-completion" not in text
            assert "version" in text
    assert walked > 60
    assert not problems, "\n".join(problems)


def test_version_command_and_option_agree() -> None:
    from iacctl import __version__

    runner = CliRunner()
    app = build_app()
    assert runner.invoke(app, ["version"], prog_name="iacctl").output == f"iacctl {__version__}\n"
    assert runner.invoke(app, ["--version"], prog_name="iacctl").output == f"iacctl {__version__}\n"
