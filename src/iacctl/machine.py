"""Which machine this is (issue 18), as the store names it: kept apart from the runtimes so a
command that only reads the store learns its machine without importing them (issue 20).

A team's machines (CI runners, laptops) share one PostgreSQL store; each records its machine name
beside every pid it leaves there (runner, creator, claimer), and only the machine of that name
judges the pid; every other machine judges by heartbeat."""

from __future__ import annotations

import functools
import socket
from pathlib import Path


def hostname() -> str:
    return socket.gethostname()


_MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


@functools.cache
def machine() -> str:
    """This machine as the store names it (issue 18): its hostname and a short fingerprint of
    its machine id, e.g. `ci-a/3f2a91c0`. Runners and laptops sharing one PostgreSQL store record
    it beside each pid they leave (runner, creator, claimer), and only the machine with the same
    name judges those pids; every other machine judges by heartbeat. The hostname alone is not
    enough (two runners may both be `runner`), nor the machine id alone (containers and
    namespaces often copy /etc/machine-id); together they are stable across restarts."""
    import hashlib

    machine_id = ""
    for path in _MACHINE_ID_FILES:
        try:
            machine_id = Path(path).read_text().strip()
        except OSError:
            continue
        if machine_id:
            break
    fingerprint = hashlib.sha256(f"{machine_id}\0{hostname()}".encode()).hexdigest()[:8]
    return f"{hostname()}/{fingerprint}"


def on_this_machine(host: str | None) -> bool:
    """Whether a recorded machine name (see machine()) is this machine. A bare hostname, as
    stores written before issue 18 hold, is taken as this machine when it is this hostname."""
    if host is None:
        return True
    return host == machine() or ("/" not in host and host == hostname())
