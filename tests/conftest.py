"""Shared fixtures: an isolated iacctl environment per test (its own store, key and work
directories), the real `iacctl` run as a subprocess, Terraform configurations, and a real
PostgreSQL server for the store and workflow tests that run on both backends."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.background import Background
from tests.fixtures.postgres import PostgresServer

FIXTURES = Path(__file__).parent / "fixtures"
TERRAFORM_CONFIGS = FIXTURES / "terraform"
PYTHON = sys.executable


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Env:
    """One isolated iacctl installation: store, secret key, work root, configurations."""

    root: Path
    vars: dict[str, str] = field(default_factory=dict)
    backend: str = "sqlite"

    def argv(self, *args: str) -> list[str]:
        """The command line of `iacctl ARGS` (a Machine runs it inside its namespaces)."""
        return [PYTHON, "-m", "iacctl", *args]

    def run(self, *args: str, input: str | None = None, timeout: float = 180,
            extra_env: dict[str, str] | None = None) -> Result:
        env = {**self.vars, **(extra_env or {})}
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True,
                              input=input, env=env, timeout=timeout, cwd=self.root)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, code: int = 0, **kw: Any) -> Result:
        r = self.run(*args, **kw)
        assert r.code == code, f"iacctl {' '.join(args)} exited {r.code}, expected {code}\n{r.out}\n{r.err}"
        return r

    def spawn(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        env = {**self.vars, **(extra_env or {})}
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=self.root)

    def config(self, name: str, into: str | None = None) -> Path:
        """Copy a configuration from tests/fixtures/terraform into the test's directory."""
        dest = self.root / (into or name)
        shutil.copytree(TERRAFORM_CONFIGS / name, dest)
        return dest

    def workspace(self, name: str = "net", config: str = "simple", *extra: str) -> Path:
        path = self.config(config, into=f"src-{name}")
        self.ok("workspace", "create", name, "--dir", str(path), *extra)
        return path

    def task(self, task_id: int) -> dict[str, Any]:
        return self.ok("tasks", "show", str(task_id), "--json").json()  # type: ignore[no-any-return]

    def tasks(self) -> list[dict[str, Any]]:
        return self.ok("tasks", "list", "--json").json()  # type: ignore[no-any-return]

    def wait_for(self, task_id: int, predicate: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            view = self.task(task_id)
            if predicate(view):
                return view
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} never reached the expected state: {view}")
            time.sleep(0.2)

    def app(self) -> Any:
        """An in-process App on the same store (for reading rows, never to drive the CLI)."""
        from iacctl.services.app import App

        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.vars)
        # It reads and arranges rows; sending follow-ups is the commands' business, not its own.
        os.environ["IACCTL_FOLLOW_UP_BUDGET"] = "0"
        try:
            app = App()
            assert app.store is not None  # opens and migrates with this environment
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return app

    @property
    def db_path(self) -> Path:
        return self.root / "store.db"

    @property
    def work_root(self) -> Path:
        return Path(self.vars["IACCTL_WORK_ROOT"])


def _base_vars(root: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()
            # COLUMNS and LINES would override the size of the terminal a test runs the command on.
            if not k.startswith(("IACCTL_", "TF_", "XDG_")) and k not in ("NO_COLOR", "CI", "COLUMNS", "LINES")}
    keep.update({
        "IACCTL_CONFIG_DIR": str(root / "config"),
        "IACCTL_WORK_ROOT": str(root / "work"),
        "HOME": str(root / "home"),
        "NO_COLOR": "1",
        "PYTHONUNBUFFERED": "1",
        # Issue 20: no agent under the test suite unless a test starts one (tests/test_agent.py).
        "IACCTL_AGENT": "off",
    })
    (root / "home").mkdir(exist_ok=True)
    return keep


_PG: PostgresServer | None = None


def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> PostgresServer:
    global _PG
    if _PG is None:
        server = PostgresServer()
        server.start(tmp_path_factory.mktemp("pg"))
        _PG = server
    return _PG


# End-to-end fixtures: a whole iacctl installation run as subprocesses (with real Terraform), a
# PostgreSQL server, the fake Kubernetes API, run-task services. A test using one is `slow`;
# `./run-tests.sh -m "not slow"` is the fast loop of pure rules and store functions (CI runs all).
END_TO_END_FIXTURES = frozenset({"env", "any_env", "pg_env", "processes", "fake_kube", "pg_url", "postgres",
                                 "team"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if END_TO_END_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _PG is not None:
        _PG.stop()


@pytest.fixture
def env(tmp_path: Path) -> Env:
    """An iacctl environment on SQLite."""
    vars = _base_vars(tmp_path)
    vars["IACCTL_DB"] = str(tmp_path / "store.db")
    return Env(root=tmp_path, vars=vars)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_env(request: pytest.FixtureRequest, tmp_path: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """The same test on SQLite and on a real PostgreSQL server (SPEC C5)."""
    vars = _base_vars(tmp_path)
    if request.param == "sqlite":
        vars["IACCTL_DB"] = str(tmp_path / "store.db")
        yield Env(root=tmp_path, vars=vars)
        return
    yield _postgres_env(tmp_path, tmp_path_factory)


@pytest.fixture
def pg_env(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Env:
    """An iacctl environment on a database of its own on the real PostgreSQL server."""
    return _postgres_env(tmp_path, tmp_path_factory)


def _postgres_env(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Env:
    vars = _base_vars(tmp_path)
    vars["IACCTL_DATABASE_URL"] = postgres_server(tmp_path_factory).create_database("t_" + uuid.uuid4().hex[:12])
    return Env(root=tmp_path, vars=vars, backend="postgres")


@pytest.fixture
def processes() -> Iterator[list[Background]]:
    """Processes a test starts in the background (tests.background.spawn); any still running
    when it ends (a failed assert, a plan waiting for its turn) are killed."""
    started: list[Background] = []
    yield started
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
        process.wait()


@pytest.fixture
def fake_kube(tmp_path: Path) -> Iterator[Any]:
    """A fake Kubernetes API server (tests/fixtures/fake_kube) on 127.0.0.1 with its pods under
    tmp_path/kube; `.kubeconfig` is a kubeconfig for it (context "fake", namespace "iac").
    Stopped at teardown, which kills every process started in its pods."""
    from tests.fixtures.fake_kube import FakeKube

    server = FakeKube(tmp_path / "kube").start()
    server.write_kubeconfig(tmp_path / "kubeconfig", context="fake", namespace="iac")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def team(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Machines of a team (tests/fixtures/machines.py: Linux namespaces with their own hostname,
    pids and machine id) sharing one PostgreSQL store and one key. Every machine is powered off at
    teardown, which ends all of its processes."""
    from tests.fixtures.machines import Team

    server = postgres_server(tmp_path_factory)
    url = server.create_database("t_" + uuid.uuid4().hex[:12])
    machines = Team(tmp_path / "machines", url)
    try:
        yield machines
    finally:
        machines.power_off_all()
