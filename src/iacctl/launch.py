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


def package_fingerprint() -> str:
    """What identifies the installed iacctl: its version and every file of the package (path,
    size, mtime). An upgrade, or an edited file of an editable install, changes it."""
    import iacctl

    root = os.path.dirname(iacctl.__file__)
    parts = [iacctl.__version__]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                info = os.stat(path)
            except OSError:
                continue
            parts.append(f"{os.path.relpath(path, root)}:{info.st_size}:{info.st_mtime_ns}")
    return "\n".join(parts)


# Issue 20: `iacctl --help` without the agent is printed from a copy of what the full command
# printed last time in the same circumstances: the same installed files (an upgrade changes the
# key), the same terminal or pipe and width, and the same variables that change how help looks.
_HELP_ARGS = (["--help"], ["-h"])
_HELP_ENV = ("COLUMNS", "LINES", "TERM", "COLORTERM", "NO_COLOR", "FORCE_COLOR", "CI", "TTY_COMPATIBLE",
             "TTY_INTERACTIVE", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONIOENCODING")


def help_cache_file(argv: list[str]) -> str | None:
    """Where the help for `argv` is kept, or None when `argv` does not ask for the main help."""
    if argv not in _HELP_ARGS:
        return None
    import hashlib

    try:
        columns: int | None = os.get_terminal_size(1).columns
    except OSError:
        columns = None
    key = repr((argv, package_fingerprint(), os.isatty(1), columns, [os.environ.get(k) for k in _HELP_ENV]))
    # The cache directory of iacctl's Terraform binaries (executor/binaries.py), as platformdirs
    # names it on Linux, without importing it.
    directory = os.environ.get("IACCTL_CACHE_DIR")
    if not directory:
        cache = os.environ.get("XDG_CACHE_HOME")
        base = cache if cache and os.path.isabs(cache) else os.path.join(os.path.expanduser("~"), ".cache")
        directory = os.path.join(base, "iacctl")
    return os.path.join(directory, "help-" + hashlib.sha256(key.encode()).hexdigest()[:32])


class _Copy:
    """Standard output as it is (terminal or pipe, as the command sees it), keeping a copy."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.data: list[bytes] = []

    def write(self, text: str | bytes) -> int:
        # Click hands some writers bytes, others text.
        self.data.append(text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape"))
        return int(self._stream.write(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _help_from_cache(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return True


def _keep_help(path: str, data: bytes) -> None:
    """Kept for the next time; a cache that cannot be written is simply not kept."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        temporary = f"{path}.{os.getpid()}"
        with open(temporary, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    except OSError:
        pass


def main() -> None:
    argv = sys.argv[1:]
    if _quick_completion(argv):
        sys.exit(0)
    help_file = help_cache_file(argv)
    if help_file is not None and _help_from_cache(help_file):
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

    if help_file is None:
        in_process(argv)
        return
    copy = _Copy(sys.stdout)
    sys.stdout = copy
    try:
        in_process(argv)
    except SystemExit as done:
        if done.code in (0, None):
            _keep_help(help_file, b"".join(copy.data))
        raise
    finally:
        sys.stdout = copy._stream
