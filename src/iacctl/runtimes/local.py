"""The local runtime: slots are directories on this machine, commands are subprocesses.

Also owns the facts about processes on this machine (is a runner alive, start a detached
`iacctl`), since subprocess and signals live only in the runtimes (STYLE).
"""

from __future__ import annotations

import ctypes
import errno
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from iacctl.machine import hostname as hostname
from iacctl.machine import machine as machine
from iacctl.machine import on_this_machine as on_this_machine
from iacctl.runtimes.base import CommandResult, PodBackend, RuntimeError_, SlotPlace, disk_error

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
RUNNER_NAME = "iacctl-runner"  # a forked runner's name in ps and /proc/PID/comm
_TAIL_SECONDS = 0.02
COMMAND_OUTPUT = ".iacctl-command-output"


class LocalRuntime:
    def __init__(self, work_root: Path) -> None:
        self.work_root = work_root

    def work_dir(self, place: SlotPlace) -> Path:
        return self.work_root / place.pool / place.pod / f"slot-{place.slot_index}"

    def plugin_cache(self, place: SlotPlace) -> Path | None:
        """One cache per slot (issue 12): an init without a dependency lock file installs the
        provider into the cache again, replacing the directory that a plan running in another
        slot reads at that moment ("could not read package directory", seen with `drift check
        --all`); a slot runs one task at a time, so its cache is never used by two Terraform
        processes at once."""
        return self.work_root / "plugin-cache" / place.pool / place.pod / f"slot-{place.slot_index}"

    def work_dir_exists(self, place: SlotPlace) -> bool:
        return self.work_dir(place).is_dir()

    def reset_work_dir(self, place: SlotPlace) -> None:
        path = self.work_dir(place)
        try:
            if path.exists():
                shutil.rmtree(path)
            path.mkdir(parents=True, mode=0o700)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise RuntimeError_(disk_error(exc, "making the work directory", path)) from None
            raise RuntimeError_(f"cannot make the work directory {path}: {exc.strerror}") from None

    def remove_work_dir(self, place: SlotPlace) -> None:
        shutil.rmtree(self.work_dir(place), ignore_errors=True)

    def extract_archive(self, place: SlotPlace, tar_gz: bytes) -> None:
        try:
            with tarfile.open(fileobj=io.BytesIO(tar_gz), mode="r:gz") as tar:
                tar.extractall(self.work_dir(place), filter="data")
        except OSError as exc:
            raise RuntimeError_(disk_error(exc, "writing the configuration into", self.work_dir(place))) from None

    def write_file(self, place: SlotPlace, relpath: str, data: bytes) -> None:
        path = self.work_dir(place) / relpath
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise RuntimeError_(disk_error(exc, "writing", path)) from None

    def read_file(self, place: SlotPlace, relpath: str) -> bytes | None:
        return _read(self.work_dir(place) / relpath)

    # -- a task's work directory kept for an operator (issue 13 item 6) --------------------------

    def kept_dir(self, pod: str, task_id: int) -> Path:
        return self.work_root / "kept" / f"task-{task_id}"

    def keep_work_dir(self, place: SlotPlace, task_id: int) -> str | None:
        """Move the slot's work directory (or what is left of it) aside, out of the slot's way,
        for an operator; where it now is, or None if there was none. A rename: no space needed."""
        source = self.work_dir(place)
        if not source.is_dir():
            return None
        target = self.kept_dir(place.pod, task_id)
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if target.exists():
                shutil.rmtree(target)
            source.rename(target)
        except OSError:
            return str(source) if source.is_dir() else None
        return str(target)

    def read_kept_file(self, pod: str, task_id: int, relpath: str) -> bytes | None:
        return _read(self.kept_dir(pod, task_id) / relpath)

    def remove_kept_dir(self, pod: str, task_id: int) -> None:
        shutil.rmtree(self.kept_dir(pod, task_id), ignore_errors=True)

    def pod_backend(self) -> PodBackend | None:
        return None  # this machine is the one pod; nothing creates or deletes it

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
        # The command writes to a file in the slot, not to a pipe: if iacctl dies, Terraform
        # must not die of SIGPIPE on its next line, but finish stopping and write its state.
        output = cwd / COMMAND_OUTPUT
        try:
            with open(output, "wb") as sink:
                _reserve_space(sink.fileno())
                proc = subprocess.Popen(
                    list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                    stdout=sink, stderr=subprocess.STDOUT,
                    # Own process group: a Ctrl-C at the terminal reaches iacctl only, which then
                    # decides to interrupt Terraform (E1). If iacctl dies, the kernel sends SIGINT
                    # so Terraform stops gracefully and leaves its partial state (E2).
                    start_new_session=True, preexec_fn=_interrupt_when_parent_dies,
                )
        except FileNotFoundError:
            raise RuntimeError_(f"{argv[0]} not found") from None
        except OSError as exc:
            raise RuntimeError_(disk_error(exc, f"starting {argv[0]} in", cwd)) from None
        on_start(proc.pid)
        pending = b""
        interrupted = False
        with open(output, "rb") as source:
            try:
                while True:
                    chunk = source.read(65536)
                    if chunk:
                        pending += chunk
                        *lines, pending = pending.split(b"\n")
                        for raw in lines:
                            on_line(raw.decode("utf-8", "replace").rstrip("\r"))
                    elif proc.poll() is not None:
                        rest = source.read()
                        if not rest:
                            break
                        pending += rest
                        continue
                    else:
                        time.sleep(_TAIL_SECONDS)
                    if not interrupted and should_stop():
                        interrupted = True
                        # The whole group: Terraform and the provisioner commands it started.
                        _signal_group(proc.pid, signal.SIGINT)
            finally:
                for raw in pending.split(b"\n") if pending else []:
                    on_line(raw.decode("utf-8", "replace").rstrip("\r"))
        code = proc.wait()
        # Issue 13 item 1: when the command ends (even killed by the OOM killer or kill -9),
        # what it started in its group (provisioner commands) ends too, before the caller
        # removes the work directory under them.
        end_group(proc.pid)
        output.unlink(missing_ok=True)
        return CommandResult(exit_code=code, interrupted=interrupted)


_FALLOC_FL_KEEP_SIZE = 1
# Reserved for a command's output before it starts (tried in this order).
_OUTPUT_RESERVE = (8 << 20, 1 << 20)


def hcl_syntax_error(binary: str, documents: Sequence[str]) -> str | None:
    """Issue 21: Terraform's own HCL parser (`terraform fmt -`, which reads stdin, needs no
    init, no provider and no network) on each document; the first error's summary, or None
    when all parse."""
    for doc in documents:
        try:
            proc = subprocess.run([binary, "fmt", "-no-color", "-"], input=doc, capture_output=True, text=True,
                                  timeout=30, env=_fmt_environment())
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{binary} could not check it: {exc}"
        if proc.returncode != 0:
            lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
            summary = next((line.removeprefix("Error: ") for line in lines if line.startswith("Error:")), None)
            detail = lines[-1] if lines else ""
            return f"{summary}: {detail}" if summary and detail and detail != lines[0] else (summary or detail)
    return None


def _fmt_environment() -> dict[str, str]:
    env = {**os.environ, "CHECKPOINT_DISABLE": "1"}
    if env.get("TF_CLI_CONFIG_FILE") and not Path(env["TF_CLI_CONFIG_FILE"]).is_file():
        del env["TF_CLI_CONFIG_FILE"]  # it only makes Terraform warn (NOTES)
    return env


def _reserve_space(fd: int) -> None:
    """Issue 13 item 6: reserve blocks for the command's output file (without changing its
    size), so that when the work directory's disk fills up, Terraform's last words still reach
    iacctl: the errors, and the whole state it prints when it cannot write it. Best effort."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        for size in _OUTPUT_RESERVE:
            if libc.fallocate(fd, _FALLOC_FL_KEEP_SIZE, ctypes.c_long(0), ctypes.c_long(size)) == 0:
                return
    except (OSError, AttributeError):
        pass


def _read(path: Path) -> bytes | None:
    """A file's bytes; None when it (or its directory) is not there; a disk fault named."""
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise RuntimeError_(disk_error(exc, "reading", path)) from None


def _interrupt_when_parent_dies() -> None:
    # iacctl ignores SIGHUP while a task runs (issue 19 item 6); Terraform gets the default back.
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
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


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_group(pgid: int, grace_seconds: float = 2.0) -> bool:
    """End what is left of a process group whose leader (the command iacctl ran) has exited
    and been reaped: SIGTERM, a short grace, then SIGKILL. While a member lives, the kernel
    hands out no new process with that id, so the group is still the one the command made.
    True if anything was left."""
    if not _group_alive(pgid):
        return False
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _group_alive(pgid):
        _signal_group(pgid, signal.SIGKILL)
    return True


# -- processes on this machine ------------------------------------------------------------------


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
    """This process as the store records it: its machine (see machine()), pid and start time."""
    pid = os.getpid()
    return machine(), pid, process_start(pid)


def process_alive(host: str | None, pid: int | None, start: float | None) -> bool | None:
    """True or False for a process of this machine; None when it runs elsewhere (the caller
    then judges by heartbeat)."""
    if pid is None:
        return False
    if not on_this_machine(host):
        return None
    current = process_start(pid)
    if current is None:
        return False
    return start is None or current == start


def spawn_detached(args: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Start `iacctl ARGS` in its own session, detached from this terminal; returns its pid."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "iacctl", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env=dict(env) if env is not None else None, close_fds=True,
    )
    return proc.pid


def can_fork() -> bool:
    """Forking is safe only while no other thread runs: one could hold a lock that the child
    would then wait on forever."""
    return hasattr(os, "fork") and threading.active_count() == 1


def fork_detached(child: Callable[[], int]) -> int | None:
    """Run `child()` in a process of its own session, detached from this terminal, forked from
    this one, so it starts without Python's and SQLAlchemy's import cost (about 0.4 s of CPU
    per `iacctl` process: twelve runners starting together on two cores left slots idle for
    seconds, issue 3 item 10). Returns its pid, or None when forking is not safe here (the
    caller then starts a new process). The caller must have closed its store connections
    first: SQLite's locks and shared memory must not cross fork()."""
    if not can_fork():
        return None
    read_end, write_end = os.pipe()
    first = os.fork()
    if first == 0:  # pragma: no cover - runs in the intermediate child
        try:
            os.close(read_end)
            os.setsid()
            second = os.fork()
            if second == 0:
                os.close(write_end)
                _detach_stdio()
                _name_this_process(RUNNER_NAME)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                code = 1
                try:
                    code = child()
                finally:
                    os._exit(code)
            os.write(write_end, str(second).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        data = os.read(read_end, 32)
    finally:
        os.close(read_end)
        os.waitpid(first, 0)  # the intermediate exits at once; the runner is init's child now
    return int(data) if data else None


def _name_this_process(name: str) -> None:
    # A forked runner keeps its parent's command line; its name tells it apart in ps.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _detach_stdio() -> None:
    null = os.open(os.environ.get("IACCTL_RUNNER_LOG") or os.devnull, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def stop_orphan(pid: int, expect: str, *, grace_seconds: float = 60.0) -> bool:
    """Wait for a command a dead runner left behind to stop, then end what is left of its
    process group (provisioner commands). The kernel already sent it SIGINT when its runner
    died (PR_SET_PDEATHSIG); a second SIGINT would make Terraform exit at once without saving,
    so none is sent. Only after the grace period is it killed. `expect` must appear in its
    command line, so a recycled pid is never signalled. True if one was found."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        cmdline = ""
    found = expect in cmdline and process_start(pid) is not None
    if found:
        deadline = time.monotonic() + grace_seconds
        while process_start(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if process_start(pid) is not None:
            _signal_group(pid, signal.SIGKILL)
    # The group outlives its leader while a provisioner command still runs in it, and a pid is
    # not handed out again while a group of that id lives: with the leader gone, the group is
    # what Terraform started. (A live process of that pid with another command is a stranger.)
    if found or process_start(pid) is None:
        _signal_group(pid, signal.SIGTERM)
    return found
