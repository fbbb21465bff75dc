"""Bad input of every kind (SPEC X4): one clear line on stderr, the exit code of SPEC C3, no
traceback, and nothing written to the store. Each case runs the real `iacctl` against a store
that already holds a workspace (and, for the wrong-status cases, finished tasks), and compares
every row of every table before and after."""

from __future__ import annotations

import ctypes
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYTHON, Env, Result

USAGE, FAILED, REFUSED = 64, 1, 5


# -- reading the store as it is on disk -----------------------------------------------------------


Snapshot = dict[str, list[tuple[Any, ...]]]


def snapshot(db: Path) -> Snapshot:
    """Every row of every table (alembic_version included), in a stable order. A machine's pod
    heartbeat is left out: any command beats it when its last beat is a few seconds old (issue 18
    item 4), a sign of life, not a record the command changed."""
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        shot = {}
        for t in tables:
            names = [r[1] for r in con.execute(f'PRAGMA table_info("{t}")')
                     if not (t == "pods" and r[1] == "heartbeat_at")]
            listed = ", ".join(f'"{n}"' for n in names)
            shot[t] = sorted(con.execute(f'SELECT {listed} FROM "{t}"').fetchall(), key=repr)
        return shot
    finally:
        con.close()


def rows(db: Path, sql: str) -> list[sqlite3.Row]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def assert_one_clear_line(r: Result) -> str:
    """X4: exactly one non-empty line on stderr, `iacctl: ...`, and no traceback anywhere."""
    assert "Traceback" not in r.out + r.err, r.out + r.err
    lines = r.err.splitlines()
    assert len(lines) == 1 and r.err.endswith("\n"), f"expected one line on stderr, got:\n{r.err}"
    assert lines[0].startswith("iacctl: ") and lines[0][len("iacctl: "):].strip(), lines[0]
    return lines[0]


# -- set-ups: what the store holds before the bad command ------------------------------------------


def with_workspace(env: Env) -> None:
    env.workspace("net")  # config copied to src-net


def with_applied_task(env: Env) -> None:
    """Task 1 applied (plan -> confirm-apply)."""
    with_workspace(env)
    env.ok("plan", "net", "-q", code=2)
    env.ok("confirm-apply", "1", "-q")


def with_plan_only_task(env: Env) -> None:
    """Task 1 is a speculative plan, planned_and_finished (with changes, hence exit 2)."""
    with_workspace(env)
    env.ok("plan", "net", "--plan-only", "-q", code=2)


def with_deleted_directory(env: Env) -> None:
    with_workspace(env)
    shutil.rmtree(env.root / "src-net")


def with_a_file(env: Env) -> None:
    with_workspace(env)
    (env.root / "afile").write_text("not a directory\n")


def with_dangling_symlink(env: Env) -> None:
    with_workspace(env)
    (env.root / "dangling").symlink_to(env.root / "nowhere")


def with_unreadable_directory(env: Env) -> None:
    with_workspace(env)
    locked = env.root / "locked"
    locked.mkdir()
    (locked / "main.tf").write_text("# cannot be read\n")
    locked.chmod(0)


def with_run_task(env: Env) -> None:
    """Workspace net and run task opa (written directly: no service answers its verification)."""
    from iacctl.store.models import RunTask

    with_workspace(env)
    app = env.app()
    with app.store.write() as session:
        session.add(RunTask(name="opa", url="http://127.0.0.1:9/run-task", timeout_s=600.0, created_at=0.0,
                            updated_at=0.0))
    app.close()
KUBE_ARGS = ("--namespace", "iac", "--image", "registry.example/iacctl-runner:1")


def with_kube_pool(env: Env) -> None:
    with_workspace(env)
    env.ok("pool", "create", "k8s", "--backend", "kubernetes", *KUBE_ARGS)


def with_failed_task(env: Env) -> None:
    """Task 1 failed at init (a configuration with a syntax error): it saved no plan."""
    with_workspace(env)
    env.workspace("bad", "broken")
    assert env.run("plan", "bad").code == FAILED


def with_kube_pool_used(env: Env) -> None:
    with_kube_pool(env)
    env.ok("workspace", "create", "web", "--dir", "src-net", "--pool", "k8s")


def with_kubeconfig(env: Env) -> None:
    """A kubeconfig with one context, prod (never contacted)."""
    with_workspace(env)
    (env.root / "kubeconfig").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: prod\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: prod, context: {cluster: c, user: u, namespace: iac}}]\n")
    env.vars["KUBECONFIG"] = str(env.root / "kubeconfig")


def with_kube_pool_and_kubeconfig(env: Env) -> None:
    with_kubeconfig(env)
    env.ok("pool", "create", "k8s", "--backend", "kubernetes", *KUBE_ARGS, "--context", "prod")


# -- running a case --------------------------------------------------------------------------------


def _path_without_terraform() -> str:
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not (Path(d) / "terraform").exists()]
    return os.pathsep.join(dirs)


def _drop_read_override() -> None:
    """In the child, before exec: as root, remove CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from
    the bounding set, so the exec'd iacctl is bound by mode 000 like any user (root reads
    everything otherwise)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for cap in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def run_unable_to_read(env: Env, *args: str) -> Result:
    preexec = _drop_read_override if os.geteuid() == 0 else None
    proc = subprocess.run([PYTHON, "-m", "iacctl", *args], capture_output=True, text=True, env=env.vars,
                          cwd=env.root, timeout=180, preexec_fn=preexec)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    code: int
    says: str  # what the one line must mention, so the user knows what was wrong
    setup: Callable[[Env], None] = with_workspace
    hide_terraform: bool = False
    cannot_read: bool = False


LONG_NAME = "w" * 200

CASES = [
    # Unknown names and ids: C3 "64 bad usage or unknown name/id".
    pytest.param(Case(("plan", "nope"), USAGE, "unknown workspace 'nope'"), id="plan-unknown-workspace"),
    pytest.param(Case(("workspace", "show", "nope"), USAGE, "unknown workspace 'nope'"),
                 id="show-unknown-workspace"),
    pytest.param(Case(("workspace", "var", "set", "nope", "region", "eu-west-1"), USAGE, "unknown workspace 'nope'"),
                 id="var-set-unknown-workspace"),
    pytest.param(Case(("state", "versions", "nope"), USAGE, "unknown workspace 'nope'"),
                 id="state-versions-unknown-workspace"),
    pytest.param(Case(("workspace", "lock", "nope"), USAGE, "unknown workspace 'nope'"),
                 id="lock-unknown-workspace"),
    pytest.param(Case(("tasks", "show", "99"), USAGE, "unknown task 99"), id="show-unknown-task"),
    pytest.param(Case(("tasks", "logs", "99"), USAGE, "unknown task 99"), id="logs-unknown-task"),
    pytest.param(Case(("confirm-apply", "99"), USAGE, "unknown task 99"), id="confirm-apply-unknown-task"),
    pytest.param(Case(("cancel", "99"), USAGE, "unknown task 99"), id="cancel-unknown-task"),
    pytest.param(Case(("tasks", "show", "abc"), USAGE, "valid integer"), id="task-id-not-an-integer"),
    pytest.param(Case(("confirm-apply", "1.5"), USAGE, "valid integer"), id="confirm-apply-id-not-an-integer"),
    # 5b (issue 13): a number beyond the store's 64-bit integers names nothing: bad usage.
    *[pytest.param(Case(args, USAGE, "less than or equal to 9223372036854775807"), id=case_id)
      for case_id, args in [
          ("tasks-show-id-beyond-64-bits", ("tasks", "show", "99999999999999999999")),
          ("tasks-logs-id-beyond-64-bits", ("tasks", "logs", "99999999999999999999")),
          ("confirm-apply-id-beyond-64-bits", ("confirm-apply", "99999999999999999999")),
          ("cancel-id-beyond-64-bits", ("cancel", "99999999999999999999")),
          ("limit-beyond-64-bits", ("tasks", "list", "--limit", "99999999999999999999")),
          ("state-version-beyond-64-bits", ("state", "pull", "net", "--version", "99999999999999999999")),
          ("save-partial-id-beyond-64-bits", ("state", "save-partial", "99999999999999999999")),
      ]],
    pytest.param(Case(("tasks", "show", "9223372036854775807"), USAGE, "unknown task 9223372036854775807"),
                 id="tasks-show-largest-id"),
    # --dir.
    pytest.param(Case(("workspace", "create", "web", "--dir", "missing"), USAGE, "missing does not exist"),
                 id="dir-does-not-exist"),
    pytest.param(Case(("workspace", "create", "web", "--dir", "afile"), USAGE, "afile is not a directory",
                      setup=with_a_file), id="dir-is-a-file"),
    pytest.param(Case(("workspace", "create", "web", "--dir", "dangling"), USAGE, "dangling does not exist",
                      setup=with_dangling_symlink), id="dir-is-a-dangling-symlink"),
    pytest.param(Case(("workspace", "create", "web", "--dir", "locked"), USAGE, "locked cannot be read",
                      setup=with_unreadable_directory, cannot_read=True), id="dir-unreadable"),
    # Names. "Already exists" is a usage error (64), not a refusal (5): nothing about the
    # workspace's state would make the same command succeed later; the user must pick a name.
    pytest.param(Case(("workspace", "create", "net", "--dir", "src-net"), USAGE, "workspace 'net' already exists"),
                 id="workspace-already-exists"),
    pytest.param(Case(("workspace", "create", "bad name", "--dir", "src-net"), USAGE,
                      "invalid workspace name 'bad name'"), id="name-with-space"),
    pytest.param(Case(("workspace", "create", "../x", "--dir", "src-net"), USAGE, "invalid workspace name '../x'"),
                 id="name-with-path"),
    pytest.param(Case(("workspace", "create", "", "--dir", "src-net"), USAGE, "invalid workspace name ''"),
                 id="name-empty"),
    pytest.param(Case(("workspace", "create", LONG_NAME, "--dir", "src-net"), USAGE, "at most 90"),
                 id="name-200-characters"),
    pytest.param(Case(("workspace", "create", "réseau-東京", "--dir", "src-net"), USAGE,
                      "invalid workspace name 'réseau-東京'"), id="name-unicode"),
    pytest.param(Case(("workspace", "var", "set", "net", "1abc", "v"), USAGE,
                      "invalid Terraform variable name '1abc'"), id="variable-name-starts-with-digit"),
    pytest.param(Case(("workspace", "var", "set", "net", "a b", "v"), USAGE, "invalid Terraform variable name 'a b'"),
                 id="variable-name-with-space"),
    # Flag values.
    pytest.param(Case(("workspace", "create", "web", "--dir", "src-net", "--plan-lifetime", "soon"), USAGE,
                      "invalid duration 'soon'"), id="plan-lifetime-soon"),
    pytest.param(Case(("pool", "set", "local", "--slots-per-pod", "0"), USAGE, "--slots-per-pod must be between"),
                 id="slots-per-pod-0"),
    pytest.param(Case(("tasks", "list", "--status", "nonsense"), USAGE, "unknown status 'nonsense'"),
                 id="status-nonsense"),
    pytest.param(Case(("tasks", "list", "--limit", "0"), USAGE, "--limit must be at least 1"), id="limit-0"),
    pytest.param(Case(("tasks", "list", "--bogus"), USAGE, "No such option: --bogus"), id="unknown-flag"),
    pytest.param(Case(("frobnicate",), USAGE, "No such command 'frobnicate'"), id="unknown-command"),
    # Terraform binary (E10).
    pytest.param(Case(("workspace", "create", "web", "--dir", "src-net", "--terraform", "/nonexistent/terraform"),
                      USAGE, "/nonexistent/terraform does not exist or is not executable"),
                 id="terraform-path-missing-at-create"),
    # At plan time the workspace itself is fine but this machine cannot run it: the command
    # failed (1), and no task is queued that could never start.
    pytest.param(Case(("plan", "net"), FAILED, "'terraform' was not found on PATH", hide_terraform=True),
                 id="terraform-not-on-path-at-plan"),
    pytest.param(Case(("plan", "net"), USAGE, "does not exist", setup=with_deleted_directory),
                 id="workspace-directory-deleted"),
    # Wrong status: C3 "5 refused".
    pytest.param(Case(("confirm-apply", "1"), REFUSED, "task 1 was already confirmed", setup=with_applied_task),
                 id="confirm-apply-applied-task"),
    pytest.param(Case(("confirm-apply", "1"), REFUSED, "task 1 is planned_and_finished, not apply_pending",
                      setup=with_plan_only_task), id="confirm-apply-plan-only-task"),
    pytest.param(Case(("cancel", "1"), REFUSED, "task 1 is already applied", setup=with_applied_task),
                 id="cancel-finished-task"),
    pytest.param(Case(("workspace", "unlock", "net"), REFUSED, "workspace net is not locked"),
                 id="unlock-unlocked-workspace"),
    pytest.param(Case(("state", "save-applied", "1"), REFUSED, "task 1 is applied, not applied_state_error",
                      setup=with_applied_task), id="save-applied-not-state-error"),
    # Run tasks (R1): unknown names, bad stage/enforcement/URL/key file, a failed verification.
    pytest.param(Case(("runtask", "attach", "nope", "net"), USAGE, "unknown run task 'nope'", setup=with_run_task),
                 id="runtask-attach-unknown-run-task"),
    pytest.param(Case(("runtask", "attach", "opa", "nope"), USAGE, "unknown workspace 'nope'", setup=with_run_task),
                 id="runtask-attach-unknown-workspace"),
    pytest.param(Case(("runtask", "attach", "opa", "net", "--stage", "during_plan"), USAGE,
                      "unknown stage 'during_plan'", setup=with_run_task), id="runtask-attach-bad-stage"),
    pytest.param(Case(("runtask", "attach", "opa", "net", "--enforcement", "strict"), USAGE,
                      "unknown enforcement 'strict'", setup=with_run_task), id="runtask-attach-bad-enforcement"),
    pytest.param(Case(("runtask", "detach", "opa", "net"), USAGE, "run task opa is not attached to workspace net",
                      setup=with_run_task), id="runtask-detach-not-attached"),
    pytest.param(Case(("runtask", "create", "x", "--url", "ftp://checks.example/x"), USAGE,
                      "invalid run task URL 'ftp://checks.example/x'"), id="runtask-create-bad-url"),
    pytest.param(Case(("runtask", "create", "x", "--url", "checks.example"), USAGE, "invalid run task URL"),
                 id="runtask-create-relative-url"),
    pytest.param(Case(("runtask", "create", "bad name", "--url", "http://127.0.0.1:9/x"), USAGE,
                      "invalid run task name 'bad name'"), id="runtask-create-bad-name"),
    pytest.param(Case(("runtask", "create", "x", "--url", "http://127.0.0.1:9/x", "--hmac-key-file", "missing.key"),
                      USAGE, "cannot read HMAC key file missing.key"), id="runtask-create-missing-key-file"),
    pytest.param(Case(("runtask", "create", "x", "--url", "http://127.0.0.1:9/x", "--hmac-key-file", "src-net"),
                      USAGE, "cannot read HMAC key file src-net"), id="runtask-create-key-file-is-a-directory"),
    pytest.param(Case(("runtask", "create", "x", "--url", "http://127.0.0.1:9/x", "--timeout", "soon"), USAGE,
                      "invalid duration 'soon'"), id="runtask-create-bad-timeout"),
    pytest.param(Case(("runtask", "create", "opa", "--url", "http://127.0.0.1:9/x"), USAGE,
                      "run task 'opa' already exists", setup=with_run_task), id="runtask-create-exists"),
    pytest.param(Case(("runtask", "create", "x", "--url", "http://127.0.0.1:9/x"), FAILED,
                      "verification request failed: cannot reach http://127.0.0.1:9/x"),
                 id="runtask-create-verification-fails"),
    pytest.param(Case(("runtask", "update", "opa", "--url", "http://127.0.0.1:9/y"), FAILED,
                      "the run task was not saved", setup=with_run_task), id="runtask-update-verification-fails"),
    pytest.param(Case(("runtask", "update", "nope", "--timeout", "5m"), USAGE, "unknown run task 'nope'"),
                 id="runtask-update-unknown"),
    pytest.param(Case(("runtask", "results", "99"), USAGE, "unknown task 99"), id="runtask-results-unknown-task"),
    pytest.param(Case(("runtask", "serve", "--listen", "nowhere"), USAGE, "--listen must be HOST:PORT"),
                 id="runtask-serve-bad-listen"),
    pytest.param(Case(("runtask", "serve", "--listen", "127.0.0.1:8800", "--public-url", "iacctl.example.com"),
                      USAGE, "invalid --public-url 'iacctl.example.com'"), id="runtask-serve-bad-public-url"),
    # Kubernetes pools (issue 3): checked before anything is written; no cluster is contacted.
    *[pytest.param(Case(("pool", "create", name, "--backend", backend, *args), USAGE, says, setup=setup), id=case_id)
      for case_id, name, backend, args, says, setup in [
          ("pool-backend-unknown", "k8s", "docker", KUBE_ARGS, "unknown backend 'docker'", with_workspace),
          ("pool-namespace-missing", "k8s", "kubernetes", ("--image", "r/i:1"), "--namespace is required",
           with_workspace),
          ("pool-image-missing", "k8s", "kubernetes", ("--namespace", "iac"), "--image is required", with_workspace),
          ("pool-name-uppercase", "K8s_Prod", "kubernetes", KUBE_ARGS, "invalid pool name 'K8s_Prod'", with_workspace),
          ("pool-slots-0", "k8s", "kubernetes", (*KUBE_ARGS, "--slots-per-pod", "0"), "--slots-per-pod must be",
           with_workspace),
          ("pool-min-above-max", "k8s", "kubernetes", (*KUBE_ARGS, "--min-pods", "5", "--max-pods", "2"),
           "0 <= min <= max", with_workspace),
          ("pool-on-lost-context", "k8s", "kubernetes", (*KUBE_ARGS, "--on-lost-context", "pray"),
           "--on-lost-context must be replan or warmup", with_workspace),
          ("pool-scale-down-delay", "k8s", "kubernetes", (*KUBE_ARGS, "--scale-down-delay", "soon"),
           "invalid duration 'soon'", with_workspace),
          ("pool-work-root-relative", "k8s", "kubernetes", (*KUBE_ARGS, "--work-root", "var/lib"),
           "--work-root must be an absolute path", with_workspace),
          ("pool-cpu-nonsense", "k8s", "kubernetes", (*KUBE_ARGS, "--cpu", "lots"), "invalid --cpu 'lots'",
           with_workspace),
          ("pool-already-exists", "k8s", "kubernetes", KUBE_ARGS, "pool 'k8s' already exists", with_kube_pool),
      ]],
    pytest.param(Case(("pool", "freeze", "nope", "--from", "2030-01-01", "--until", "2030-01-02"), USAGE,
                      "unknown pool 'nope'"), id="freeze-unknown-pool"),
    pytest.param(Case(("pool", "freeze", "k8s", "--from", "soon", "--until", "2030-01-02"), USAGE,
                      "invalid --from 'soon'", setup=with_kube_pool), id="freeze-from-nonsense"),
    pytest.param(Case(("pool", "freeze", "k8s", "--from", "2030-01-02", "--until", "2030-01-01"), USAGE,
                      "must end after it starts", setup=with_kube_pool), id="freeze-until-before-from"),
    pytest.param(Case(("pool", "unfreeze", "k8s"), REFUSED, "pool k8s has no freeze window",
                      setup=with_kube_pool), id="unfreeze-without-window"),
    pytest.param(Case(("pods", "list", "--pool", "nope"), USAGE, "unknown pool 'nope'"), id="pods-list-unknown-pool"),
    pytest.param(Case(("workspace", "create", "web", "--dir", "src-net", "--pool", "nope"), USAGE,
                      "unknown pool 'nope'"), id="workspace-unknown-pool"),
    # A workspace with no state has no version to pull: an unknown id (64).
    pytest.param(Case(("state", "pull", "net"), USAGE, "workspace net has no state yet"), id="state-pull-no-state"),
    # Issue 9 item 8: a value that is not there, a file in a directory that is not there, a near miss.
    pytest.param(Case(("workspace", "var", "set", "net", "region"), USAGE,
                      "no value given for region: give it as an argument, or '-'"), id="var-set-without-value-no-tty"),
    pytest.param(Case(("--db", "nowhere/store.db", "workspace", "list"), USAGE,
                      "--db nowhere/store.db: the directory nowhere does not exist"), id="db-directory-missing"),
    pytest.param(Case(("workspace", "list", "--db", "nowhere/store.db"), USAGE,
                      "--db nowhere/store.db: the directory nowhere does not exist"),
                 id="db-after-the-command-directory-missing"),
    pytest.param(Case(("state", "pull", "net", "-o", "nowhere/state.json"), USAGE,
                      "--output nowhere/state.json: the directory nowhere does not exist", setup=with_applied_task),
                 id="output-directory-missing"),
    pytest.param(Case(("plan", "nett"), USAGE, "unknown workspace 'nett'; did you mean 'net'?"),
                 id="plan-workspace-near-miss"),
    pytest.param(Case(("workspace", "show", "zzz"), USAGE, "unknown workspace 'zzz'"), id="show-far-miss"),
    pytest.param(Case(("plan", "net", "--message", "two\nlines"), USAGE, "--message must be one line"),
                 id="plan-message-two-lines"),
    pytest.param(Case(("confirm-apply", "1", "-m", "x" * 501), USAGE, "--message is longer than 500",
                      setup=with_applied_task), id="confirm-message-too-long"),
    pytest.param(Case(("tasks", "plan", "99"), USAGE, "unknown task 99"), id="tasks-plan-unknown-task"),
    pytest.param(Case(("tasks", "plan", "1"), REFUSED, "task 1 has no saved plan to review (it is failed, stage init)",
                      setup=with_failed_task), id="tasks-plan-without-a-plan"),
    pytest.param(Case(("workspace", "delete", "nope"), USAGE, "unknown workspace 'nope'"),
                 id="workspace-delete-unknown"),
    pytest.param(Case(("workspace", "delete", "net"), REFUSED, "workspace net has state versions",
                      setup=with_applied_task), id="workspace-delete-with-state"),
    pytest.param(Case(("pool", "delete", "local"), REFUSED, "the local pool is this machine"),
                 id="pool-delete-local"),
    pytest.param(Case(("pool", "delete", "nope"), USAGE, "unknown pool 'nope'"), id="pool-delete-unknown"),
    pytest.param(Case(("pool", "delete", "k8s"), REFUSED, "pool k8s is used by workspace(s) web",
                      setup=with_kube_pool_used), id="pool-delete-in-use"),
    pytest.param(Case(("pool", "create", "k8s", "--backend", "kubernetes", *KUBE_ARGS, "--context", "prod"), USAGE,
                      "--context prod: there is no kubeconfig"), id="pool-create-context-without-kubeconfig"),
    pytest.param(Case(("pool", "create", "k8s", "--backend", "kubernetes", *KUBE_ARGS, "--context", "prdo"), USAGE,
                      "kube context 'prdo' is not in the kubeconfig (its contexts: prod); did you mean 'prod'?",
                      setup=with_kubeconfig), id="pool-create-unknown-context"),
    pytest.param(Case(("pool", "set", "k8s", "--context", "staging"), USAGE,
                      "kube context 'staging' is not in the kubeconfig", setup=with_kube_pool_and_kubeconfig),
                 id="pool-set-unknown-context"),
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_one_line_and_changes_nothing(env: Env, case: Case) -> None:
    case.setup(env)
    before = snapshot(env.db_path)

    if case.cannot_read:
        r = run_unable_to_read(env, *case.args)
        (env.root / "locked").chmod(0o755)
    else:
        extra = {"PATH": _path_without_terraform()} if case.hide_terraform else None
        r = env.run(*case.args, extra_env=extra)

    line = assert_one_clear_line(r)
    assert r.code == case.code, f"exit {r.code}, expected {case.code}: {line}"
    assert case.says in line, line
    assert snapshot(env.db_path) == before


@pytest.mark.parametrize("args", [pytest.param((), id="no-arguments"),
                                  pytest.param(("workspace",), id="group-without-command")])
def test_no_command_prints_help_on_stderr_and_exits_64(env: Env, args: tuple[str, ...]) -> None:
    r = env.run(*args)
    assert r.code == USAGE
    assert r.out == ""
    assert "Traceback" not in r.err
    assert r.err.startswith(f"Usage: iacctl {' '.join(args)}".rstrip() + " [OPTIONS] COMMAND [ARGS]...")
    expected = ["plan", "confirm-apply", "cancel", "workspace", "tasks", "state", "pods"] if not args else \
        ["create", "list", "show", "lock", "unlock", "var"]
    commands = r.err.split("Commands:", 1)[1]
    assert all(f"\n  {name} " in commands for name in expected), r.err


def test_broken_configuration_fails_the_task_and_leaves_nothing_held(env: Env) -> None:
    """The one bad input that does leave a row: the task that found the configuration broken,
    failed with the reason recorded; the workspace unlocked and every slot idle."""
    env.workspace("bad", "broken")
    before = snapshot(env.db_path)

    r = env.run("plan", "bad")

    line = assert_one_clear_line(r)
    assert r.code == FAILED
    # Issue 9: Terraform's own reason, and where the whole log is.
    reason = ("terraform init failed (exit 1): Error: Unclosed configuration block: There is no closing brace for "
              "this block before the end of the file. This may be caused by incorrect brace nesting elsewhere in "
              "this file.")
    assert line == f"iacctl: task 1 failed at stage init: {reason}; full log: iacctl tasks logs 1"
    task = env.task(1)
    assert (task["status"], task["stage"], task["error"]) == ("failed", "init", reason)
    assert "Unclosed configuration block" in env.ok("tasks", "logs", "1").out
    after = snapshot(env.db_path)
    # Exactly one task row, and it is the failed one.
    assert [(t["id"], t["status"]) for t in rows(env.db_path, "SELECT id, status FROM tasks")] == [(1, "failed")]
    # The workspace row is untouched (never locked), the slots are idle and hold no task.
    assert after["workspaces"] == before["workspaces"]
    slots = rows(env.db_path, "SELECT state, task_id FROM slots")
    assert [(s["state"], s["task_id"]) for s in slots] == [("idle", None)] * 3
    ws = env.ok("workspace", "show", "bad", "--json").json()
    assert ws["lock"] is None and ws["state_version"] is None
    # Nothing else a later task could trip over: no plan, no state version.
    assert after["plan_artifacts"] == [] and after["state_versions"] == []
