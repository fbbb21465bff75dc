"""The `iacctl` entry point (issue 20): hand the command to the user's agent if one answers,
else run it in this process as always.

Imports only the standard library: whatever this module costs, every command pays before its
first byte. It must never make a command worse than without an agent: any failure before the
agent has started the command's worker means "run it here", silently unless IACCTL_AGENT=debug.

What it hands over: argv, working directory, environment, umask, and stdin/stdout/stderr
themselves (SCM_RIGHTS), so the worker sees the same terminal or pipes. Signals sent to this
process (Ctrl-C, SIGTERM, SIGHUP, SIGWINCH) are sent on to the worker; the worker's exit code
is this process's.
"""

from __future__ import annotations

import array
import marshal
import os
import signal
import socket
import stat
import sys
import time
from types import FrameType
from typing import Any

SOCKET_NAME = "agent.sock"
MODES = ("off", "auto", "on", "debug")
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGWINCH, signal.SIGQUIT)
# Commands the agent does not run: they manage the agent itself.
_OWN = frozenset({"agent"})
_HEADER_SIZE = 4
MAX_REQUEST = 4 * 1024 * 1024


class NoAgent(Exception):
    """The agent is absent, stale or broken: the command runs in this process."""


def mode() -> str:
    raw = os.environ.get("IACCTL_AGENT", "auto").strip().lower() or "auto"
    return raw if raw in MODES else "auto"


def debug(text: str) -> None:
    if mode() == "debug":
        sys.stderr.write(f"iacctl: agent: {text}\n")
        sys.stderr.flush()


def agent_dir() -> str:
    """Issue 20 item 3: the socket's directory, only the user's: $XDG_RUNTIME_DIR/iacctl, else
    the state directory ($XDG_STATE_HOME/iacctl, ~/.local/state/iacctl)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "iacctl")
    state = os.environ.get("XDG_STATE_HOME")
    base = state if state and os.path.isabs(state) else os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "iacctl")


def check_private_dir(path: str) -> None:
    """The directory must be ours and closed to everyone else (0700), or it is not used."""
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise NoAgent(f"{path} is not a directory")
    if info.st_uid != os.getuid():
        raise NoAgent(f"{path} belongs to uid {info.st_uid}, not to this user")
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise NoAgent(f"{path} is open to other users (mode {stat.S_IMODE(info.st_mode):o}); it must be 0700")


def socket_address(directory: str) -> tuple[str, int | None]:
    """The socket's path; through /proc/self/fd when the real path is longer than a Unix
    socket address may be (108 bytes). Returns the address and the fd to close afterwards."""
    path = os.path.join(directory, SOCKET_NAME)
    if len(path.encode()) < 100:
        return path, None
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    return f"/proc/self/fd/{fd}/{SOCKET_NAME}", fd


def connect(directory: str, timeout: float = 2.0) -> socket.socket:
    try:
        check_private_dir(directory)
    except FileNotFoundError:
        raise NoAgent("no agent (its directory does not exist)") from None
    except OSError as exc:
        raise NoAgent(f"cannot use {directory}: {exc.strerror or exc}") from None
    address, dir_fd = socket_address(directory)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
    except OSError as exc:
        sock.close()
        raise NoAgent(f"no agent answers at {os.path.join(directory, SOCKET_NAME)} ({exc.strerror or exc})") from None
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
    return sock


def send_message(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    # marshal: built in (no import to pay for), and both ends are the same user's iacctl.
    data = marshal.dumps(message)
    payload = len(data).to_bytes(_HEADER_SIZE, "big") + data
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    sent = sock.sendmsg([payload], ancillary)
    if sent < len(payload):
        sock.sendall(payload[sent:])


def receive_message(sock: socket.socket, max_fds: int = 0) -> tuple[dict[str, Any], list[int]]:
    """One length-prefixed message and the file descriptors that came with it."""
    fds: list[int] = []
    buffer = b""
    size = None
    while size is None or len(buffer) < _HEADER_SIZE + size:
        space = socket.CMSG_SPACE(max_fds * array.array("i").itemsize) if max_fds else 0
        chunk, ancillary, _flags, _addr = sock.recvmsg(65536, space)
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(data[: len(data) - (len(data) % received.itemsize)])
                fds.extend(received)
        if not chunk:
            for fd in fds:
                os.close(fd)
            raise EOFError("connection closed")
        buffer += chunk
        if size is None and len(buffer) >= _HEADER_SIZE:
            size = int.from_bytes(buffer[:_HEADER_SIZE], "big")
            if size > MAX_REQUEST:
                raise ValueError("message too large")
    message = marshal.loads(buffer[_HEADER_SIZE: _HEADER_SIZE + size])
    if not isinstance(message, dict):
        raise ValueError("not a message")
    return message, fds


def _first_command(argv: list[str]) -> str | None:
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--db":
            i += 2
            continue
        if not arg.startswith("-"):
            return arg
        i += 1
    return None


def _stdio_usable() -> bool:
    try:
        for fd in (0, 1, 2):
            os.fstat(fd)
    except OSError:
        return False
    return True


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


class _Forwarder:
    """Signals to this process go on to the worker (issue 20 item 1): the worker is the command."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.pending: list[int] = []
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        for signum in FORWARDED:
            self.previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.pid is None:
            self.pending.append(signum)
            return
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def started(self, pid: int) -> None:
        self.pid = pid
        for signum in self.pending:
            self._handle(signum, None)
        self.pending.clear()


def run_through_agent(argv: list[str], directory: str) -> int:
    """The command's exit code from the agent's worker. NoAgent when nothing has run yet."""
    sock = connect(directory)
    forwarder = _Forwarder()
    forwarder.install()
    try:
        try:
            send_message(sock, {"op": "run", "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                                "umask": _umask()}, [0, 1, 2])
            sock.settimeout(10)
            reply, _ = receive_message(sock)
        except (OSError, EOFError, ValueError) as exc:
            raise NoAgent(f"the agent did not take the command ({exc})") from None
        if "pid" not in reply:
            raise NoAgent(str(reply.get("refused", "the agent refused the command")))
        forwarder.started(int(reply["pid"]))
        sock.settimeout(None)
        while True:
            try:
                reply, _ = receive_message(sock)
            except InterruptedError:
                continue
            except (OSError, EOFError, ValueError):
                # The agent is gone, and with it the worker (it dies with its agent): the
                # command ended as a killed command does; its task is the sweep's (S8).
                sys.stderr.write("iacctl: the agent stopped during the command; "
                                 "`iacctl pods recover` settles what it left\n")
                return 1
            if "exit" in reply:
                return int(reply["exit"])
            if "signal" in reply:
                forwarder.restore()
                signum = int(reply["signal"])
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
                return 128 + signum
    finally:
        forwarder.restore()
        sock.close()


def start_agent(directory: str, wait: float = 0.0) -> None:
    """Start the agent in the background (a new session, no terminal); wait up to `wait`
    seconds for it to answer."""
    import subprocess

    subprocess.Popen([sys.executable, "-m", "iacctl.agent"], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                     close_fds=True, env={**os.environ, "IACCTL_AGENT": "off"})
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            connect(directory, timeout=0.5).close()
            return
        except NoAgent:
            time.sleep(0.02)


def _should_start(how: str) -> bool:
    """`auto` starts the agent for a person at a terminal: never in CI, never without a TTY."""
    if how == "on":
        return True
    if how not in ("auto", "debug") or os.environ.get("CI"):
        return False
    try:
        return os.isatty(0) and os.isatty(1)
    except OSError:
        return False


def _quick_completion(argv: list[str]) -> bool:
    """`iacctl [--db PATH] complete KIND` answered from a SQLite store with the standard library
    (issue 20 item 5); False when it cannot be (the full command answers then)."""
    db = None
    rest = list(argv)
    if len(rest) >= 2 and rest[0] == "--db":
        db, rest = rest[1], rest[2:]
    if len(rest) != 2 or rest[0] != "complete":
        return False
    from iacctl.store.completion import quick_values, store_file

    path = store_file(db, os.environ)
    pairs = quick_values(path, rest[1]) if path else None
    if pairs is None:
        return False
    sys.stdout.write("".join(f"{value}\t{text}\n" for value, text in pairs))
    sys.stdout.flush()
    return True


def main() -> None:
    argv = sys.argv[1:]
    if _quick_completion(argv):
        sys.exit(0)
    how = mode()
    if how != "off" and _first_command(argv) not in _OWN and _stdio_usable():
        directory = agent_dir()
        try:
            code = run_through_agent(argv, directory)
        except NoAgent as reason:
            debug(f"running in this process: {reason}")
            if _should_start(how):
                try:
                    start_agent(directory, wait=5.0 if how == "on" else 0.0)
                except OSError as exc:
                    debug(f"could not start the agent: {exc}")
                if how == "on":
                    try:
                        code = run_through_agent(argv, directory)
                    except NoAgent as again:
                        debug(f"running in this process: {again}")
                    else:
                        sys.exit(code)
        else:
            sys.exit(code)
    from iacctl.cli.main import main as in_process

    in_process(argv)
