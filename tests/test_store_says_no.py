"""Issue 19 item 4: a store that says no while `plan` waits for its task's turn leaves no task
behind to run later by itself, and the line says what became of the task."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

from tests.cli.test_bad_input import snapshot
from tests.conftest import Env

# Holds a write transaction for `seconds`, then lets go by itself (nothing waits on the test).
HOLD = ("import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
        "c.execute('BEGIN IMMEDIATE'); print('held', flush=True); time.sleep(float(sys.argv[2]))\n"
        "c.execute('ROLLBACK')\n")


def test_a_store_busy_while_plan_waits_leaves_no_task_to_run_later(env: Env) -> None:
    env.workspace("net")
    env.ok("plan", "net", "-q", code=2)  # task 1 holds the workspace: task 2 will wait
    plan = subprocess.Popen([sys.executable, "-m", "iacctl", "plan", "net", "-q"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**env.vars, "IACCTL_BUSY_TIMEOUT": "1"},
                            cwd=env.root)
    deadline = time.monotonic() + 60
    while not any(t["id"] == 2 for t in env.tasks()):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(env.db_path), "4"], stdout=subprocess.PIPE,
                              text=True)
    try:
        _, err = plan.communicate(timeout=60)
    finally:
        holder.wait(timeout=30)
    assert plan.returncode == 1, err
    line = err.strip().splitlines()[-1]
    assert "is busy" in line and "task 2" in line and "never runs" in line, line
    assert "nothing was changed" not in line
    # The workspace is freed: whatever starts the queue now never starts task 2.
    env.ok("cancel", "1")
    env.ok("pods", "recover")
    task = env.task(2)
    assert task["status"] == "cancelled" and task["started_at"] is None, task
    assert {s["state"] for s in env.ok("pods", "list", "--json").json()[0]["slots"]} == {"idle"}
    assert env.ok("workspace", "show", "net", "--json").json()["lock"] is None


# -- read-only, full, damaged: each through the installed command -------------------------------


def _in_own_mounts(env: Env, setup: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`iacctl ARGS` in a mount namespace of its own, after the shell commands `setup` (as root:
    a bind mount made read-only, a small file system), which the test's own mounts never see."""
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec",
                           setup + '\nexec "$@"', "sh", *env.argv(*args)],
                          capture_output=True, text=True, env=env.vars, cwd=env.root, timeout=180)


def _nothing_left(env: Env) -> None:
    """No task, no lock, no slot in use: the store is as it was before the command."""
    assert env.tasks() == []
    assert env.ok("workspace", "show", "net", "--json").json()["lock"] is None
    assert {s["state"] for p in env.ok("pods", "list", "--json").json() for s in p["slots"]} <= {"idle"}


def test_a_read_only_store_refuses_in_one_line_and_leaves_nothing(env: Env) -> None:
    env.workspace("net")
    before = snapshot(env.db_path)
    store_dir = env.db_path.parent

    r = _in_own_mounts(env, f"mount --bind {store_dir} {store_dir}; mount -o remount,bind,ro {store_dir}",
                       "plan", "net")

    assert r.returncode == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"the store {env.db_path} is on a read-only file system" in lines[0], lines
    assert "nothing was changed" in lines[0] and "remount" in lines[0] and "IACCTL_DB" in lines[0], lines
    assert snapshot(env.db_path) == before
    _nothing_left(env)
    env.ok("plan", "net", "-q", code=2)  # writable again, the next plan works


def test_a_full_disk_refuses_in_one_line_and_leaves_nothing(env: Env) -> None:
    seed, small = env.root / "seed", env.root / "small"
    seed.mkdir()
    small.mkdir()
    env.vars["IACCTL_DB"] = str(seed / "store.db")
    env.workspace("net")
    subprocess.run(["sqlite3", str(seed / "store.db"), "PRAGMA wal_checkpoint(TRUNCATE)"], check=True,
                   capture_output=True)
    # A copy of the store on a 4 MiB file system, filled to the last block before the command.
    setup = (f"mount -t tmpfs -o size=4m tmpfs {small}; cp {seed}/store.db {small}/; "
             f"dd if=/dev/zero of={small}/filler bs=64k 2>/dev/null || true")
    env.vars["IACCTL_DB"] = str(small / "store.db")

    r = _in_own_mounts(env, setup, "plan", "net")

    assert r.returncode == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"the disk holding the store is full ({small})" in lines[0], lines
    assert "damaged" not in lines[0] and "free space" in lines[0], lines
    # What the command saw is gone with its namespace; the store it started from is whole.
    env.vars["IACCTL_DB"] = str(seed / "store.db")
    _nothing_left(env)


def test_a_store_damaged_under_a_plan_leaves_a_task_that_never_runs(env: Env) -> None:
    """The damage is met right after the task was written (its first turn reads the pool's freeze
    windows): the task cannot be ended in a damaged store, and the line says so. Once the store is
    repaired, nothing starts it: its command is gone."""
    env.workspace("net")
    con = sqlite3.connect(env.db_path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    roots = [r[0] for r in con.execute("SELECT rootpage FROM sqlite_master WHERE tbl_name = 'freeze_windows'")]
    con.close()
    whole = {}
    with open(env.db_path, "r+b") as f:
        for page in roots:
            f.seek((page - 1) * page_size)
            whole[page] = f.read(page_size)
            f.seek((page - 1) * page_size)
            f.write(b"\xa5" * page_size)

    r = env.run("plan", "net")

    assert r.code == 1, r
    line = r.err.strip().splitlines()[-1]
    assert "Traceback" not in r.err and f"the store {env.db_path} is damaged" in line, r.err
    assert "task 1 could not be ended here: it never runs by itself" in line, line
    # The operator repairs the store (here: the damaged pages as they were).
    with open(env.db_path, "r+b") as f:
        for page, data in whole.items():
            f.seek((page - 1) * page_size)
            f.write(data)
    assert env.ok("store", "check").code == 0
    swept = env.ok("pods", "recover", "--json").json()
    assert any(a["task"] == 1 and a["action"] == "cancelled" for a in swept), swept
    task = env.task(1)
    assert task["status"] == "cancelled" and task["started_at"] is None, task
    assert env.ok("workspace", "show", "net", "--json").json()["lock"] is None
    assert {s["state"] for p in env.ok("pods", "list", "--json").json() for s in p["slots"]} <= {"idle"}
    env.ok("plan", "net", "-q", code=2)


def test_a_read_only_postgresql_store_refuses_in_one_line_and_leaves_nothing(pg_env: Env) -> None:
    import psycopg

    env = pg_env
    env.workspace("net")
    url = env.vars["IACCTL_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    database = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:  # a standby would refuse writes the same way
        conn.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
    try:
        r = env.run("plan", "net")
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET default_transaction_read_only = off")
            conn.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
    assert r.code == 1, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.err, r.err
    assert "takes no writes" in lines[0] and "point IACCTL_DATABASE_URL at the primary" in lines[0], lines
    _nothing_left(env)
