"""Issue 23: a team's store may be far away, so each bookkeeping command asks it a handful of
things, however many workspaces, tasks, pods or variables it shows. Counts, never times: the SQL
statements a command sends (an SQLAlchemy listener, on SQLite and PostgreSQL), and on PostgreSQL
the round trips on the wire (a counting proxy, tests/fixtures/wire.py)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import PYTHON, Env
from tests.fixtures.receivers import running_receiver
from tests.fixtures.wire import WireProxy

COUNTER = Path(__file__).parents[1] / "fixtures" / "count_statements.py"

# The bookkeeping commands of item 1, each with its budget of statements: the store's opening
# (revision, key, pool, this machine's pod, the outbox: one statement), then what it shows.
BOOKKEEPING: list[tuple[tuple[str, ...], int]] = [
    (("workspace", "list"), 2),
    (("workspace", "list", "--json"), 2),
    (("workspace", "show", "net"), 4),
    (("tasks", "list"), 2),
    (("tasks", "list", "--json"), 2),
    (("tasks", "show", "1"), 4),
    (("pods", "list", "--json"), 3),
    (("notify", "list", "--json"), 3),
    (("workspace", "var", "set", "net", "region", "eu-west-1"), 3),
]
ROUND_TRIPS = 5  # item 1: connection set-up included, TLS aside


def _counted(env: Env, *args: str, url: str | None = None) -> dict[str, Any]:
    """Run `iacctl ARGS` counting what it asks of the store; the heartbeat a command writes when
    the machine's is due (at most every 5 s, timing-dependent) is left out of `work`."""
    out = env.root / "counts.json"
    extra = {"IACCTL_TEST_COUNTS": str(out)}
    if url is not None:
        extra["IACCTL_DATABASE_URL"] = url
    proc = subprocess.run([PYTHON, str(COUNTER), *args], capture_output=True, text=True, cwd=env.root,
                          env={**env.vars, **extra}, timeout=120)
    assert proc.returncode == 0, f"iacctl {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    counts: dict[str, Any] = json.loads(out.read_text())
    sql = counts["sql"]
    # SQLite's BEGIN and BEGIN IMMEDIATE are counted as transactions, not as statements.
    counts["work"] = [s for s in sql if not s.startswith(("UPDATE pods SET heartbeat_at", "BEGIN"))]
    return counts


def _many_more_rows(env: Env) -> None:
    """Twelve more workspaces (made by iacctl), and rows as iacctl writes them: 300 more tasks,
    30 more variables, 8 more machines' pods with their slots, 5 more notification destinations."""
    for i in range(12):
        env.ok("workspace", "create", f"more-{i:02d}", "--dir", str(env.root / "src-net"))
    from iacctl.domain.slots import PodStatus, SlotState
    from iacctl.store import repo
    from iacctl.store.models import Pod, Slot, Task, Variable, Workspace

    app = env.app()
    try:
        with app.store.write() as session:
            task = repo.get_task(session, 1)
            ws = repo.get_workspace(session, "net")
            data = task.model_dump(exclude={"id"})
            for _ in range(300):
                session.add(Task(**data))
            for i in range(30):
                session.add(Variable(workspace_id=ws.id or 0, key=f"extra_{i:02d}", value=str(i),
                                     updated_at=repo.now()))
            pool = repo.get_pool(session, "local")
            for m in range(8):
                pod = Pod(pool_id=pool.id or 0, name=f"laptop-{m}", machine=f"laptop-{m}", status=PodStatus.READY,
                          created_at=repo.now(), heartbeat_at=repo.now(), slots_per_pod=3)
                session.add(pod)
                session.flush()
                for i in range(3):
                    session.add(Slot(pod_id=pod.id or 0, slot_index=i, state=SlotState.IDLE, updated_at=repo.now()))
            assert session.get(Workspace, ws.id) is not None
    finally:
        app.close()
    with running_receiver("ok") as receiver:
        for i in range(5):
            env.ok("notify", "create", f"hook-{i}", "--url", receiver.url, "--events", "applied")


def _scenario(env: Env) -> None:
    env.workspace("net")
    env.ok("workspace", "var", "set", "net", "db_password", "hunter22", "--sensitive")
    env.ok("plan", "net", "--plan-only", "--quiet", code=2)
    with running_receiver("ok") as receiver:
        env.ok("notify", "create", "ops", "--url", receiver.url, "--events", "applied")


def test_bookkeeping_commands_ask_the_store_a_handful_whatever_they_show(any_env: Env) -> None:
    env = any_env
    _scenario(env)
    few = {args: _counted(env, *args) for args, _ in BOOKKEEPING}
    _many_more_rows(env)
    many = {args: _counted(env, *args) for args, _ in BOOKKEEPING}
    shown = env.ok("tasks", "list", "--json", "--limit", "1000").json()
    assert len(shown) == 301  # the rows are there, and shown
    for args, budget in BOOKKEEPING:
        command = "iacctl " + " ".join(args)
        for label, counted in (("few rows", few[args]), ("many rows", many[args])):
            assert len(counted["work"]) <= budget, (command, label, counted["work"])
            if env.backend == "postgres":  # (SQLite reads and writes on two local connections)
                assert counted["connections"] == 1, (command, label, counted)
        # The same statements whatever the number of rows shown (no query per row).
        assert len(many[args]["work"]) == len(few[args]["work"]), (command, few[args]["work"], many[args]["work"])


def test_bookkeeping_commands_cost_a_handful_of_round_trips_on_postgresql(pg_env: Env) -> None:
    env = pg_env
    _scenario(env)
    url = env.vars["IACCTL_DATABASE_URL"]
    port = int(re.search(r":(\d+)/", url).group(1))  # type: ignore[union-attr]
    with WireProxy(("127.0.0.1", port)) as proxy:
        for rows in ("few", "many"):
            if rows == "many":
                _many_more_rows(env)
            for args, _ in BOOKKEEPING:
                proxy.reset()
                counted = _counted(env, *args, url=proxy.url(url))
                # Start-up, the opening (with the heartbeat when due), what the command shows.
                assert proxy.round_trips <= ROUND_TRIPS, ("iacctl " + " ".join(args), rows, proxy.round_trips,
                                                          counted["sql"])
                assert proxy.connections == 1
