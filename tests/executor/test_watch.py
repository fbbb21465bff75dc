"""Issue 23 item 3: a running task is nearly silent toward a PostgreSQL store that may be far
away (the cancel is heard by LISTEN/NOTIFY, the heartbeat is one statement, log lines go in
batches), and a cancel from another terminal still reaches it at once. Counted on the wire by a
proxy between the runner and the store (tests/fixtures/wire.py)."""

from __future__ import annotations

import re
import time

from tests.background import SLOW_STARTED, Background, spawn, wait_log, wait_task
from tests.conftest import Env
from tests.fixtures.wire import WireProxy

QUIET_SECONDS = 8.0


def test_a_running_apply_costs_under_a_round_trip_a_second_and_hears_a_cancel(
        pg_env: Env, processes: list[Background]) -> None:
    env = pg_env
    env.workspace("app", "slow_apply")
    env.ok("workspace", "var", "set", "app", "sleep", "60")
    env.ok("plan", "app", "--quiet", code=2)
    url = env.vars["IACCTL_DATABASE_URL"]
    port = int(re.search(r":(\d+)/", url).group(1))  # type: ignore[union-attr]
    with WireProxy(("127.0.0.1", port)) as proxy:
        env.vars["IACCTL_DATABASE_URL"] = proxy.url(url)  # the runner talks through the proxy
        try:
            apply = spawn(env, processes, "confirm-apply", "1")
        finally:
            env.vars["IACCTL_DATABASE_URL"] = url  # the test's own looks go straight to the store
        wait_task(env, 1, lambda t: t["stage"] == "applying")
        wait_log(env, 1, SLOW_STARTED)
        proxy.reset()
        time.sleep(QUIET_SECONDS)  # Terraform sleeps in its provisioner, printing now and then
        quiet = proxy.round_trips
        # Before: a read session every 0.3 s (ping, BEGIN, SELECT, COMMIT), a log transaction
        # every 0.25 s while Terraform printed: about 30 round trips in this window.
        assert quiet <= QUIET_SECONDS, f"{quiet} round trips in {QUIET_SECONDS:g} s of a sleeping apply"

        asked = time.monotonic()
        assert "task 1 cancelled" in env.ok("cancel", "1").out
        code, _, err = apply.finish()
        assert code == 3, err
        assert time.monotonic() - asked < 30
    task = env.task(1)
    assert task["status"] == "cancelled" and "Terraform stopped gracefully" in task["error"]
    log = env.ok("tasks", "logs", "1").out
    assert "Interrupt received" in log  # the runner heard it and stopped Terraform gracefully
