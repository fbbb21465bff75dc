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
