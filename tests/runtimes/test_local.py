"""The local runtime's facts about this machine and its processes (issue 18)."""

from __future__ import annotations

import os
import socket

from iacctl.runtimes import local


def test_the_machine_name_is_the_hostname_with_a_fingerprint_of_the_machine_id() -> None:
    name = local.machine()
    host, _, fingerprint = name.partition("/")
    assert host == socket.gethostname()
    assert len(fingerprint) == 8 and int(fingerprint, 16) >= 0
    assert local.this_process()[0] == name


def test_only_this_machine_judges_its_pids() -> None:
    me = local.machine()
    pid = os.getpid()
    start = local.process_start(pid)
    assert local.process_alive(me, pid, start) is True
    # A store written before machine names were recorded holds the bare hostname.
    assert local.process_alive(socket.gethostname(), pid, start) is True
    # The same hostname on another machine (another machine id) is not this machine.
    other = f"{socket.gethostname()}/00000000" if not me.endswith("/00000000") else f"{socket.gethostname()}/11111111"
    assert local.process_alive(other, pid, start) is None
    assert local.process_alive("ci-b", pid, start) is None
    assert local.on_this_machine(me) and not local.on_this_machine(other)
