"""iacctl with and without the agent (issue 20), against Terraform's own commands, side by side in
one run.

    python bench/agent.py [--rounds 3] [--quick-rounds 21] [--commands 1000] [--big-resources 4000]
                          [--big-rounds 2] [--write BENCHMARKS.md]

Each measure alternates its sides round by round: Terraform by hand, iacctl in-process
(IACCTL_AGENT=off: the lighter path), iacctl through an agent (IACCTL_AGENT=on; one agent for the
run, in a runtime directory of its own, stopped at the end). Medians of wall-clock time. The load
average of the machine is recorded with the figures: on a shared machine every side is slower.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import make_config
from run import clean_env, hand_round, iacctl_cmd, iacctl_round, machine, seed_tasks, timed, write_section

START, END = "<!-- agent-bench -->", "<!-- /agent-bench -->"


def load() -> str:
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


def med(values: list[float]) -> float:
    return statistics.median(values)


def times(argv: list[str], cwd: Path | None, env: dict[str, str], rounds: int, expect: int = 0) -> list[float]:
    return [timed(argv, cwd, env, expect)[0] for _ in range(rounds)]


def agent_rss(env: dict[str, str]) -> tuple[int, int]:
    out = subprocess.run([*iacctl_cmd(), "agent", "status", "--json"], env=env, capture_output=True, text=True,
                         check=True).stdout
    view = json.loads(out)
    return int(view["rss_kib"]), int(view["served"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="plan + confirm-apply rounds per side")
    parser.add_argument("--quick-rounds", type=int, default=21, help="rounds of each quick command")
    parser.add_argument("--commands", type=int, default=1000, help="commands for the agent's memory")
    parser.add_argument("--resources", type=int, default=make_config.DEFAULT_RESOURCES)
    parser.add_argument("--big-resources", type=int, default=4000,
                        help="resources of the big plan (iacctl plan against hand init + plan); 0 skips it")
    parser.add_argument("--big-rounds", type=int, default=2, help="rounds per side of the big plan")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="iacctl-agent-bench-"))
    iacctl = iacctl_cmd()
    loads = [load()]
    run_dir = root / "run"
    run_dir.mkdir(mode=0o700)
    try:
        paths = make_config.build_all(root / "setup", args.resources)
        base = clean_env(paths["cli_config"])
        (root / "store").mkdir()
        store = {"IACCTL_DB": str(root / "store" / "iacctl.db"), "IACCTL_CONFIG_DIR": str(root / "store" / "cfg"),
                 "XDG_RUNTIME_DIR": str(run_dir)}
        off = {**base, **store, "IACCTL_AGENT": "off"}
        on = {**base, **store, "IACCTL_AGENT": "on"}
        timed([*iacctl, "agent", "start"], None, on)
        rss_start, _ = agent_rss(on)
        config = paths["config"]

        # P1 / P2: plan + confirm-apply against init + plan + apply by hand.
        results: dict[str, list[dict[str, float]]] = {"hand": [], "off": [], "on": []}
        for i in range(args.rounds):
            order = ["hand", "off", "on"][i % 3:] + ["hand", "off", "on"][: i % 3]
            for side in order:
                if side == "hand":
                    r = hand_round(config, root / f"hand-{i}", base, rebuild=False)
                    shutil.rmtree(root / f"hand-{i}", ignore_errors=True)
                else:
                    r = iacctl_round(config, f"p-{side}-{i}", on if side == "on" else off, rebuild=False)
                results[side].append(r)
                print(f"round {i + 1} {side}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
        loads.append(load())

        # Listings and completion on the same store (now with a few workspaces and tasks).
        tf_dir = root / "tf"
        shutil.copytree(config, tf_dir)
        timed(["terraform", "init", "-input=false"], tf_dir, base)
        quick: dict[str, list[float]] = {}
        commands = {
            "terraform workspace list": (["terraform", "workspace", "list"], tf_dir, base),
            "tasks list (agent)": ([*iacctl, "tasks", "list"], None, on),
            "tasks list (no agent)": ([*iacctl, "tasks", "list"], None, off),
            "workspace list (agent)": ([*iacctl, "workspace", "list"], None, on),
            "workspace list (no agent)": ([*iacctl, "workspace", "list"], None, off),
            "workspace show (agent)": ([*iacctl, "workspace", "show", "p-on-0"], None, on),
            "workspace show (no agent)": ([*iacctl, "workspace", "show", "p-on-0"], None, off),
            "complete workspace": ([*iacctl, "complete", "workspace"], None, off),
            "complete apply_pending_task": ([*iacctl, "complete", "apply_pending_task"], None, off),
            "--help (agent)": ([*iacctl, "--help"], None, on),
            "--help (no agent)": ([*iacctl, "--help"], None, off),
        }
        for _ in range(args.quick_rounds):
            for name, (argv, cwd, env) in commands.items():
                quick.setdefault(name, []).append(timed(argv, cwd, env)[0])
        loads.append(load())

        # 10,000 tasks, on a store of its own.
        (root / "big").mkdir()
        big = {"IACCTL_DB": str(root / "big" / "iacctl.db"), "IACCTL_CONFIG_DIR": str(root / "big" / "cfg"),
               "XDG_RUNTIME_DIR": str(run_dir)}
        big_off, big_on = {**base, **big, "IACCTL_AGENT": "off"}, {**base, **big, "IACCTL_AGENT": "on"}
        timed([*iacctl, "workspace", "create", "seed", "--dir", str(config)], None, big_off)
        timed([*iacctl, "plan", "seed", "--plan-only"], None, big_off, expect=2)
        seed_tasks(root / "big" / "iacctl.db", 10_000)
        listing: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(6):
            for side, env in (("on", big_on), ("off", big_off)):
                seconds, out = timed([*iacctl, "tasks", "list", "--json"], None, env)
                assert len(json.loads(out)) == 10_000
                listing[side].append(seconds)
        loads.append(load())

        # A big plan: `iacctl plan` against hand-run init + plan of the same configuration.
        big_plan: dict[str, list[float]] = {"hand": [], "on": [], "off": []}
        if args.big_resources:
            big_config = make_config.write_terraform_config(root / "big-config", args.big_resources)
            for i in range(args.big_rounds):
                order = ["hand", "off", "on"][i % 3:] + ["hand", "off", "on"][: i % 3]
                for side in order:
                    if side == "hand":
                        work = root / f"big-hand-{i}"
                        shutil.copytree(big_config, work)
                        init, _ = timed(["terraform", "init", "-input=false"], work, base)
                        plan, _ = timed(["terraform", "plan", "-input=false", "-out=plan.out"], work, base)
                        big_plan["hand"].append(init + plan)
                        shutil.rmtree(work, ignore_errors=True)
                    else:
                        env = on if side == "on" else off
                        name = f"big-{side}-{i}"
                        timed([*iacctl, "workspace", "create", name, "--dir", str(big_config)], None, env)
                        seconds, _ = timed([*iacctl, "plan", name, "--quiet"], None, env, expect=2)
                        big_plan[side].append(seconds)
                    print(f"big plan round {i + 1} {side}: {big_plan[side][-1]:.3f}", flush=True)
            loads.append(load())

        # The agent's memory over many commands.
        rss_warm, served_before = agent_rss(on)
        started = time.perf_counter()
        for _ in range(args.commands):
            timed([*iacctl, "workspace", "list"], None, on)
        spent = time.perf_counter() - started
        rss_end, served_after = agent_rss(on)
        assert served_after - served_before == args.commands
        loads.append(load())

        hand_total = med([r["total"] for r in results["hand"]])
        hand_apply = med([r["apply"] for r in results["hand"]])
        p1 = {side: med([r["total"] for r in results[side]]) for side in ("off", "on")}
        p2 = {side: med([r["confirm_apply"] for r in results[side]]) for side in ("off", "on")}
        q = {name: med(values) for name, values in quick.items()}
        tf_list = q["terraform workspace list"]

        def verdict(ok: bool) -> str:
            return "met" if ok else "NOT met"

        rows = []
        for what in ("tasks list", "workspace list", "workspace show"):
            t = q[f"{what} (agent)"]
            rows.append((f"`iacctl {what}` with the agent", f"{t:.3f} s = {t / tf_list:.2f}x terraform workspace list",
                         "<= 0.1 s and <= 1.5x", verdict(t <= 0.1 and t / tf_list <= 1.5)))
            rows.append((f"`iacctl {what}` without the agent", f"{q[f'{what} (no agent)']:.3f} s", "(for comparison)",
                         "-"))
        rows.append(("`terraform workspace list`", f"{tf_list:.3f} s", "(reference)", "-"))
        for kind in ("workspace", "apply_pending_task"):
            t = q[f"complete {kind}"]
            rows.append((f"TAB: `iacctl complete {kind}`", f"{t:.3f} s", "<= 0.1 s", verdict(t <= 0.1)))
        rows.append(("`iacctl --help` (no agent)", f"{q['--help (no agent)']:.3f} s", "<= 0.05 s",
                     verdict(q["--help (no agent)"] <= 0.05)))
        rows.append(("`iacctl --help` (agent)", f"{q['--help (agent)']:.3f} s", "<= 0.05 s",
                     verdict(q["--help (agent)"] <= 0.05)))
        for side, goal in (("on", 1.15), ("off", 1.5)):
            ratio = p1[side] / hand_total
            rows.append((f"P1: plan + confirm-apply ÷ hand init + plan + apply ({args.resources} resources), "
                         f"{'with' if side == 'on' else 'without'} the agent",
                         f"{p1[side]:.3f} s vs {hand_total:.3f} s = {ratio:.2f}x", f"<= {goal}x",
                         verdict(ratio <= goal)))
        for side, goal in (("on", 0.15), ("off", 0.35)):
            extra = p2[side] - hand_apply
            how = "with" if side == "on" else "without"
            rows.append((f"P2: confirm-apply same slot minus bare apply plan.out, {how} the agent",
                         f"{p2[side]:.3f} s vs {hand_apply:.3f} s = {extra:+.3f} s", f"<= +{goal} s",
                         verdict(extra <= goal)))
        list_on, list_off = med(listing["on"][1:]), med(listing["off"][1:])
        rows.append(("`tasks list --json`, 10,000 tasks, with the agent", f"{list_on:.3f} s", "<= 0.3 s",
                     verdict(list_on <= 0.3)))
        rows.append(("`tasks list --json`, 10,000 tasks, without the agent", f"{list_off:.3f} s", "(for comparison)",
                     "-"))
        if args.big_resources:
            hand_big = med(big_plan["hand"])
            for side in ("on", "off"):
                ratio = med(big_plan[side]) / hand_big
                rows.append((f"{args.big_resources:,}-resource plan: `iacctl plan` ÷ hand init + plan, "
                             f"{'with' if side == 'on' else 'without'} the agent",
                             f"{med(big_plan[side]):.3f} s vs {hand_big:.3f} s = {ratio:.2f}x", "<= 1.15",
                             verdict(ratio <= 1.15)))
        else:
            rows.append(("4,000-resource plan: `iacctl plan` ÷ hand init + plan", "not measured in this run",
                         "<= 1.15", "not measured"))
        rows.append((f"agent RSS: started / warm / after {args.commands:,} more commands",
                     f"{rss_start / 1024:.1f} / {rss_warm / 1024:.1f} / {rss_end / 1024:.1f} MiB "
                     f"({args.commands / spent:.1f} commands/s)", "reported; no growth",
                     verdict(rss_end <= rss_warm * 1.05)))

        m = machine()
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines = [
            START,
            "## The agent and the lighter path (issue 20)",
            "",
            f"Run with `python bench/agent.py --rounds {args.rounds} --quick-rounds {args.quick_rounds} "
            f"--commands {args.commands} --big-resources {args.big_resources} --big-rounds {args.big_rounds}` "
            f"on {stamp}.",
            "",
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}; {m['os']}; Python {m['python']}; "
            f"{m['terraform']}.",
            "",
            f"**Load average (1/5/15 min) during the run: {' → '.join(loads)}.** The machine was shared with "
            "other work while this ran: every side, Terraform's too, is slower than on a quiet machine, and "
            "the absolute goals (seconds) are judged on these loaded figures.",
            "",
            f"Sides alternate round by round. P1/P2: {args.rounds} rounds per side ({args.resources} "
            "`null_resource`s, provider from a local mirror, as bench/run.py). Quick commands: medians of "
            f"{args.quick_rounds} rounds, on the P1 store. With the agent: `IACCTL_AGENT=on`, one agent for the run.",
            "",
            "| measure | median | goal | result |",
            "| --- | --- | --- | --- |",
            *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
            "",
            END,
        ]
        text = "\n".join(lines)
        print(text)
        if args.write:
            write_section(args.write, text, START, END)
    finally:
        subprocess.run([*iacctl, "agent", "stop"], env={**os.environ, "XDG_RUNTIME_DIR": str(run_dir),
                                                        "IACCTL_AGENT": "off"}, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
