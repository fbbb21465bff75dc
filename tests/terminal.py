"""Running the installed command in a pseudo-terminal, as a user at a terminal does: colours,
progress and the width of tables depend on it (SPEC C1, C2)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios

from tests.conftest import PYTHON, Env


def run_on_a_terminal(env: Env, *args: str, columns: int | None = None) -> tuple[int, str]:
    """`iacctl ARGS` with stdin, stdout and stderr on a pseudo-terminal (of `columns` columns
    when given); its exit code and everything it wrote."""
    # COLUMNS would override the terminal's own size, which is what these tests are about.
    vars = {k: v for k, v in env.vars.items() if k not in ("NO_COLOR", "CI", "COLUMNS", "LINES")}
    vars["TERM"] = "xterm-256color"
    main, child = pty.openpty()
    if columns is not None:
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen([PYTHON, "-m", "iacctl", *args], stdin=child, stdout=child, stderr=child, env=vars,
                            cwd=env.root, close_fds=True)
    os.close(child)
    chunks = []
    while True:
        ready, _, _ = select.select([main], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(main, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")
