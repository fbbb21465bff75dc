"""Issue 21 item 6: the README's crontab line runs as printed under cron's minimal environment,
and the sweep's --json names each action's workspace and task and how it ended (a re-plan that
failed says failed, with the cause)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import Env

REPO = Path(__file__).resolve().parents[2]
IACCTL = Path(sys.executable).parent / "iacctl"


def crontab_line() -> str:
    readme = (REPO / "README.md").read_text()
    lines = [line for block in re.findall(r"```crontab\n(.*?)```", readme, flags=re.S)
             for line in block.splitlines() if "pods recover" in line]
    assert len(lines) == 1, lines
    return lines[0]


def run_as_cron(env: Env, line: str, log: Path) -> list[dict[str, object]]:
    """The command part of a crontab line, the README's paths swapped for this test's, run by
    /bin/sh with only what cron sets (HOME, LOGNAME, SHELL, PATH=/usr/bin:/bin)."""
    command = line.split(None, 5)[5]
    command = (command.replace("/usr/local/bin/iacctl", str(IACCTL))
               .replace("/var/lib/iacctl/store.db", str(env.db_path))
               .replace("/var/log/iacctl-recover.log", str(log)))
    cron = {"HOME": env.vars["HOME"], "LOGNAME": "root", "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin"}
    subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in cron.items()), "/bin/sh", "-c", command],
                   check=True, timeout=180)
    return json.loads(log.read_text().splitlines()[-1])  # type: ignore[no-any-return]


def _lose_plan_context(env: Env, task: int) -> None:
    env.ok("plan", "net", "-q", code=2)
    shutil.rmtree(env.db_path.parent / "store.db.work" / "local" / "local" / "slot-0")
    assert env.task(task)["status"] == "apply_pending"


def test_the_readme_crontab_line_works_under_cron_and_says_how_each_action_ended(env: Env) -> None:
    assert shutil.which("terraform", path="/usr/bin:/bin") is None, "the failing case needs terraform elsewhere"
    # As a user's own commands: the key under HOME, work directories beside the store.
    env.vars = {k: v for k, v in env.vars.items() if k not in ("IACCTL_CONFIG_DIR", "IACCTL_WORK_ROOT")}
    env.workspace("net")
    _lose_plan_context(env, 1)

    line = crontab_line()
    actions = run_as_cron(env, line, env.root / "recover.log")
    replan = next(a for a in actions if a["action"] == "replanning")
    assert replan["task"] == 1 and replan["workspace"] == "net"
    assert replan["outcome"] == "apply_pending: re-planned, waits for: iacctl confirm-apply 1", actions
    assert env.task(1)["status"] == "apply_pending"

    # The same line with cron's own PATH, where terraform is not: the re-plan fails, and says why.
    env.ok("cancel", "1")
    _lose_plan_context(env, 2)
    bare = re.sub(r"PATH=\S+ ", "", line)
    actions = run_as_cron(env, bare, env.root / "bare.log")
    replan = next(a for a in actions if a["action"] == "replanning")
    assert replan["task"] == 2 and replan["workspace"] == "net"
    assert str(replan["outcome"]).startswith("failed: "), actions
    assert "terraform" in str(replan["outcome"]) and "PATH" in str(replan["outcome"]), actions
