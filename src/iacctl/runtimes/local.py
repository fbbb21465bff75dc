"""The local runtime: slots are directories on this machine, commands are subprocesses.

Also owns the facts about processes on this machine (is a runner alive, start a detached
`iacctl`), since subprocess and signals live only in the runtimes (STYLE).
"""

from __future__ import annotations

import ctypes
import io
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from iacctl.runtimes.base import CommandResult, RuntimeError_, SlotPlace

_PR_SET_PDEATHSIG = 1


class LocalRuntime:
    def __init__(self, work_root: Path) -> None:
        self.work_root = work_root

    def work_dir(self, place: SlotPlace) -> Path:
        return self.work_root / place.pool / place.pod / f"slot-{place.slot_index}"

    def work_dir_exists(self, place: SlotPlace) -> bool:
        return self.work_dir(place).is_dir()

    def reset_work_dir(self, place: SlotPlace) -> None:
        path = self.work_dir(place)
        try:
            if path.exists():
                shutil.rmtree(path)
            path.mkdir(parents=True, mode=0o700)
        except OSError as exc:
            raise RuntimeError_(f"cannot make the work directory {path}: {exc.strerror}") from None

    def remove_work_dir(self, place: SlotPlace) -> None:
        shutil.rmtree(self.work_dir(place), ignore_errors=True)

    def extract_archive(self, place: SlotPlace, tar_gz: bytes) -> None:
        with tarfile.open(fileobj=io.BytesIO(tar_gz), mode="r:gz") as tar:
            tar.extractall(self.work_dir(place), filter="data")

    def write_file(self, place: SlotPlace, relpath: str, data: bytes) -> None:
        path = self.work_dir(place) / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def read_file(self, place: SlotPlace, relpath: str) -> bytes | None:
        try:
            return (self.work_dir(place) / relpath).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def pod_alive(self, pod: str) -> bool:
        return True  # the local pod is this machine

    def run(
        self,
        place: SlotPlace,
        argv: Sequence[str],
        env: Mapping[str, str],
        on_line: Callable[[str], None],
        should_stop: Callable[[], bool],
        on_start: Callable[[int], None],
    ) -> CommandResult:
        cwd = self.work_dir(place)
        try:
            proc = subprocess.Popen(
                list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                # Own process group: a Ctrl-C at the terminal reaches iacctl only, which then
                # decides to interrupt Terraform (E1). If iacctl dies, the kernel sends SIGINT
                # so Terraform stops gracefully and leaves its partial state (E2).
                start_new_session=True, preexec_fn=_interrupt_when_parent_dies,
            )
        except FileNotFoundError:
            raise RuntimeError_(f"{argv[0]} not found") from None
        except OSError as exc:
            raise RuntimeError_(f"cannot run {argv[0]}: {exc.strerror}") from None
        on_start(proc.pid)
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        os.set_blocking(fd, False)
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        pending = b""
        interrupted = False
        try:
            while True:
                events = sel.select(timeout=0.2)
                if events:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for raw in lines:
                        on_line(raw.decode("utf-8", "replace").rstrip("\r"))
                if not interrupted and should_stop():
                    interrupted = True
                    _signal_group(proc.pid, signal.SIGINT)
        finally:
            sel.close()
            if pending:
                on_line(pending.decode("utf-8", "replace").rstrip("\r"))
        code = proc.wait()
        return CommandResult(exit_code=code, interrupted=interrupted)


def _interrupt_when_parent_dies() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


# -- processes on this machine ------------------------------------------------------------------


def hostname() -> str:
    return socket.gethostname()


def process_start(pid: int) -> float | None:
    """The process's start time in clock ticks since boot, or None if it is gone. With the pid it
    names a process uniquely, so a recycled pid is not taken for a live runner."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    if fields and fields[0] == b"Z":
        return None  # a zombie has finished
    try:
        return float(fields[19])
    except (IndexError, ValueError):
        return None


def this_process() -> tuple[str, int, float | None]:
    pid = os.getpid()
    return hostname(), pid, process_start(pid)


def process_alive(host: str | None, pid: int | None, start: float | None) -> bool | None:
    """True or False for a process of this machine; None when it runs elsewhere (the caller
    then judges by heartbeat)."""
    if pid is None:
        return False
    if host is not None and host != hostname():
        return None
    current = process_start(pid)
    if current is None:
        return False
    return start is None or current == start


def interrupt_process(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGINT)
    except (ProcessLookupError, PermissionError):
        pass


def kill_process(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def spawn_detached(args: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Start `iacctl ARGS` in its own session, detached from this terminal; returns its pid."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "iacctl", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env=dict(env) if env is not None else None, close_fds=True,
    )
    return proc.pid


def stop_orphan(pid: int, expect: str, *, grace_seconds: float = 60.0) -> bool:
    """Stop a command a dead runner left behind (E1: gracefully, SIGINT first). `expect` must
    appear in its command line, so a recycled pid is never signalled. True if one was found."""
    import time

    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return False
    if expect not in cmdline or process_start(pid) is None:
        return False
    interrupt_process(pid)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if process_start(pid) is None:
            return True
        time.sleep(0.1)
    kill_process(pid)
    return True
