"""The house rules, checked (STYLE): layers by import-linter, ruff lint, mypy --strict, and a
quick `iacctl --help` that imports none of the heavy packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_layers_are_kept() -> None:
    r = _run(str(BIN / "lint-imports"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "broken" not in r.stdout.split("Contracts:")[-1].replace("0 broken", "")


def test_ruff_is_clean() -> None:
    r = _run(str(BIN / "ruff"), "check", "src", "tests", "bench")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict_is_clean() -> None:
    r = _run(sys.executable, "-m", "mypy")
    assert r.returncode == 0, r.stdout + r.stderr


def test_help_imports_no_heavy_package() -> None:
    code = (
        "import sys; sys.argv = ['iacctl', '--help']\n"
        "from iacctl.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('sqlmodel', 'sqlalchemy', 'kubernetes', 'fastapi', 'alembic', 'cryptography')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in r.stdout, r.stdout + r.stderr
    assert "Exit codes: 0 done" in r.stdout


def test_every_services_module_has_a_place_in_the_services_layers() -> None:
    """Issue 8 item 8: the services read top-down. A module left out of the layers contract would
    escape it, so a new one must be given its floor in pyproject.toml."""
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in contracts if c["name"].startswith("Services read top-down"))
    placed = {name.strip() for layer in layers for name in layer.split("|")}
    modules = {f"iacctl.services.{p.stem}" for p in (ROOT / "src" / "iacctl" / "services").glob("*.py")
               if p.stem != "__init__"}
    assert modules - placed == set()


def _services_floor() -> dict[str, int]:
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in contracts if c["name"].startswith("Services read top-down"))
    return {name.strip(): floor for floor, layer in enumerate(layers) for name in layer.split("|")}


def test_no_import_inside_a_function_dodges_the_services_layers() -> None:
    """Issue 8 item 8: no `from iacctl.services ...` inside a function of a services module to
    dodge a circle. Issue 20: a command imports only what it uses, so a function may import a
    module of a strictly lower floor (one it could import at the top without a circle)."""
    import re

    floor = _services_floor()
    offenders = []
    for p in (ROOT / "src" / "iacctl" / "services").glob("*.py"):
        mine = floor.get(f"iacctl.services.{p.stem}", -1)
        for n, line in enumerate(p.read_text().splitlines(), 1):
            text = line.strip()
            lazy = line.startswith((" ", "\t"))
            if not (lazy and text.startswith(("from iacctl.services", "import iacctl.services"))):
                continue
            m = re.match(r"from iacctl\.services(?:\.(\w+))? import ([\w, ]+)", text.split("#")[0].strip())
            names = ([m.group(1)] if m and m.group(1) else [x.strip() for x in m.group(2).split(",")]) if m else []
            if not names or any(floor.get(f"iacctl.services.{name}", -1) <= mine for name in names):
                offenders.append(f"{p.name}:{n}")
    assert offenders == []
