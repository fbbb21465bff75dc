"""`iacctl drift check --all` over 30 workspaces against the same refresh-only plans run by hand
one after another (issue 12 item 5), in one run:

    python bench/drift.py [--workspaces 30] [--rounds 2] [--write BENCHMARKS.md]

Set-up (not timed): one store with N workspaces of tests/fixtures/terraform/drift (two files
managed by the test provider in tests/fixtures/drift_provider, installed from a local filesystem
mirror), each planned and applied by iacctl; every fifth workspace then has a file changed
behind its back, so those checks find drift. For the hand-run side each workspace gets a
directory with the same configuration and the state iacctl stored (`iacctl state pull`).

Timed, in alternating order each round: `iacctl drift check --all -q` (as many checks at once
as the local pool's running places allow: 3), and by hand, one workspace after the other, what
a check runs: `terraform init`, `terraform plan -refresh-only -detailed-exitcode -out=tfplan`,
`terraform show -json tfplan`. Medians of wall-clock time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from run import write_section  # noqa: E402  (bench/run.py, beside this script)
from tests.fixtures.drift_provider import install  # noqa: E402

SECTION_START = "<!-- drift-bench -->"
SECTION_END = "<!-- /drift-bench -->"
CONFIG = REPO / "tests" / "fixtures" / "terraform" / "drift"


def iacctl(argv: list[str], env: dict[str, str], cwd: Path, expect: tuple[int, ...] = (0,)) -> float:
    start = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).parent / "iacctl"), *argv], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=1800)
    took = time.perf_counter() - start
    if proc.returncode not in expect:
        raise SystemExit(f"iacctl {' '.join(argv)} exited {proc.returncode}, expected {expect}\n{proc.stdout}\n"
                         f"{proc.stderr}")
    return took


def terraform(argv: list[str], env: dict[str, str], cwd: Path, expect: tuple[int, ...] = (0,)) -> None:
    proc = subprocess.run(["terraform", *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    if proc.returncode not in expect:
        raise SystemExit(f"terraform {' '.join(argv)} in {cwd} exited {proc.returncode}\n{proc.stderr}")


def set_up(root: Path, count: int, env: dict[str, str]) -> list[tuple[str, Path, Path]]:
    """N applied workspaces; returns (name, data directory, hand-run directory) of each."""
    out = []
    for i in range(count):
        name = f"w{i:02}"
        src, data, hand = root / "src" / name, root / "data" / name, root / "hand" / name
        shutil.copytree(CONFIG, src)
        data.mkdir(parents=True)
        iacctl(["workspace", "create", name, "--dir", str(src)], env, root)
        iacctl(["workspace", "var", "set", name, "dir", str(data)], env, root)
        iacctl(["plan", name, "-q"], env, root, (2,))
        iacctl(["confirm-apply", str(i + 1), "-q"], env, root)
        if i % 5 == 4:
            (data / "a.txt").write_text("changed behind iacctl's back")
        shutil.copytree(CONFIG, hand)
        state = subprocess.run([str(Path(sys.executable).parent / "iacctl"), "state", "pull", name], env=env,
                               cwd=root, capture_output=True, timeout=120, check=True).stdout
        (hand / "terraform.tfstate").write_bytes(state)
        out.append((name, data, hand))
        print(f"set up {name}", flush=True)
    return out


def by_hand(workspaces: list[tuple[str, Path, Path]], env: dict[str, str]) -> float:
    start = time.perf_counter()
    for _name, data, hand in workspaces:
        shutil.rmtree(hand / ".terraform", ignore_errors=True)
        terraform(["init", "-input=false", "-no-color"], env, hand)
        terraform(["plan", "-input=false", "-no-color", "-refresh-only", "-detailed-exitcode", "-out=tfplan",
                   f"-var=dir={data}"], env, hand, (0, 2))
        terraform(["show", "-json", "-no-color", "tfplan"], env, hand)
    return time.perf_counter() - start


def section(results: dict[str, list[float]], count: int, rounds: int, argv: str,
            load: tuple[float, float] = (0.0, 0.0)) -> str:
    hand = statistics.median(results["hand"])
    tool = statistics.median(results["iacctl"])
    lines = [SECTION_START, "## Drift checks: `drift check --all` against refresh-only plans by hand (issue 12)", "",
             f"Run with `python bench/drift.py {argv}` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC "
             f"({platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}). "
             f"{count} workspaces of `tests/fixtures/terraform/drift` (two files managed by the Python test "
             f"provider, installed from a local filesystem mirror), every fifth drifted; medians over {rounds} "
             "rounds, the two sides in alternating order in one run. The machine has 2 cores and may have "
             "been loaded by other test runs at the same time (1-minute load average "
             f"{load[0]:.1f} when the run started, {load[1]:.1f} when it ended): read the ratio, not the "
             "seconds.", "",
             "| side | median | per workspace | min - max |", "| --- | --- | --- | --- |",
             f"| by hand, one after another: init + plan -refresh-only -out + show -json | {hand:.1f} s | "
             f"{hand / count:.2f} s | {min(results['hand']):.1f} - {max(results['hand']):.1f} s |",
             f"| `iacctl drift check --all` (3 at once, the local pool's running places) | {tool:.1f} s | "
             f"{tool / count:.2f} s | {min(results['iacctl']):.1f} - {max(results['iacctl']):.1f} s |",
             "", f"Ratio iacctl / by hand: {tool / hand:.2f}x.", "",
             "Reading it: each check does what the hand-run side does (a fresh work directory, init, the "
             "refresh-only plan saved with -out, show -json) plus iacctl's own work: the config snapshot "
             "and state written into the slot, the plan file and its JSON encrypted into the store, the drift "
             "record and its notification in the task's last transaction. Three checks run at once, so on "
             "two cores the Terraform and provider processes of three workspaces share them; the gain over "
             "one-after-another is what the cores allow, not 3x. The test provider is Python (about half a "
             "second to start per Terraform command), which weighs on both sides alike.", SECTION_END]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspaces", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("IACCTL_", "TF_", "XDG_"))}
    base["NO_COLOR"] = "1"
    results: dict[str, list[float]] = {"hand": [], "iacctl": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base["HOME"] = str(root / "home")
        (root / "home").mkdir()
        base["TF_CLI_CONFIG_FILE"] = str(install(root / "provider"))
        env = {**base, "IACCTL_DB": str(root / "store.db"), "IACCTL_CONFIG_DIR": str(root / "config"),
               "IACCTL_WORK_ROOT": str(root / "work")}
        load_at_start = os.getloadavg()[0]
        workspaces = set_up(root, args.workspaces, env)
        for i in range(args.rounds):
            for side in (("hand", "iacctl") if i % 2 == 0 else ("iacctl", "hand")):
                if side == "hand":
                    took = by_hand(workspaces, base)
                else:
                    took = iacctl(["drift", "check", "--all", "-q"], env, root, (0, 2))
                results[side].append(took)
                print(f"round {i + 1} {side}: {took:.1f} s", flush=True)
    text = section(results, args.workspaces, args.rounds, " ".join(sys.argv[1:]),
                   (load_at_start, os.getloadavg()[0]))
    print(text)
    if args.write:
        write_section(args.write, text, SECTION_START, SECTION_END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
