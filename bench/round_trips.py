"""A team's store 40 ms away (issue 23): round trips and added time per command, side by side
with Terraform's own `pg` state backend through the same proxy in the same run.

    python bench/round_trips.py [--delay-ms 20] [--write BENCHMARKS.md]

A throwaway PostgreSQL server on 127.0.0.1 (tests/fixtures/postgres.py), and a TCP proxy of our
own in front of it (tests/fixtures/wire.py) that counts round trips (the server answering what
the client sent; TLS negotiation aside) and delays each chunk `--delay-ms` each way. Every
command runs twice, through the proxy without delay and with it: the round trips are counted on
the first, the added time is the difference of the two wall-clock times. The configuration is
5 `terraform_data` resources (no provider to download).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from run import iacctl_cmd, machine, write_section  # noqa: E402
from tests.fixtures.postgres import PostgresServer  # noqa: E402
from tests.fixtures.wire import WireProxy  # noqa: E402

BEGIN, END = "<!-- round-trips -->", "<!-- /round-trips -->"
# One command of a measure: argv, working directory, the exit codes that are fine.
Step = tuple[list[str], Path | None, tuple[int, ...]]
RESOURCES = 5


def _config(path: Path, backend: str | None = None, value: str = "v1") -> Path:
    path.mkdir(parents=True)
    block = f'terraform {{\n  backend "pg" {{\n    conn_str = "{backend}"\n  }}\n}}\n\n' if backend else ""
    (path / "main.tf").write_text(block + f'resource "terraform_data" "r" {{\n  count = {RESOURCES}\n'
                                  f'  input = "{value}"\n}}\n')
    return path


class Bench:
    def __init__(self, root: Path, delay_s: float) -> None:
        self.root = root
        self.delay_s = delay_s
        self.pg = PostgresServer()
        self.pg.start(root / "pg")
        self.url = self.pg.create_database("iacctl_" + uuid.uuid4().hex[:8])
        tf_db = self.pg.create_database("tf_" + uuid.uuid4().hex[:8])
        port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        self.proxy = WireProxy(("127.0.0.1", port))
        self.iacctl_url = self.proxy.url(self.url)
        self.tf_conn = self.proxy.url(tf_db).replace("postgresql+psycopg://", "postgres://") + "?sslmode=disable"
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("IACCTL_", "TF_", "XDG_"))
                and k not in ("CI",)}
        self.env = {**keep, "IACCTL_DATABASE_URL": self.iacctl_url, "IACCTL_CONFIG_DIR": str(root / "config"),
                    "IACCTL_WORK_ROOT": str(root / "work"), "IACCTL_AGENT": "off", "NO_COLOR": "1",
                    "CHECKPOINT_DISABLE": "1", "HOME": str(root)}
        self.rows: list[dict[str, Any]] = []
        self.running: dict[str, Any] | None = None

    def close(self) -> None:
        self.proxy.stop()
        self.pg.stop()

    def once(self, argv: list[str], cwd: Path | None = None, expect: tuple[int, ...] = (0,)) -> tuple[int, float, str]:
        self.proxy.reset()
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=900)
        seconds = time.perf_counter() - start
        if proc.returncode not in expect:
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return self.proxy.round_trips, seconds, proc.stdout

    def measure(self, label: str, steps: Callable[[], list[Step]],
                prepare: Callable[[], None] | None = None) -> dict[str, Any]:
        """Run `steps()` without delay, then again with it, each time after `prepare()` (not
        counted: it sets up the same starting point); record round trips (each step's too) and
        the added time."""
        out: dict[str, Any] = {"command": label}
        for delay in (0.0, self.delay_s):
            if prepare is not None:
                prepare()
            todo = steps()
            self.proxy.delay_s = delay
            each, seconds = [], 0.0
            for argv, cwd, expect in todo:
                t, s, _ = self.once(argv, cwd, expect)
                each.append(t)
                seconds += s
            self.proxy.delay_s = 0.0
            key = "" if delay == 0 else "_delayed"
            out["each" + key], out["round_trips" + key], out["seconds" + key] = each, sum(each), seconds
        out["added_s"] = out["seconds_delayed"] - out["seconds"]
        self.rows.append(out)
        parts = f" ({' + '.join(map(str, out['each']))})" if len(out["each"]) > 1 else ""
        print(f"{label:<48} {out['round_trips']:>5} round trips  +{out['added_s']:.2f} s{parts}", flush=True)
        return out


def run(delay_s: float, running: int) -> tuple[Bench, dict[str, str]]:
    root = Path(tempfile.mkdtemp(prefix="iacctl-rt-"))
    b = Bench(root, delay_s)
    iac = iacctl_cmd()
    try:
        src = _config(root / "src")
        for i in range(4):
            b.once([*iac, "workspace", "create", f"w{i}", "--dir", str(src)])
        b.once([*iac, "workspace", "var", "set", "w0", "db_password", "hunter22", "--sensitive"])
        b.once([*iac, "plan", "w1", "--plan-only", "--quiet"], expect=(2,))

        for args in (["workspace", "list"], ["workspace", "show", "w0"], ["tasks", "list"],
                     ["tasks", "list", "--json"], ["tasks", "show", "1"], ["pods", "list"], ["notify", "list"],
                     ["workspace", "var", "set", "w0", "region", "eu-west-1"]):
            b.measure("iacctl " + " ".join(args), _alone([*iac, *args]))

        names = iter(f"flow-{i}" for i in range(100))
        current: dict[str, str] = {}

        def fresh_workspace() -> None:
            current["name"] = next(names)
            b.once([*iac, "workspace", "create", current["name"], "--dir", str(src)])

        # plan, then confirm-apply of the plan it leaves waiting, on a fresh workspace each time.
        def fresh_for_flow() -> None:
            fresh_workspace()
            current["next"] = str(_last_task(b, iac) + 1)  # the task `plan` will make

        b.measure("iacctl plan + confirm-apply (5 resources)",
                  lambda: [([*iac, "plan", current["name"], "--quiet"], None, (2,)),
                           ([*iac, "confirm-apply", current["next"], "--quiet"], None, (0,))],
                  prepare=fresh_for_flow)

        def waiting_plan() -> None:
            fresh_workspace()
            b.once([*iac, "plan", current["name"], "--quiet"], expect=(2,))
            current["task"] = str(_last_task(b, iac))

        b.measure("iacctl cancel (a plan waiting for confirmation)",
                  lambda: [([*iac, "cancel", current["task"]], None, (0,))], prepare=waiting_plan)
        b.measure("iacctl pods recover", _alone([*iac, "pods", "recover"]))

        # Terraform by hand with the pg backend, through the same proxy; a new change each time,
        # as the iacctl flow has.
        versions = iter(range(1, 100))

        def hand_dir() -> None:
            work = root / "hand"
            shutil.rmtree(work, ignore_errors=True)
            _config(work, b.tf_conn, value=f"v{next(versions)}")
            current["hand"] = str(work)

        def hand_steps() -> list[Step]:
            work = Path(current["hand"])
            return [(["terraform", "init", "-input=false"], work, (0,)),
                    (["terraform", "plan", "-input=false", "-out=plan.out"], work, (0,)),
                    (["terraform", "apply", "-input=false", "plan.out"], work, (0,))]

        b.measure("terraform init + plan -out + apply plan.out (pg backend)", hand_steps, prepare=hand_dir)
        b.measure("terraform workspace list (pg backend)",
                  lambda: [(["terraform", "workspace", "list"], Path(current["hand"]), (0,))])
        if running:
            b.running = running_tasks(b, running, window_s=30.0)
        return b, machine()
    finally:
        b.close()
        shutil.rmtree(root, ignore_errors=True)


TICKING = """resource "terraform_data" "ticking" {
  input = "v1"
  provisioner "local-exec" {
    command = "for i in $(seq 1 30); do echo tick $i; sleep 10; done"
  }
}
"""


def running_tasks(b: Bench, count: int, window_s: float) -> dict[str, Any]:
    """Item 3: `count` applies running at once, each Terraform printing a line every 10 s; the
    round trips all their runners make to the store during `window_s`."""
    iac = iacctl_cmd()
    db = b.pg.create_database("running_" + uuid.uuid4().hex[:8])
    through = b.proxy.url(db)
    config = b.root / "running-config"
    config.mkdir()
    (config / "main.tf").write_text(TICKING)
    direct = {**b.env, "IACCTL_DATABASE_URL": db, "IACCTL_CONFIG_DIR": str(b.root / "running-cfg"),
              "IACCTL_WORK_ROOT": str(b.root / "running-work"), "IACCTL_LOCAL_SLOTS": str(count)}
    proxied = {**direct, "IACCTL_DATABASE_URL": through}

    def iacctl(*args: str, expect: tuple[int, ...] = (0,)) -> str:
        proc = subprocess.run([*iac, *args], env=direct, capture_output=True, text=True, timeout=900)
        if proc.returncode not in expect:
            raise SystemExit(f"iacctl {' '.join(args)} exited {proc.returncode}\n{proc.stderr}")
        return proc.stdout

    def tasks() -> list[dict[str, Any]]:
        return list(json.loads(iacctl("tasks", "list", "--json", "--limit", "1000")))

    for i in range(count):
        iacctl("workspace", "create", f"run-{i:02d}", "--dir", str(config))
        iacctl("plan", f"run-{i:02d}", "--no-wait")
    deadline = time.monotonic() + 1200
    while sum(t["status"] == "apply_pending" for t in tasks()) < count:
        assert time.monotonic() < deadline, "the plans did not finish"
        time.sleep(2)
    runners = [subprocess.Popen([*iac, "confirm-apply", str(t["id"]), "--quiet"], env=proxied,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for t in tasks()]
    try:
        while sum(t["stage"] == "applying" for t in tasks()) < count:
            assert time.monotonic() < deadline, "the applies did not start"
            time.sleep(2)
        time.sleep(12)  # every runner settled in its apply
        b.proxy.reset()
        time.sleep(window_s)
        trips = b.proxy.round_trips
    finally:
        for t in tasks():
            if t["status"] == "running":
                iacctl("cancel", str(t["id"]), "--no-wait", expect=(0, 3, 5))
        for r in runners:
            r.wait(timeout=600)
    row = {"command": f"{count} applies running at once (Terraform prints every 10 s), for {window_s:g} s",
           "round_trips": trips, "per_second": trips / window_s, "per_task_per_second": trips / window_s / count}
    print(f"{row['command']:<48} {trips:>5} round trips: {row['per_second']:.1f}/s in all, "
          f"{row['per_task_per_second']:.2f}/s per task", flush=True)
    return row


def _alone(argv: list[str]) -> Callable[[], list[Step]]:
    """The steps of a measure that is one command run as it is."""
    return lambda: [(argv, None, (0,))]


def _last_task(b: Bench, iac: list[str]) -> int:
    _, _, out = b.once([*iac, "tasks", "list", "--json", "--limit", "1"])
    return int(json.loads(out)[-1]["id"])


def render(b: Bench, facts: dict[str, str], delay_s: float) -> str:
    rows = b.rows
    flow = next(r for r in rows if r["command"].startswith("iacctl plan + confirm"))
    hand = next(r for r in rows if r["command"].startswith("terraform init"))
    lines = [
        BEGIN,
        "## A store 40 ms away: round trips per command (issue 23)",
        "",
        f"`python bench/round_trips.py`, {dt.date.today().isoformat()}; {facts['cpu']}, {facts['cores']} cores, "
        f"{facts['terraform']}, PostgreSQL 15 on 127.0.0.1 behind a counting proxy delaying each chunk "
        f"{delay_s * 1000:g} ms each way. Round trips: the server answering what the client sent, connection "
        "start-up included, TLS negotiation aside. Added time: with the delay minus without, same run.",
        "",
        "| command | round trips | added time at the delay |",
        "|---|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['command']} | {r['round_trips']} | +{r['added_s']:.2f} s |")
    lines += [
        "",
        f"plan + confirm-apply: {flow['each'][0]} + {flow['each'][1]} round trips, "
        f"{flow['round_trips'] / hand['round_trips']:.1f}x Terraform's pg backend ({hand['round_trips']}); "
        f"added time {flow['added_s'] / max(hand['added_s'], 0.01):.1f}x.",
    ]
    if b.running is not None:
        r = b.running
        lines += ["", f"{r['command']}: {r['round_trips']} round trips, {r['per_second']:.1f} a second in all, "
                  f"{r['per_task_per_second']:.2f} a second per running task."]
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, default=20.0, help="delay per chunk, each way")
    parser.add_argument("--running", type=int, default=50, help="applies running at once (0: skip)")
    parser.add_argument("--write", type=Path, help="update this BENCHMARKS.md section")
    args = parser.parse_args()
    bench, facts = run(args.delay_ms / 1000, args.running)
    text = render(bench, facts, args.delay_ms / 1000)
    print(text)
    if args.write:
        write_section(args.write, text, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
