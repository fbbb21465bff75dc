"""iacctl against the same Terraform steps done by hand, side by side in one run.

    python bench/run.py [--rounds 5] [--resources 200] [--write BENCHMARKS.md]

Both sides run against a configuration of N `null_resource`s whose `null` provider comes from
a local filesystem mirror in packed (zip) layout (bench/make_config.py), with the same
TF_CLI_CONFIG_FILE, so `terraform init` does real work and nothing touches the network.

Each round, in alternating order:
- by hand: a fresh copy of the configuration; `terraform init`, `terraform plan -out=plan.out`,
  `terraform apply plan.out`;
- iacctl: a fresh workspace on the same configuration (the counterpart of the fresh copy, not
  timed); `iacctl plan WS` (exit 2) and `iacctl confirm-apply ID` (exit 0, same-slot fast path).
Both create the N resources from nothing: the same Terraform work.

Rebuild rounds: by hand, init + apply of the saved plan in another fresh copy; iacctl,
`confirm-apply --rebuild` (work directory rebuilt from the store, init, plan hash verified).

Goals (issue 2, item 12): (a) plan + confirm-apply <= 1.25x the hand-run total; (b) confirm-apply
in the same slot <= 0.5 s more than a bare `terraform apply plan.out`; (c) `iacctl --help`
<= 0.15 s and `iacctl tasks list --json` with 10,000 tasks <= 1 s. Medians of wall-clock time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import make_config

_SCRUB = ("TF_", "IACCTL_", "XDG_")


def timed(argv: list[str], cwd: Path | None, env: dict[str, str], expect: int = 0) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    if proc.returncode != expect:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}, expected {expect}\n{proc.stdout}\n{proc.stderr}")
    return seconds, proc.stdout


def iacctl_cmd() -> list[str]:
    return [str(Path(sys.executable).parent / "iacctl")]


def machine() -> dict[str, str]:
    cpu = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    mem = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M)
    tf = subprocess.run(["terraform", "version"], capture_output=True, text=True).stdout.splitlines()[0]
    return {
        "cpu": cpu.group(1).strip() if cpu else platform.processor(),
        "cores": str(os.cpu_count()),
        "memory": f"{int(mem.group(1)) / 1024 / 1024:.1f} GiB" if mem else "?",
        "python": platform.python_version(),
        "terraform": tf,
        "os": platform.platform(),
    }


def clean_env(cli_config: Path) -> dict[str, str]:
    """This environment without the caller's Terraform, iacctl and XDG settings, with the
    benchmark's CLI configuration (the local provider mirror) and no update checks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    env["TF_CLI_CONFIG_FILE"] = str(cli_config)
    env["CHECKPOINT_DISABLE"] = "1"
    return env


def write_section(path: Path, text: str, start: str, end: str) -> None:
    """Replace the section between the markers `start` and `end` in BENCHMARKS.md with `text`
    (which carries the markers), or add it at the end: each benchmark script keeps its own."""
    previous = path.read_text() if path.exists() else "# Benchmarks\n\n<!-- notes -->\n"
    if start in previous and end in previous:
        head, rest = previous.split(start, 1)
        path.write_text(head + text + rest.split(end, 1)[1])
        return
    path.write_text(previous.rstrip("\n") + "\n\n" + text + "\n")


def hand_round(config: Path, work: Path, env: dict[str, str], rebuild: bool) -> dict[str, float]:
    shutil.copytree(config, work)
    r: dict[str, float] = {}
    r["init"], _ = timed(["terraform", "init", "-input=false"], work, env)
    r["plan"], _ = timed(["terraform", "plan", "-input=false", "-out=plan.out"], work, env)
    if rebuild:
        # The counterpart of --rebuild: the saved plan applied from another fresh directory.
        other = work.with_name(work.name + "-rebuilt")
        shutil.copytree(config, other)
        shutil.copy2(work / "plan.out", other / "plan.out")
        shutil.copy2(work / ".terraform.lock.hcl", other / ".terraform.lock.hcl")
        r["rebuild_init"], _ = timed(["terraform", "init", "-input=false"], other, env)
        r["apply"], _ = timed(["terraform", "apply", "-input=false", "plan.out"], other, env)
    else:
        r["apply"], _ = timed(["terraform", "apply", "-input=false", "plan.out"], work, env)
    r["total"] = r["init"] + r["plan"] + r["apply"]
    return r


def iacctl_round(config: Path, name: str, env: dict[str, str], rebuild: bool) -> dict[str, float]:
    iacctl = iacctl_cmd()
    timed([*iacctl, "workspace", "create", name, "--dir", str(config)], None, env)
    r: dict[str, float] = {}
    r["plan"], out = timed([*iacctl, "plan", name, "--json"], None, env, expect=2)
    task = json.loads(out)
    argv = [*iacctl, "confirm-apply", str(task["id"]), "--json"]
    if rebuild:
        argv.append("--rebuild")
    r["confirm_apply"], out = timed(argv, None, env)
    done = json.loads(out)
    assert done["status"] == "applied", done
    assert done["apply_path"] == ("rebuilt" if rebuild else "same_slot"), done
    r["total"] = r["plan"] + r["confirm_apply"]
    return r


def seed_tasks(db: Path, total: int) -> None:
    """Copy the store's one real task until there are `total` (a store after months of use)."""
    with sqlite3.connect(db) as con:
        cols = ", ".join(f'"{row[1]}"' for row in con.execute("PRAGMA table_info(tasks)") if row[1] != "id")
        con.execute(
            f"WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < ?) "
            f"INSERT INTO tasks ({cols}) SELECT {cols} FROM tasks, n WHERE tasks.id = 1",
            (total - 1,),
        )


def med(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rebuild-rounds", type=int, default=3)
    parser.add_argument("--resources", type=int, default=make_config.DEFAULT_RESOURCES)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="iacctl-bench-"))
    try:
        paths = make_config.build_all(root / "setup", args.resources)
        base = clean_env(paths["cli_config"])
        (root / "store").mkdir(exist_ok=True)  # iacctl makes the store file, not its directory
        iac_env = {**base, "IACCTL_DB": str(root / "store" / "iacctl.db"),
                   "IACCTL_CONFIG_DIR": str(root / "store" / "config")}
        config = paths["config"]
        hand: list[dict[str, float]] = []
        iac: list[dict[str, float]] = []
        hand_rb: list[dict[str, float]] = []
        iac_rb: list[dict[str, float]] = []
        for i in range(args.rounds + args.rebuild_rounds):
            rebuild = i >= args.rounds
            sides = ("hand", "iacctl") if i % 2 == 0 else ("iacctl", "hand")
            for side in sides:
                if side == "hand":
                    r = hand_round(config, root / f"hand-{i}", base, rebuild)
                    (hand_rb if rebuild else hand).append(r)
                else:
                    r = iacctl_round(config, f"bench-{i}", iac_env, rebuild)
                    (iac_rb if rebuild else iac).append(r)
                print(f"round {i + 1} {'rebuild ' if rebuild else ''}{side}: "
                      + ", ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
                shutil.rmtree(root / f"hand-{i}", ignore_errors=True)
                shutil.rmtree(root / f"hand-{i}-rebuilt", ignore_errors=True)

        # (c) start-up and a big listing, on a store of its own.
        (root / "c").mkdir(exist_ok=True)
        c_env = {**base, "IACCTL_DB": str(root / "c" / "iacctl.db"), "IACCTL_CONFIG_DIR": str(root / "c" / "cfg")}
        iacctl = iacctl_cmd()
        help_times = [timed([*iacctl, "--help"], None, c_env)[0] for _ in range(21)][1:]
        timed([*iacctl, "workspace", "create", "seed", "--dir", str(config)], None, c_env)
        timed([*iacctl, "plan", "seed", "--plan-only"], None, c_env, expect=2)
        seed_tasks(root / "c" / "iacctl.db", 10_000)
        list_times = []
        for _ in range(6):
            seconds, out = timed([*iacctl, "tasks", "list", "--json"], None, c_env)
            assert len(json.loads(out)) == 10_000
            list_times.append(seconds)
        list_times = list_times[1:]

        hand_total, iac_total = med([r["total"] for r in hand]), med([r["total"] for r in iac])
        hand_apply, iac_confirm = med([r["apply"] for r in hand]), med([r["confirm_apply"] for r in iac])
        rb_hand = med([r["rebuild_init"] + r["apply"] for r in hand_rb])
        rb_iac = med([r["confirm_apply"] for r in iac_rb])
        help_med, list_med = med(help_times), med(list_times)

        def verdict(ok: bool) -> str:
            return "met" if ok else "NOT met"

        rows = [
            ("(a) `iacctl plan` + `iacctl confirm-apply` vs hand-run init + plan -out + apply",
             f"{iac_total:.3f} s vs {hand_total:.3f} s = {iac_total / hand_total:.2f}x", "<= 1.25x",
             verdict(iac_total / hand_total <= 1.25)),
            ("(b) `confirm-apply`, same slot, vs bare `terraform apply plan.out`",
             f"{iac_confirm:.3f} s vs {hand_apply:.3f} s = +{iac_confirm - hand_apply:.3f} s", "<= +0.5 s",
             verdict(iac_confirm - hand_apply <= 0.5)),
            ("(b) `confirm-apply --rebuild` vs hand init + apply in a fresh directory",
             f"{rb_iac:.3f} s vs {rb_hand:.3f} s = +{rb_iac - rb_hand:.3f} s", "(for comparison)", "-"),
            ("(b) rebuild path vs same-slot path", f"{rb_iac:.3f} s vs {iac_confirm:.3f} s", "(for comparison)", "-"),
            ("(c) `iacctl --help`", f"{help_med:.3f} s", "<= 0.15 s", verdict(help_med <= 0.15)),
            ("(c) `iacctl tasks list --json`, 10,000 tasks", f"{list_med:.3f} s", "<= 1 s", verdict(list_med <= 1.0)),
        ]
        steps = [
            ("terraform init", med([r["init"] for r in hand]), None),
            ("terraform plan -out / iacctl plan", med([r["plan"] for r in hand]), med([r["plan"] for r in iac])),
            ("terraform apply plan.out / iacctl confirm-apply", hand_apply, iac_confirm),
            ("total", hand_total, iac_total),
        ]
        m = machine()
        lines = [
            "# Benchmarks",
            "",
            f"Run with `python bench/run.py --rounds {args.rounds} --rebuild-rounds {args.rebuild_rounds}` on "
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.",
            "",
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}; {m['os']}; Python {m['python']}; "
            f"{m['terraform']}.",
            "",
            f"Configuration: {args.resources} `null_resource`s, the `null` provider installed by `terraform init` "
            "from a local filesystem mirror in packed (zip) layout. Both sides create all resources from "
            "nothing each round, in alternating order, in one run. Figures are medians of wall-clock "
            f"time over {args.rounds} rounds ({args.rebuild_rounds} for rebuild).",
            "",
            "| measure | median | goal | result |",
            "| --- | --- | --- | --- |",
            *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
            "",
            "| step | hand-run terraform (s) | iacctl (s) |",
            "| --- | --- | --- |",
            *[f"| {name} | {h:.3f} | {'-' if i is None else f'{i:.3f}'} |" for name, h, i in steps],
            "",
        ]
        report = "\n".join(lines)
        print(report)
        if args.write:
            previous = args.write.read_text() if args.write.exists() else ""
            notes = previous.split("<!-- notes -->", 1)[1] if "<!-- notes -->" in previous else "\n"
            args.write.write_text(report + "\n<!-- notes -->" + notes)
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
