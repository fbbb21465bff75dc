"""Issue 21 item 7: the README's tour runs as printed, from the top of a checkout with the
shipped examples/net/, and prints what the README shows (hashes, ids, times, paths and the
user aside; `[…]` stands for lines left out)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import Env

REPO = Path(__file__).resolve().parents[2]

VARYING = [
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "UUID"),
    (re.compile(r"\b[0-9a-f]{12,64}\b"), "HASH"),
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\dZ)?"), "TIME"),
    (re.compile(r"planned \d+s ago"), "planned AGO"),
    (re.compile(r"by \S+@\S+?:"), "by USER:"),
]


def _normal(line: str, root: str) -> str:
    line = line.replace(root, "/home/me/proj")
    for pattern, token in VARYING:
        line = pattern.sub(token, line)
    return re.sub(r" {2,}", "  ", line.rstrip())


def tour_steps() -> list[tuple[str, list[str]]]:
    readme = (REPO / "README.md").read_text()
    tour = readme.split("\n## A tour\n", 1)[1].split("\n## ", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", tour, flags=re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line)
    return steps


def test_the_readme_tour_runs_as_printed(env: Env) -> None:
    shutil.copytree(REPO / "examples", env.root / "examples")
    vars = {**env.vars, "PATH": f"{Path(sys.executable).parent}:{env.vars['PATH']}"}
    steps = tour_steps()
    assert len(steps) >= 10 and steps[0][0] == "iacctl workspace create net --dir examples/net"
    root = str(env.root)
    last = 0
    for command, expected in steps:
        if command == "echo $?":
            assert expected == [str(last)], (command, expected, last)
            continue
        proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=vars, cwd=env.root,
                              timeout=180)
        last = proc.returncode
        assert last in (0, 2), (command, proc.stdout, proc.stderr)
        got = [_normal(line, root) for line in (proc.stderr + proc.stdout).splitlines()]
        want = [_normal(line, root) for line in expected]
        if "[…]" not in want:
            assert sorted(got) == sorted(want), (command, got, want)
            continue
        # Each printed line appears, in the README's order among stdout's and stderr's own.
        for line in (w for w in want if w != "[…]"):
            assert line in got, (command, line, got)
