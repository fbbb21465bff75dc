"""A plan beside twenty plans left waiting for confirmation (issue 8), side by side in one run.

    python bench/waiting.py [--rounds 5] [--waiting 20] [--resources 20] [--write BENCHMARKS.md]

Two stores on the default local pool (3 running places): an idle one, and one where `--waiting`
workspaces each have a plan waiting for confirmation (their work directories kept in reserved
slots). Each round, in alternating order, a fresh workspace is planned on each store with
`iacctl plan WS` (exit 2; timed) and its task is cancelled afterwards (not timed), so the loaded
store keeps exactly its waiting plans. A hand-run `terraform init` + `terraform plan -out` in a
fresh copy is the reference. Before issue 8 the loaded store's plan never started: the waiting
plans held all three slots. Medians of wall-clock time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import make_config
from run import clean_env, iacctl_cmd, machine, timed, write_section

BEGIN, END = "<!-- waiting -->", "<!-- /waiting -->"


def plan_and_cancel(env: dict[str, str], config: Path, name: str) -> float:
    iacctl = iacctl_cmd()
    timed([*iacctl, "workspace", "create", name, "--dir", str(config)], None, env)
    seconds, out = timed([*iacctl, "plan", name, "--json", "--wait-timeout", "5m"], None, env, expect=2)
    timed([*iacctl, "cancel", str(json.loads(out)["id"])], None, env)
    return seconds


def hand_plan(config: Path, work: Path, env: dict[str, str]) -> float:
    shutil.copytree(config, work)
    init, _ = timed(["terraform", "init", "-input=false"], work, env)
    plan, _ = timed(["terraform", "plan", "-input=false", "-out=plan.out"], work, env)
    shutil.rmtree(work, ignore_errors=True)
    return init + plan


def fill(env: dict[str, str], config: Path, count: int) -> None:
    """`count` workspaces with a plan waiting for confirmation (queued with --no-wait, run by the
    background runners three at a time)."""
    iacctl = iacctl_cmd()
    for i in range(count):
        timed([*iacctl, "workspace", "create", f"waiting-{i:02}", "--dir", str(config)], None, env)
        timed([*iacctl, "plan", f"waiting-{i:02}", "--no-wait"], None, env)
    deadline = time.monotonic() + 600
    while True:
        _, out = timed([*iacctl, "tasks", "list", "--json"], None, env)
        statuses = [t["status"] for t in json.loads(out)]
        if statuses.count("apply_pending") == count:
            return
        if time.monotonic() > deadline or any(s in ("failed", "cancelled") for s in statuses):
            raise SystemExit(f"the waiting plans did not all reach apply_pending: {statuses}")
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--waiting", type=int, default=20)
    parser.add_argument("--resources", type=int, default=20)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="iacctl-bench-waiting-"))
    try:
        paths = make_config.build_all(root / "setup", args.resources)
        base = clean_env(paths["cli_config"])
        config = paths["config"]

        def store(name: str) -> dict[str, str]:
            (root / name).mkdir()  # iacctl makes the store file, not its directory
            return {**base, "IACCTL_DB": str(root / name / "iacctl.db"), "IACCTL_CONFIG_DIR": str(root / name / "cfg")}

        idle, loaded = store("idle"), store("loaded")
        fill(loaded, config, args.waiting)
        times: dict[str, list[float]] = {"idle": [], "loaded": [], "hand": []}
        for i in range(args.rounds):
            order = ("idle", "loaded", "hand") if i % 2 == 0 else ("hand", "loaded", "idle")
            for side in order:
                if side == "hand":
                    times[side].append(hand_plan(config, root / f"hand-{i}", base))
                else:
                    times[side].append(plan_and_cancel(idle if side == "idle" else loaded, config, f"probe-{i}"))
            print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in times.items()), flush=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        m = machine()
        section = "\n".join([
            BEGIN,
            "## A plan beside twenty waiting confirmations (issue 8)",
            "",
            f"Run with `python bench/waiting.py --rounds {args.rounds} --waiting {args.waiting} --resources "
            f"{args.resources}` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC ({m['cpu']}, {m['cores']} cores; "
            f"{m['terraform']}).",
            "",
            f"`iacctl plan` of a new workspace ({args.resources} `null_resource`s) on the default local pool "
            f"(3 running places), on an idle store and on a store where {args.waiting} workspaces each have a "
            "plan waiting for confirmation, in alternating order in one run; hand-run `terraform init` + "
            "`terraform plan -out` as the reference. Before issue 8 the second plan never started (the "
            "waiting plans held every slot). Medians over the rounds:",
            "",
            "| measure | median (s) |",
            "| --- | --- |",
            f"| `iacctl plan`, idle store | {med['idle']:.3f} |",
            f"| `iacctl plan`, {args.waiting} plans waiting for confirmation | {med['loaded']:.3f} |",
            f"| ratio waiting / idle | {med['loaded'] / med['idle']:.2f}x |",
            f"| hand-run `terraform init` + `terraform plan -out` | {med['hand']:.3f} |",
            "",
            f"Load average {os.getloadavg()[0]:.1f} when it ended. The two iacctl figures are measured side by "
            "side, so their ratio says what the waiting plans cost the new one: nothing beyond the noise of "
            "a shared machine (the plan ran at once, not after a slot freed). The distance to the hand-run "
            "reference is iacctl's own work around the same Terraform commands (Python start-up, the "
            "configuration copied into a slot, the plan's JSON kept, the store's writes), measured apart at "
            "the top of this file (bench/run.py).",
            END,
        ])
        print(section)
        if args.write:
            write_section(args.write, section, BEGIN, END)
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
