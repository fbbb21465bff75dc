"""Issue 20 item 5: each command imports what it uses. A listing reads the store and prints; it
imports neither the executor, the outbox's delivery nor the Kubernetes client (each is a part of
the second a user waits for `tasks list`)."""

from __future__ import annotations

import subprocess

from tests.conftest import PYTHON, Env

_PROBE = (
    "import sys\n"
    "from iacctl.cli.main import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    code = exc.code\n"
    "heavy = sorted(m for m in sys.modules if m.startswith(('iacctl.executor', 'iacctl.services.outbox',"
    " 'iacctl.services.queue', 'iacctl.runtimes', 'iacctl.notify', 'kubernetes', 'httpx', 'jwt', 'fastapi')))\n"
    "sys.stderr.write(f'EXIT {code} HEAVY {heavy}\\n')\n"
)


def test_listings_import_no_executor_outbox_or_kubernetes(env: Env) -> None:
    env.workspace("net")
    for argv in (["tasks", "list"], ["workspace", "list"], ["workspace", "show", "net"], ["tasks", "list", "--json"]):
        r = subprocess.run([PYTHON, "-c", _PROBE, *argv], capture_output=True, text=True, env=env.vars,
                           cwd=env.root, timeout=120)
        assert "EXIT 0 HEAVY []" in r.stderr, (argv, r.stdout, r.stderr)


_COMPLETE = (
    "import sys\n"
    "from iacctl.launch import main\n"
    "sys.argv = ['iacctl', *sys.argv[1:]]\n"
    "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
    "sys.stdout.flush()\n"
    "heavy = sorted(m for m in ('sqlalchemy', 'sqlmodel', 'typer', 'iacctl.cli', 'iacctl.services')"
    " if m in sys.modules)\n"
    "sys.stderr.write(f'EXIT {code} HEAVY {heavy}\\n')\n"
)


def test_completion_of_names_answers_without_the_full_import_and_as_the_full_command(env: Env) -> None:
    """Item 5: a TAB reads the SQLite store with the standard library; what it offers is what
    the full `iacctl complete` offers (workspace names, task ids by the status they need)."""
    env.workspace("net")
    env.workspace("app")
    env.ok("plan", "net", "--plan-only", "--no-wait")
    for kind in ("workspace", "task", "live_task", "apply_pending_task"):
        full = subprocess.run([PYTHON, "-c", _PROBE, "complete", kind], capture_output=True, text=True,
                              env=env.vars, cwd=env.root, timeout=120)
        for db in ([], ["--db", str(env.db_path)]):
            quick = subprocess.run([PYTHON, "-c", _COMPLETE, *db, "complete", kind], capture_output=True, text=True,
                                   env=env.vars, cwd=env.root, timeout=120)
            assert "EXIT 0 HEAVY []" in quick.stderr, quick.stderr
            assert quick.stdout == full.stdout, kind
    names = subprocess.run([PYTHON, "-c", _COMPLETE, "complete", "workspace"], capture_output=True, text=True,
                           env=env.vars, cwd=env.root, timeout=120).stdout
    assert names == f"app\t{env.root / 'src-app'}\nnet\t{env.root / 'src-net'}\n"


def test_the_entry_point_imports_only_the_standard_library() -> None:
    """Item 1: what every command pays before it reaches the agent is the standard library alone."""
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import iacctl.launch, iacctl.store.completion\n"
        "new = sorted(m for m in set(sys.modules) - before if not m.startswith('iacctl')"
        " and m.split('.')[0] not in sys.stdlib_module_names)\n"
        "print('THIRD-PARTY', new)\n"
    )
    r = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert "THIRD-PARTY []" in r.stdout, r.stdout + r.stderr


def test_help_is_the_same_from_the_cache_on_a_terminal_and_a_pipe_and_follows_the_width(env: Env) -> None:
    """Item 5, `iacctl --help` without the agent: printed the second time from what the full
    command printed (without importing it), byte for byte the same, on a terminal of each width
    and through a pipe; another width gets help drawn for it."""
    from tests.terminal import run_on_a_terminal

    env.vars["XDG_CACHE_HOME"] = str(env.root / "cache")
    piped = []
    for _ in range(3):  # a third only if the agent's upgrade test touched the package meanwhile
        piped.append(subprocess.run([PYTHON, "-c", _COMPLETE, "--help"], capture_output=True, env=env.vars,
                                    cwd=env.root, timeout=120))
        if b"HEAVY []" in piped[-1].stderr:
            break
    assert b"HEAVY []" not in piped[0].stderr  # the first one drew it
    assert b"EXIT 0" in piped[-1].stderr and b"HEAVY []" in piped[-1].stderr, piped  # from the cache
    assert all(p.stdout == piped[0].stdout for p in piped) and piped[0].stdout.startswith(b"Usage: iacctl"), piped
    screens = {columns: [run_on_a_terminal(env, "--help", columns=columns) for _ in range(2)] for columns in (50, 100)}
    for columns, (first, second) in screens.items():
        assert first == second and first[0] == 0, columns
        assert max(len(line) for line in first[1].splitlines()) <= columns
    assert screens[50][0][1] != screens[100][0][1]
    assert len(list((env.root / "cache" / "iacctl").iterdir())) >= 3  # the pipe and the two widths
