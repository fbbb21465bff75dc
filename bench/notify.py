"""What notifications add to `iacctl confirm-apply` (issue 11 item 6), in one run:

    python bench/notify.py [--rounds 5] [--write BENCHMARKS.md]

Each round, in rotating order, a fresh store and workspace (tests/fixtures/terraform/simple,
two `terraform_data` resources) are planned (not timed), then `confirm-apply` is timed with:
no destinations; three destinations that answer at once (receivers on 127.0.0.1); three that
are down (their port closed after creation); and, for comparison, three that never answer (the
command waits its budget, IACCTL_FOLLOW_UP_BUDGET, default 5 s). Each destination subscribes to
`applying` and `applied`, so the apply writes and sends six outbox entries. Medians of wall-clock
time; the "added" column is against no destinations in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from run import write_section  # noqa: E402  (bench/run.py, beside this script)
from tests.fixtures.receivers import running_receiver  # noqa: E402

SECTION_START = "<!-- notify-bench -->"
SECTION_END = "<!-- /notify-bench -->"
CASES = ("none", "3 answer at once", "3 down", "3 never answer")


def run(argv: list[str], env: dict[str, str], cwd: Path, expect: int) -> float:
    start = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).parent / "iacctl"), *argv], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - start
    if proc.returncode != expect:
        raise SystemExit(f"iacctl {' '.join(argv)} exited {proc.returncode}, expected {expect}\n{proc.stderr}")
    return took


@contextlib.contextmanager
def destinations(case: str, env: dict[str, str], cwd: Path) -> Iterator[None]:
    if case == "none":
        yield
        return
    behaviour = {"3 answer at once": "ok", "3 down": "ok", "3 never answer": "never"}[case]
    with contextlib.ExitStack() as stack:
        receivers = [stack.enter_context(running_receiver(behaviour)) for _ in range(3)]
        for i, r in enumerate(receivers):
            run(["notify", "create", f"d{i}", "--url", r.url, "--events", "applying,applied"], env, cwd, 0)
        if case == "3 down":
            stack.close()  # their ports are closed from now on
        yield


def one(case: str, root: Path, base: dict[str, str]) -> float:
    work = Path(tempfile.mkdtemp(dir=root))
    env = {**base, "IACCTL_DB": str(work / "store.db"), "IACCTL_CONFIG_DIR": str(work / "config"),
           "IACCTL_WORK_ROOT": str(work / "work")}
    shutil.copytree(REPO / "tests" / "fixtures" / "terraform" / "simple", work / "src")
    run(["workspace", "create", "net", "--dir", str(work / "src")], env, work, 0)
    with destinations(case, env, work):
        run(["plan", "net", "-q"], env, work, 2)
        took = run(["confirm-apply", "1", "-q"], env, work, 0)
    shutil.rmtree(work, ignore_errors=True)
    return took


def section(results: dict[str, list[float]], rounds: int, argv: str) -> str:
    base = statistics.median(results["none"])
    lines = [SECTION_START, "## Notifications: what they add to `confirm-apply` (issue 11)", "",
             f"Run with `python bench/notify.py {argv}` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC "
             f"({platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}). "
             f"Medians over {rounds} rounds, cases in rotating order in one run; each destination subscribes "
             "to `applying` and `applied` (six outbox entries per apply).", "",
             "| destinations | `confirm-apply` median | added vs none | min - max |", "| --- | --- | --- | --- |"]
    for case in CASES:
        m = statistics.median(results[case])
        added = "-" if case == "none" else f"{m - base:+.3f} s"
        lines.append(f"| {case} | {m:.3f} s | {added} | {min(results[case]):.3f} - {max(results[case]):.3f} s |")
    lines += ["", "Reading it: deliveries run in background threads from the moment each status change is "
              "committed; the `applied` notifications can only start after the apply's last commit, so the "
              "command waits for them at its end (and imports httpx, about 0.07 s, only when it has something "
              "to send). A receiver that is down fails at once (connection refused) and is left to the sweep; "
              "one that never answers holds the command for the budget (`IACCTL_FOLLOW_UP_BUDGET`, 5 s) and "
              "no longer.", SECTION_END]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("IACCTL_", "TF_", "XDG_"))}
    base["NO_COLOR"] = "1"
    results: dict[str, list[float]] = {c: [] for c in CASES}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base["HOME"] = str(root)
        for i in range(args.rounds):
            order = CASES[i % len(CASES):] + CASES[:i % len(CASES)]
            for case in order:
                results[case].append(one(case, root, base))
                print(f"round {i + 1} {case}: {results[case][-1]:.3f} s", flush=True)
    text = section(results, args.rounds, " ".join(sys.argv[1:]))
    print(text)
    if args.write:
        write_section(args.write, text, SECTION_START, SECTION_END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
