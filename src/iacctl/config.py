"""Where iacctl keeps things: the store, the secret key, work directories (SPEC C5, X1).

Reads the environment only; creates nothing. Callers create what they need.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from iacctl.errors import UsageError

APP_NAME = "iacctl"


def _user_dir(kind: str) -> Path:
    # platformdirs is cheap, but keep it out of `iacctl --help`.
    import platformdirs

    if kind == "data":
        return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


@dataclass(frozen=True)
class Settings:
    database_url: str
    db_path: Path | None  # the SQLite file, None for PostgreSQL
    config_dir: Path
    work_root: Path
    busy_timeout_s: float = 60.0  # IACCTL_BUSY_TIMEOUT: how long a write waits for another writer


def _seconds(name: str, default: float, low: float, high: float, *, low_allowed: bool = True) -> float:
    """A setting in seconds from the environment variable `name`: `default` when unset or empty,
    else a number in [low, high] (above `low` when it is not allowed), or one line, exit 64."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (low <= value if low_allowed else low < value) or value > high:
        from iacctl.errors import UsageError

        raise UsageError(f"{name} must be a number of seconds between {low:g} and {high:g}, not {raw!r}")
    return value


DEFAULT_BUSY_TIMEOUT_S = 60.0


def busy_timeout() -> float:
    """IACCTL_BUSY_TIMEOUT in seconds (default 60): how long a command waits for another
    process's write transaction on the SQLite store before it gives up (issue 13)."""
    return _seconds("IACCTL_BUSY_TIMEOUT", DEFAULT_BUSY_TIMEOUT_S, 0, 86_400, low_allowed=False)


DEFAULT_HEARTBEAT_TIMEOUT_S = 120.0
# The heartbeat is beaten at most this often, and at least four times per timeout, so a live
# runner is never taken for dead because one beat was late (issue 18 item 3).
MAX_HEARTBEAT_INTERVAL_S = 5.0


def heartbeat_timeout() -> float:
    """IACCTL_HEARTBEAT_TIMEOUT in seconds (default 120): how long after a running task's last
    heartbeat a machine other than its runner's takes the runner for dead (issue 18 item 3). The
    sweep, `cancel` and `workspace unlock --force` judge another machine's runner by it alone, since
    its pid means nothing here. Every machine of a team should use the same value."""
    return _seconds("IACCTL_HEARTBEAT_TIMEOUT", DEFAULT_HEARTBEAT_TIMEOUT_S, 2, 86_400)


def heartbeat_interval() -> float:
    """How often a running task beats its heartbeat: well under the timeout (a quarter of it,
    at most 5 s)."""
    return min(MAX_HEARTBEAT_INTERVAL_S, heartbeat_timeout() / 4)


DEFAULT_BUDGET_S = 5.0


def follow_up_budget() -> float:
    """IACCTL_FOLLOW_UP_BUDGET: the most seconds a command waits at its end for its follow-ups
    (F1). Read here, not in the outbox, so a command checks it without importing delivery."""
    return _seconds("IACCTL_FOLLOW_UP_BUDGET", DEFAULT_BUDGET_S, 0, 60)


def load_settings(db: str | None = None) -> Settings:
    """C5: `--db PATH` or IACCTL_DB (SQLite) if given, else IACCTL_DATABASE_URL (PostgreSQL) if
    set, else a SQLite file in the platformdirs data directory."""
    # Issue 21: an empty store name is a script's unset variable (`--db "$STORE"`), never a wish
    # for the default store: writing there would put its records in the wrong store.
    if db == "":
        raise UsageError("--db is empty: name the store file (or leave --db out for the default store)")
    if db is None and os.environ.get("IACCTL_DB") == "":
        raise UsageError("IACCTL_DB is set but empty: name the store file, or unset IACCTL_DB for the default store")
    config_dir = Path(os.environ.get("IACCTL_CONFIG_DIR") or _user_dir("config"))
    url = os.environ.get("IACCTL_DATABASE_URL")
    heartbeat_timeout()  # a bad IACCTL_HEARTBEAT_TIMEOUT is one line before anything runs
    work_root_env = os.environ.get("IACCTL_WORK_ROOT")
    if url and not db:
        work_root = Path(work_root_env) if work_root_env else _user_dir("data") / "work"
        return Settings(database_url=url, db_path=None, config_dir=config_dir, work_root=work_root,
                        busy_timeout_s=busy_timeout())
    raw = db or os.environ.get("IACCTL_DB")
    path = Path(raw).expanduser() if raw else _user_dir("data") / "iacctl.db"
    path = path.absolute()
    # Work directories live beside the store they belong to, so two stores never share slots.
    work_root = Path(work_root_env) if work_root_env else path.parent / f"{path.name}.work"
    return Settings(
        database_url=f"sqlite:///{path}", db_path=path, config_dir=config_dir, work_root=work_root,
        busy_timeout_s=busy_timeout(),
    )
