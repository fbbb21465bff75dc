"""The user documentation stays true to the CLI (SPEC C6): the man page and the shell completions
know every command `iacctl --help` lists, and the README's set-up and test commands are the ones
CI runs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Env

REPO = Path(__file__).resolve().parents[2]


def top_level_commands(env: Env) -> list[str]:
    help_text = env.ok("--help").out
    section = help_text.split("\nCommands:\n", 1)[1]
    names = []
    for line in section.splitlines():
        m = re.match(r"^  ([a-z][a-z0-9-]*)(\s|$)", line)
        if not m:
            break
        names.append(m.group(1))
    return names


@pytest.fixture(scope="module")
def commands(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    from tests.conftest import _base_vars

    root = tmp_path_factory.mktemp("docs")
    names = top_level_commands(Env(root=root, vars=_base_vars(root)))
    assert {"plan", "confirm-apply", "cancel", "workspace", "tasks", "state", "pods"} <= set(names), names
    return names


def test_man_page_has_a_section_for_every_command(commands: list[str]) -> None:
    man = (REPO / "man" / "iacctl.1").read_text().replace("\\-", "-")
    sections = re.findall(r"^\.SS (\S+)$", man, flags=re.M)
    assert sections == commands
    for heading in ("EXIT STATUS", "ENVIRONMENT", "FILES"):
        assert f"\n.SH {heading}\n" in man
    for code in ("0", "1", "2", "3", "4", "5", "64"):
        assert f"\n.TP\n.B {code}\n" in man


def test_completions_offer_every_command(commands: list[str]) -> None:
    bash = (REPO / "completions" / "iacctl.bash").read_text()
    assert f"['iacctl']='{' '.join(commands)}'" in bash
    zsh = (REPO / "completions" / "_iacctl").read_text()
    assert zsh.startswith("#compdef iacctl\n")
    root_entries = re.search(r"^    'iacctl' '(.*?)'\n    '", zsh, flags=re.M | re.S)
    assert root_entries, "no top-level entries in completions/_iacctl"
    assert [entry.split(":", 1)[0] for entry in root_entries.group(1).splitlines()] == commands
    fish = (REPO / "completions" / "iacctl.fish").read_text()
    for name in commands:
        assert f"complete -c iacctl -n '__iacctl_at iacctl' -a '{name}' " in fish, name


def _complete_in_bash(*words: str) -> list[str]:
    """What TAB offers after `words` (the last one is the word being completed)."""
    script = (f"source {REPO / 'completions' / 'iacctl.bash'}\n"
              f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
              "_iacctl; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line]


def test_bash_completion_offers_commands_and_options(commands: list[str]) -> None:
    assert _complete_in_bash("iacctl", "") == commands
    assert _complete_in_bash("iacctl", "--db", "x.db", "workspace", "var", "") == ["set", "unset", "list"]
    assert _complete_in_bash("iacctl", "confirm-apply", "1", "--r") == ["--rebuild"]


def _readme_command(heading: str) -> str:
    readme = (REPO / "README.md").read_text()
    m = re.search(rf"^##+ {re.escape(heading)}\n\n```sh\n(.*?)```", readme, flags=re.M | re.S)
    assert m, f"README.md has no ```sh block right under the heading '{heading}'"
    lines = [line for line in m.group(1).splitlines() if line.strip()]
    assert len(lines) == 1, f"'## {heading}' must give exactly one command, not {lines}"
    return lines[0]


def test_readme_gives_the_commands_ci_runs() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    steps = [line.strip() for line in ci.splitlines()
             if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))]
    assert steps == [_readme_command("Set up"), _readme_command("Run the tests")]
    assert steps == ["./setup.sh", "./run-tests.sh"]
    for script in (".ci/run", "setup.sh", "run-tests.sh"):
        path = REPO / script
        assert path.stat().st_mode & 0o111, f"{script} is not executable"
        assert path.read_text().startswith("#!/usr/bin/env bash\n")


def test_completions_and_man_page_are_current() -> None:
    """Every option of every command, not only the command names: regenerate them after a change
    (`completions/generate.py`)."""
    import sys

    r = subprocess.run([sys.executable, str(REPO / "completions" / "generate.py"), "--check"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
