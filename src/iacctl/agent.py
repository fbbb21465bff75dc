"""The agent (issue 20): a per-user process with iacctl imported that forks one worker per
command, so a command starts without paying Python's and SQLAlchemy's imports.

What it must not do (item 3): listen anywhere but its Unix socket in the user's 0700
directory; serve another uid (SO_PEERCRED); hold a store connection, a lock or a secret (each
worker opens its own store after the fork, as a separate process would); run a thread when it
forks (one thread only: a selector loop). It exits after an idle time and hands over to a new
agent when the installed iacctl changes, so an upgrade never runs old code.

Housekeeping (item 4): every minute it runs `pods recover` (the same code, in a worker) for the
stores its commands used, so due outbox entries are delivered and the sweep runs without cron.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import io
import locale
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from iacctl.launch import (
    FORWARDED,
    NoAgent,
    agent_dir,
    check_private_dir,
    package_fingerprint,
    receive_message,
    send_message,
    socket_address,
)

DEFAULT_IDLE_S = 30 * 60.0
DEFAULT_SWEEP_S = 60.0
_PR_SET_PDEATHSIG = 1
# Only what a sweep needs to find its store and Terraform; never a secret (item 3).
_SWEEP_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "KUBECONFIG",
              "TF_CLI_CONFIG_FILE", "TF_PLUGIN_CACHE_DIR", "NO_COLOR", "PYTHONPATH")
_SECRET_ENV = ("IACCTL_SECRET_KEY",)


def _seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, "") or default)
    except ValueError:
        return default
    return value if value > 0 else default


def preload() -> None:
    """Import what commands use, so a worker starts with it all in memory (never the store)."""
    import importlib
    import pkgutil

    import iacctl
    from iacctl.cli import main as cli_main

    cli_main.cli_command()
    skip = ("iacctl.store.migrations", "iacctl.__main__", "iacctl.agent", "iacctl.runtasks.server")
    for module in pkgutil.walk_packages(iacctl.__path__, "iacctl."):
        if not module.name.startswith(skip):
            with contextlib.suppress(Exception):
                importlib.import_module(module.name)
    # The tables' mappers are configured once here, not by every worker's first query; the
    # dialects' modules load without a connection (item 3: the agent opens no store).
    from sqlalchemy import create_engine
    from sqlalchemy.orm import configure_mappers

    configure_mappers()
    create_engine("sqlite://").dispose()
    for name in ("sqlalchemy.dialects.sqlite.pysqlite", "sqlalchemy.dialects.postgresql.psycopg", "psycopg",
                 "httpx", "rich.console", "rich.table", "rich.progress", "rich.live",
                 "cryptography.hazmat.primitives.ciphers.aead"):
        with contextlib.suppress(Exception):
            importlib.import_module(name)


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _store_key(argv: list[str], cwd: str, env: dict[str, str]) -> tuple[str, str] | None:
    """Which store a command used (C5): --db, IACCTL_DB, IACCTL_DATABASE_URL, or the default."""
    db = None
    for i, arg in enumerate(argv):
        if arg == "--db" and i + 1 < len(argv):
            db = argv[i + 1]
        elif arg.startswith("--db="):
            db = arg[5:]
    if db is None and not env.get("IACCTL_DATABASE_URL"):
        db = env.get("IACCTL_DB") or None
    if db is not None:
        return "db", os.path.normpath(os.path.join(cwd, os.path.expanduser(db)))
    url = env.get("IACCTL_DATABASE_URL")
    if url:
        from urllib.parse import urlsplit

        if urlsplit(url).password:
            return None  # item 3: the agent keeps no secret, so no URL with a password
        return "url", url
    return "default", ""


class Agent:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.idle_s = _seconds("IACCTL_AGENT_IDLE", DEFAULT_IDLE_S)
        self.sweep_s = _seconds("IACCTL_AGENT_SWEEP", DEFAULT_SWEEP_S)
        self.selector = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self.lock_fd: int | None = None
        self.workers: dict[int, socket.socket | None] = {}
        self.waiting: dict[socket.socket, int] = {}
        self.stores: dict[tuple[str, str], dict[str, str]] = {}
        self.sweeping: dict[tuple[str, str], int] = {}
        self.last_used = time.monotonic()
        self.last_sweep = time.monotonic()
        self.last_check = time.monotonic()
        self.started_at = time.time()
        self.served = 0
        self.fingerprint = ""
        self.stopping = False
        self.handed_over = False
        self.wake_r, self.wake_w = os.pipe()

    # -- life ------------------------------------------------------------------------------

    def log(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with contextlib.suppress(OSError), open(self.directory / "agent.log", "a") as f:
            f.write(f"{stamp} [{os.getpid()}] {text}\n")

    def bind(self) -> bool:
        """Take the directory's lock and socket; False when another agent holds them."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_private_dir(str(self.directory))
        self.lock_fd = os.open(self.directory / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.lock_fd)
            self.lock_fd = None
            return False
        os.set_inheritable(self.lock_fd, False)
        address, dir_fd = socket_address(str(self.directory))
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(address)
        finally:
            if dir_fd is not None:
                os.close(dir_fd)
        os.chmod(self.directory / "agent.sock", 0o600)
        listener.listen(64)
        listener.setblocking(False)
        self.listener = listener
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        return True

    def serve(self) -> int:
        if not self.bind():
            return 0
        self.fingerprint = package_fingerprint()
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop_signal)
        signal.signal(signal.SIGINT, self._stop_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.log(f"started (idle exit after {self.idle_s:.0f} s, sweep every {self.sweep_s:.0f} s)")
        while not (self.stopping and not self.workers):
            for key, _events in self.selector.select(timeout=1.0):
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    with contextlib.suppress(OSError):
                        os.read(self.wake_r, 4096)
                elif isinstance(key.fileobj, socket.socket):
                    self._client_gone(key.fileobj)
            self._reap()
            self._tick()
        self._close_listener()
        self.log("stopped")
        return 0

    def _stop_signal(self, _signum: int, _frame: Any) -> None:
        self.stopping = True
        self._close_listener()

    def _close_listener(self) -> None:
        if self.listener is not None:
            with contextlib.suppress(Exception):
                self.selector.unregister(self.listener)
            self.listener.close()
            self.listener = None
            if not self.handed_over:
                with contextlib.suppress(OSError):
                    os.unlink(self.directory / "agent.sock")
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def _changed(self) -> bool:
        """Item 2: the installed iacctl changed: stop taking commands and start a new agent."""
        if package_fingerprint() == self.fingerprint:
            return False
        self.log("the installed iacctl changed: handing over to a new agent")
        with contextlib.suppress(OSError):
            os.unlink(self.directory / "agent.sock")
        self.handed_over = True
        self.stopping = True
        self._close_listener()
        import subprocess

        subprocess.Popen([sys.executable, "-m", "iacctl.agent"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                         close_fds=True)
        return True

    def _tick(self) -> None:
        now = time.monotonic()
        if self.stopping:
            return
        if now - self.last_check >= 2.0:
            self.last_check = now
            if self._changed():
                return
        if now - self.last_sweep >= self.sweep_s:
            self.last_sweep = now
            self._sweep()
        busy = any(conn is not None for conn in self.workers.values()) or bool(self.waiting)
        if busy:
            self.last_used = now
        elif now - self.last_used >= self.idle_s:
            self.log(f"idle for {self.idle_s:.0f} s: exiting")
            self.stopping = True
            self._close_listener()

    # -- commands --------------------------------------------------------------------------

    def _accept(self) -> None:
        if self.listener is None:
            return
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        self.last_used = time.monotonic()
        try:
            uid = _peer_uid(conn)
            if uid != os.getuid():
                # Item 3: one user's agent serves that user only.
                self.log(f"refused a connection from uid {uid}")
                conn.close()
                return
            conn.settimeout(5.0)
            request, fds = receive_message(conn, max_fds=3)
        except (OSError, EOFError, ValueError) as exc:
            self.log(f"a bad request: {exc}")
            conn.close()
            return
        op = request.get("op")
        try:
            if op == "status":
                send_message(conn, self.status())
                conn.close()
            elif op == "stop":
                send_message(conn, {"stopping": True, "pid": os.getpid()})
                conn.close()
                self.stopping = True
                self._close_listener()
            elif op == "run" and len(fds) == 3:
                self._run(conn, request, fds)
                fds = []
            else:
                send_message(conn, {"refused": f"unknown request {op!r}"})
                conn.close()
        except OSError as exc:
            self.log(f"lost a client: {exc}")
            conn.close()
        finally:
            for fd in fds:
                os.close(fd)

    def status(self) -> dict[str, Any]:
        import iacctl

        return {"pid": os.getpid(), "version": iacctl.__version__, "socket": str(self.directory / "agent.sock"),
                "started_at": self.started_at, "served": self.served, "running": len(self.workers),
                "rss_kib": _rss_kib(), "idle_exit_s": self.idle_s, "sweep_s": self.sweep_s,
                "stores": len(self.stores)}

    def _run(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
        if self._changed():
            send_message(conn, {"refused": "the installed iacctl changed; a new agent is starting"})
            conn.close()
            return
        if threading.active_count() != 1:
            send_message(conn, {"refused": "the agent has threads running: it cannot fork safely"})
            conn.close()
            return
        argv = [str(a) for a in request.get("argv", [])]
        env = {str(k): str(v) for k, v in dict(request.get("env", {})).items()}
        cwd = str(request.get("cwd", "/"))
        key = _store_key(argv, cwd, env)
        if key is not None:
            self.stores[key] = {k: v for k, v in env.items()
                                if (k in _SWEEP_ENV or k.startswith(("IACCTL_", "XDG_"))) and k not in _SECRET_ENV}
            if key[0] == "db":
                self.stores[key]["IACCTL_DB"] = key[1]
        pid = self._fork(lambda: _worker(argv, cwd, env, int(request.get("umask", 0o022)), fds), conn)
        for fd in fds:
            os.close(fd)
        self.served += 1
        # The command's name only: its arguments may hold what is not the log's to keep.
        self.log(f"worker {pid}: {next((a for a in argv if not a.startswith('-')), '')}")
        self.workers[pid] = conn
        conn.setblocking(False)
        self.selector.register(conn, selectors.EVENT_READ, pid)
        send_message(conn, {"pid": pid})

    def _fork(self, body: Any, keep: socket.socket | None) -> int:
        agent_pid = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker
            code = 70
            try:
                _die_with(agent_pid)
                signal.set_wakeup_fd(-1)
                for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, *FORWARDED):
                    signal.signal(signum, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                self._close_in_worker(keep)
                code = body()
            finally:
                os._exit(code)
        return pid

    def _close_in_worker(self, keep: socket.socket | None) -> None:
        with contextlib.suppress(Exception):
            self.selector.close()
        if self.listener is not None:
            self.listener.close()
        for conn in {*self.workers.values(), *self.waiting}:
            if conn is not None:
                conn.close()
        if keep is not None:
            keep.close()
        for fd in (self.wake_r, self.wake_w, self.lock_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _client_gone(self, conn: socket.socket) -> None:
        """The client closed its end before its command ended: it was killed (SIGKILL). The
        worker ends as the killed command would have (item 1)."""
        try:
            data = conn.recv(1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            return
        with contextlib.suppress(Exception):
            self.selector.unregister(conn)
        for pid, owner in self.workers.items():
            if owner is conn:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self.workers[pid] = None
        conn.close()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for key, sweeper in list(self.sweeping.items()):
                if sweeper == pid:
                    del self.sweeping[key]
            conn = self.workers.pop(pid, None)
            if conn is None:
                continue
            with contextlib.suppress(Exception):
                self.selector.unregister(conn)
            message = ({"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status)
                       else {"exit": os.waitstatus_to_exitcode(status)})
            with contextlib.suppress(OSError):
                conn.setblocking(True)
                send_message(conn, message)
            conn.close()

    # -- housekeeping (item 4) --------------------------------------------------------------

    def _sweep(self) -> None:
        if threading.active_count() != 1:
            return
        for key, env in self.stores.items():
            if key in self.sweeping:
                continue  # the last sweep of this store is still going
            pid = self._fork(lambda env=env: _sweep_worker(env, self.directory / "agent.log"), None)
            self.sweeping[key] = pid
            self.workers[pid] = None


def _die_with(agent_pid: int) -> None:
    """A worker dies with its agent (kill -9 of the agent ends the command as a killed command
    ends; the sweep settles its task), as Terraform dies with iacctl (runtimes.local)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != agent_pid:
        os._exit(1)


def _text_stream(fd: int, mode: str, unbuffered: bool, errors: str) -> io.TextIOWrapper:
    """sys.stdin/stdout/stderr made anew over the client's descriptors, as Python's start-up
    makes them: line-buffered on a terminal (stderr always), unbuffered with PYTHONUNBUFFERED."""
    encoding = locale.getpreferredencoding(False)
    if mode == "r":
        return io.TextIOWrapper(open(fd, "rb", closefd=False), encoding=encoding, errors=errors)
    tty = os.isatty(fd)
    raw = open(fd, "wb", buffering=0 if unbuffered else -1, closefd=False)
    return io.TextIOWrapper(raw, encoding=encoding, errors=errors,
                            line_buffering=tty or errors == "backslashreplace", write_through=unbuffered)


def _worker(argv: list[str], cwd: str, env: dict[str, str], umask: int, fds: list[int]) -> int:
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    # What this command starts (a detached runner) runs in its own process, not in the agent.
    os.environ["IACCTL_AGENT"] = "off"
    time.tzset()
    os.umask(umask)
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    sys.stdin = _text_stream(0, "r", unbuffered, "strict")
    sys.stdout = _text_stream(1, "w", unbuffered, "strict")
    sys.stderr = _text_stream(2, "w", unbuffered, "backslashreplace")
    sys.argv = ["iacctl", *argv]
    try:
        os.chdir(cwd)
    except OSError as exc:
        sys.stderr.write(f"iacctl: cannot enter the working directory {cwd}: {exc.strerror}\n")
        return 1
    from iacctl.cli.main import main

    code: Any = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:
        code = 3
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    return code if isinstance(code, int) else (0 if code is None else 1)


def _sweep_worker(env: dict[str, str], log: Path) -> int:
    os.environ.clear()
    os.environ.update(env)
    os.environ["IACCTL_AGENT"] = "off"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    return _worker(["pods", "recover"], "/", {**os.environ}, 0o077, [null, fd, os.dup(fd)])


def _rss_kib() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# -- the client's side of `iacctl agent start|stop|status` ---------------------------------------


def ask(op: str) -> dict[str, Any]:
    """Send `op` (status, stop) to this user's agent; NoAgent if none answers."""
    from iacctl.launch import connect

    sock = connect(agent_dir())
    try:
        send_message(sock, {"op": op})
        reply, _ = receive_message(sock)
        return reply
    except (OSError, EOFError, ValueError) as exc:
        raise NoAgent(f"the agent did not answer ({exc})") from None
    finally:
        sock.close()


def main() -> int:
    """`python -m iacctl.agent`: serve until idle, stopped, or handed over to a newer agent."""
    directory = agent_dir()
    os.umask(0o077)
    preload()
    try:
        return Agent(Path(directory)).serve()
    except NoAgent as exc:
        sys.stderr.write(f"iacctl agent: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
