"""Faults end cleanly (issue 13; SPEC E2, E3, X4): a killed Terraform, a busy or damaged store,
a full disk, a file that is not a store, absurd numbers. Every fault is real: a process holding
BEGIN IMMEDIATE on the SQLite file, bytes overwritten in a copy of a real store, a small tmpfs
as the work root, kill -9 of the real terraform while a local-exec provisioner sleeps. After
each: one line, no "internal error", the store's rows as before (or as the termination path
leaves them), no process of the task left running, and the next plan works."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.background import SLOW_STARTED, Background, spawn
from tests.cli.test_bad_input import assert_one_clear_line, rows, snapshot
from tests.conftest import Env, Result

HOLD_WRITE_LOCK = (
    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
    "c.execute('BEGIN IMMEDIATE'); print('held', flush=True); sys.stdin.read(); c.execute('ROLLBACK')"
)


# -- the faults ------------------------------------------------------------------------------------


class WriteLockHolder:
    """Another process holding a write transaction (BEGIN IMMEDIATE) on the real store file."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD_WRITE_LOCK, str(db)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "held"

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


@pytest.fixture
def holder(env: Env) -> Iterator[Callable[[], WriteLockHolder]]:
    made: list[WriteLockHolder] = []

    def make() -> WriteLockHolder:
        made.append(WriteLockHolder(env.db_path))
        return made[-1]

    yield make
    for h in made:
        if h.proc.poll() is None:
            h.proc.kill()
            h.proc.wait()


@pytest.fixture
def small_work_root(env: Env) -> Iterator[Path]:
    """The work root on a 2 MiB tmpfs (we run as root), unmounted at teardown."""
    root = env.work_root
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(root)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` to the last block."""
    filler = directory / "filler.bin"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def damaged_copy(env: Env) -> Path:
    """A copy of the test's real store with the root page of the tasks table overwritten."""
    con = sqlite3.connect(env.db_path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    root_page = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'tasks'").fetchone()[0]
    con.close()
    copy = env.root / "damaged.db"
    shutil.copyfile(env.db_path, copy)
    with open(copy, "r+b") as f:
        f.seek((root_page - 1) * page_size)
        f.write(b"\xa5" * page_size)
    return copy


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def started(marker: str, timeout: float = 10) -> list[int]:
    """Pids of the processes holding `marker`, once there are some: Terraform says "Executing"
    just before it starts the provisioner's shell, which a loaded machine may not have run yet."""
    deadline = time.monotonic() + timeout
    while not (found := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def sleep_marker() -> str:
    """A sleep duration no other test uses, to find this test's provisioner processes. Its last
    digit is never 0: Terraform writes the number without trailing zeros (117.10645 for
    117.106450), and the marker would not be found in one run of ten."""
    return f"117.{random.randrange(10**5):05d}{random.randrange(1, 10)}"


def terraform_pid(env: Env, task_id: int) -> int:
    pid = rows(env.db_path, f"SELECT child_pid FROM tasks WHERE id = {task_id}")[0]["child_pid"]
    assert pid, "the task recorded no terraform pid"
    return int(pid)


def no_internal_error(*results: Result) -> None:
    for r in results:
        assert "internal error" not in r.out + r.err, r.out + r.err
        assert "Traceback" not in r.out + r.err, r.out + r.err


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- item 1: a killed Terraform leaves nothing running ------------------------------------------------


@pytest.mark.slow
def test_terraform_killed_during_applying_ends_its_provisioners_too(env: Env, processes: list[Background]) -> None:
    env.workspace("net", "slow_apply")
    marker = sleep_marker()
    env.ok("workspace", "var", "set", "net", "sleep", marker)
    env.ok("plan", "net", "-q", code=2)
    applier = spawn(env, processes, "confirm-apply", "1")
    applier.wait_line(SLOW_STARTED)
    assert started(f"sleep {marker}"), "the provisioner's sleep should be running"

    os.kill(terraform_pid(env, 1), signal.SIGKILL)  # the OOM killer, or kill -9
    code, out, err = applier.finish()

    assert code == 1, out + err
    no_internal_error(Result(code, out, err))
    task = env.task(1)
    assert task["status"] == "failed" and "terraform apply failed" in task["error"]
    # Nothing the task started is left running: not `sh -c sleep`, not `sleep`.
    deadline = time.monotonic() + 5
    while processes_with(f"sleep {marker}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(f"sleep {marker}") == []
    assert not (env.work_root / "local" / "local" / "slot-0").exists()
    # Terraform had written `first` into its state: it is kept, so the workspace is unlocked.
    assert [(v["task"], v["partial"]) for v in env.ok("state", "versions", "net", "--json").json()] == [(1, True)]
    assert env.ok("workspace", "show", "net", "--json").json()["lock"] is None
    env.ok("workspace", "var", "set", "net", "sleep", "0")
    env.ok("plan", "net", "-q", code=2)


# -- item 2: a busy store --------------------------------------------------------------------------


@pytest.mark.slow
def test_plan_on_a_store_kept_busy_fails_in_one_line_and_leaves_nothing(
    env: Env, holder: Callable[[], WriteLockHolder]
) -> None:
    env.workspace("net")
    before = snapshot(env.db_path)
    lock = holder()

    r = env.run("plan", "net", extra_env={"IACCTL_BUSY_TIMEOUT": "1"})

    line = assert_one_clear_line(r)
    assert r.code == 1
    no_internal_error(r)
    assert f"the store {env.db_path} is busy" in line, line
    assert f"a process that is not iacctl (pid {lock.proc.pid}" in line, line
    assert "try again when it ends" in line and "IACCTL_BUSY_TIMEOUT" in line, line
    # Reads go on while a writer holds the store (WAL), and an online backup can be taken.
    assert env.ok("tasks", "list", "--json").json() == []
    env.ok("store", "backup", str(env.root / "during.db"))
    lock.release()
    assert snapshot(env.db_path) == before
    # Nothing was left behind to act later; the next plan works.
    env.ok("plan", "net", "-q", code=2)
    assert [t["id"] for t in env.tasks()] == [1]


def test_busy_timeout_must_be_a_number_of_seconds(env: Env) -> None:
    r = env.run("tasks", "list", extra_env={"IACCTL_BUSY_TIMEOUT": "soon"})
    line = assert_one_clear_line(r)
    assert r.code == 64 and "IACCTL_BUSY_TIMEOUT must be a number of seconds" in line


def test_heartbeat_timeout_must_be_a_number_of_seconds(env: Env) -> None:
    r = env.run("tasks", "list", extra_env={"IACCTL_HEARTBEAT_TIMEOUT": "2m"})
    line = assert_one_clear_line(r)
    assert r.code == 64 and "IACCTL_HEARTBEAT_TIMEOUT must be a number of seconds" in line


# -- items 3 and 5: a damaged store, files that are not a store ------------------------------------


@pytest.mark.slow
def test_damaged_store_is_reported_in_one_line_and_never_written(env: Env) -> None:
    env.workspace("net")
    env.ok("plan", "net", "-q", code=2)
    copy = damaged_copy(env)
    digest = sha(copy)

    results = [env.run("--db", str(copy), *args) for args in
               (("tasks", "list"), ("plan", "net"), ("confirm-apply", "1"), ("cancel", "1"), ("tasks", "show", "1"))]

    for r in results:
        line = assert_one_clear_line(r)
        assert r.code == 1, line
        assert f"the store {copy} is damaged (database disk image is malformed)" in line, line
        assert "iacctl store check" in line and ".recover" in line, line
    no_internal_error(*results)
    assert sha(copy) == digest  # not one byte written into the damaged store

    check = env.run("--db", str(copy), "store", "check")
    line = assert_one_clear_line(check)
    assert check.code == 1 and f"the store {copy} is damaged:" in line and "restore a backup" in line, line
    # The real store is whole; its backup is too, and holds the same rows.
    assert env.ok("store", "check").out == f"store {env.db_path}: ok\n"
    backup = env.root / "backup.db"
    env.ok("store", "backup", str(backup))
    assert env.ok("--db", str(backup), "store", "check").code == 0
    assert snapshot(backup) == snapshot(env.db_path)
    again = env.run("store", "backup", str(backup))
    assert again.code == 64 and "already exists" in assert_one_clear_line(again)
    # The next plan on the workspace (in its whole store) works: task 1 is cancelled first.
    env.ok("cancel", "1")
    env.ok("plan", "net", "-q", code=2)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _other_sqlite(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    con.execute("INSERT INTO invoices (total) VALUES (12.5)")
    con.commit()
    con.close()


def _text(path: Path) -> None:
    path.write_text("remember to water the plants\n")


@pytest.mark.parametrize(("make", "says"), [
    pytest.param(_empty, "is empty (0 bytes), not an iacctl store", id="zero-bytes"),
    pytest.param(_other_sqlite, "is an SQLite database but not an iacctl store (it holds tables invoices)",
                 id="another-sqlite-database"),
    pytest.param(_text, "is not an SQLite database, so not an iacctl store", id="not-a-database"),
])
def test_a_file_that_is_not_an_iacctl_store_is_refused(env: Env, make: Callable[[Path], None], says: str) -> None:
    path = env.root / "other.db"
    make(path)
    digest = sha(path)

    r = env.run("--db", str(path), "workspace", "list")

    line = assert_one_clear_line(r)
    assert r.code == 1 and f"{path} {says}" in line, line
    no_internal_error(r)
    assert sha(path) == digest
    check = env.run("--db", str(path), "store", "check")
    assert check.code == 1 and "iacctl: the store" in assert_one_clear_line(check)


def test_store_backup_on_postgresql_says_to_use_pg_dump(env: Env) -> None:
    vars = {k: v for k, v in env.vars.items() if k != "IACCTL_DB"}
    vars["IACCTL_DATABASE_URL"] = "postgresql://iacctl@127.0.0.1:9/iacctl"
    r = Env(root=env.root, vars=vars).run("store", "backup", "x.dump")
    line = assert_one_clear_line(r)
    assert r.code == 64 and "back it up with pg_dump" in line


# -- item 4: a full disk at fetching ---------------------------------------------------------------


@pytest.mark.slow
def test_full_work_disk_at_fetching_names_the_cause_and_the_next_plan_works(env: Env, small_work_root: Path) -> None:
    env.workspace("net")
    filler = fill(small_work_root)

    r = env.run("plan", "net", "-q")

    line = assert_one_clear_line(r)
    assert r.code == 1
    no_internal_error(r)
    assert "task 1 failed at stage fetching: no space left on device" in line, line
    assert str(small_work_root / "local" / "local" / "slot-0") in line, line
    task = env.task(1)
    assert task["status"] == "failed" and task["error"] in line
    assert env.ok("workspace", "show", "net", "--json").json()["lock"] is None
    assert [s["state"] for s in env.ok("pods", "list", "--json").json()[0]["slots"]] == ["idle"] * 3

    filler.unlink()
    env.ok("plan", "net", "-q", code=2)


# -- item 6: a full disk while applying ------------------------------------------------------------


@pytest.mark.slow
def test_full_work_disk_while_applying_keeps_the_state_terraform_printed_and_logs_no_secret(
    env: Env, small_work_root: Path
) -> None:
    env.workspace("net", "fill_disk")
    env.ok("workspace", "var", "set", "net", "db_password", "hunter2-s3cret", "--sensitive")
    env.ok("plan", "net", "-q", code=2)

    r = env.run("confirm-apply", "1")

    # Issue 9: what it was about to apply, then one line saying why it failed.
    restated, line = r.err.splitlines()
    assert restated.startswith("iacctl: about to apply task 1 of workspace net") and "hunter2" not in r.err
    assert r.code == 1
    no_internal_error(r)
    assert "terraform apply failed" in line and "Unterminated" not in line, line
    assert ("partial state saved as state version 1 (from Terraform's output: it could not write its state file)"
            in line), line
    # The state kept is the one Terraform could not write: every resource, the outputs.
    state = json.loads(env.ok("state", "pull", "net").out)
    assert sorted(res["name"] for res in state["resources"]) == ["after", "fill", "first"]
    token = state["outputs"]["token"]["value"]
    # X2: neither the sensitive variable nor the sensitive output Terraform printed is logged.
    log = env.ok("tasks", "logs", "1").out
    assert "Terraform printed the state it could not write" in log
    assert "hunter2-s3cret" not in log + r.out + r.err and token not in log + r.out + r.err
    assert '"lineage"' not in log
    # iacctl holds the real state: the workspace is unlocked, the work directory removed.
    assert env.ok("workspace", "show", "net", "--json").json()["lock"] is None
    assert not (small_work_root / "local" / "local" / "slot-0").exists()
    # With the work directory gone the space is free again: the next plan works.
    assert env.run("plan", "net", "-q").code in (0, 2)


@pytest.mark.slow
def test_apply_whose_partial_state_cannot_be_read_keeps_lock_and_work_directory(
    env: Env, processes: list[Background]
) -> None:
    """Terraform is killed (kill -9) just after its state file was cut short, as a write on a
    full disk or by a dying process leaves it: iacctl does not hold the real state, so the
    workspace stays locked with the reason, the work directory is kept, and `state
    save-partial` stores the state once a whole one is there."""
    env.workspace("net", "slow_apply")
    marker = sleep_marker()
    env.ok("workspace", "var", "set", "net", "sleep", marker)
    env.ok("plan", "net", "-q", code=2)
    applier = spawn(env, processes, "confirm-apply", "1")
    applier.wait_line(SLOW_STARTED)
    slot = env.work_root / "local" / "local" / "slot-0"
    whole = (slot / "terraform.tfstate").read_bytes()
    (slot / "terraform.tfstate").write_bytes(whole[: len(whole) // 2])
    os.kill(terraform_pid(env, 1), signal.SIGKILL)
    code, out, err = applier.finish()

    assert code == 1
    no_internal_error(Result(code, out, err))
    line = err.strip().splitlines()[-1]
    kept = env.work_root / "kept" / "task-1"
    assert "the partial state could not be saved: terraform.tfstate cannot be read whole" in line, line
    assert f"the workspace stays locked; the work directory is kept at {kept}" in line, line
    assert "iacctl state save-partial 1" in line, line
    assert env.task(1)["status"] == "failed"
    lock = env.ok("workspace", "show", "net", "--json").json()["lock"]
    assert lock["task"] == 1 and "iacctl state save-partial 1" in lock["reason"], lock
    assert (kept / "terraform.tfstate").exists() and not slot.exists()
    assert processes_with(f"sleep {marker}") == []
    assert env.ok("state", "versions", "net", "--json").json() == []

    # While the kept state is still cut short, save-partial says so and changes nothing.
    before = snapshot(env.db_path)
    r = env.run("state", "save-partial", "1")
    assert r.code == 1 and "still cannot be read whole" in assert_one_clear_line(r)
    assert snapshot(env.db_path) == before
    # A whole state there (what Terraform's errored.tfstate holds once it can be written).
    (kept / "errored.tfstate").write_bytes(whole)
    saved = env.ok("state", "save-partial", "1", "--json").json()
    assert saved["partial"] is True and saved["task"] == 1
    assert env.ok("workspace", "show", "net", "--json").json()["lock"] is None
    assert not kept.exists()
    env.ok("workspace", "var", "set", "net", "sleep", "0")
    env.ok("plan", "net", "-q", code=2)


# -- item 7: no fault is an "internal error" --------------------------------------------------------


def _busy(env: Env) -> list[Result]:
    lock = WriteLockHolder(env.db_path)
    try:
        return [env.run(*args, extra_env={"IACCTL_BUSY_TIMEOUT": "0.5"}) for args in
                (("plan", "net"), ("workspace", "var", "set", "net", "a", "b"), ("cancel", "1"))]
    finally:
        lock.release()


def _damaged(env: Env) -> list[Result]:
    copy = damaged_copy(env)
    return [env.run("--db", str(copy), *args) for args in
            (("tasks", "list"), ("plan", "net"), ("cancel", "1"), ("store", "check"), ("confirm-apply", "1"))]


def _not_a_store(env: Env) -> list[Result]:
    results = []
    for make in (_empty, _other_sqlite, _text):
        path = env.root / f"{make.__name__}.db"
        make(path)
        results += [env.run("--db", str(path), "tasks", "list"), env.run("--db", str(path), "plan", "net")]
    return results


def _huge_numbers(env: Env) -> list[Result]:
    n = "99999999999999999999"
    return [env.run(*args) for args in (("tasks", "show", n), ("confirm-apply", n), ("cancel", n),
                                        ("tasks", "list", "--limit", n), ("tasks", "logs", n))]


def _full_disk(env: Env) -> list[Result]:
    root = env.work_root
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)], check=True)
    try:
        fill(root)
        return [env.run("plan", "net", "-q")]
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


@pytest.mark.slow
@pytest.mark.parametrize("fault", [_busy, _damaged, _not_a_store, _huge_numbers, _full_disk],
                         ids=lambda f: f.__name__.strip("_"))
def test_no_store_disk_or_input_fault_is_an_internal_error(env: Env, fault: Callable[[Env], list[Result]]) -> None:
    env.workspace("net")
    results = fault(env)
    assert results
    for r in results:
        assert r.code != 0, r
        assert_one_clear_line(r)
    no_internal_error(*results)
    for task in env.tasks():
        assert "internal error" not in (task["error"] or "")
