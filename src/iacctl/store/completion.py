"""Shell completion's values read straight from a SQLite store with the standard library
(issue 20 item 5): a TAB must not wait for SQLAlchemy's import. Read-only, never creates the
file; anything unexpected (no file, an older schema, PostgreSQL) is None and the caller asks the
full command instead, which answers the same (services.tasks.completion)."""

from __future__ import annotations

import os

COMPLETION_TASKS = 200  # as services.tasks.COMPLETION_TASKS
_STATUSES = {
    "task": None,
    "apply_pending_task": ("apply_pending",),
    "live_task": ("pending", "running", "apply_pending"),
}


def store_file(argv_db: str | None, env: dict[str, str] | os._Environ[str]) -> str | None:
    """The SQLite file a command would use (SPEC C5), or None for PostgreSQL."""
    raw = argv_db or None
    if raw is None and env.get("IACCTL_DATABASE_URL"):
        return None
    raw = raw or env.get("IACCTL_DB") or None
    if raw is None:
        data = env.get("XDG_DATA_HOME")
        base = data if data and os.path.isabs(data) else os.path.join(os.path.expanduser("~"), ".local", "share")
        return os.path.join(base, "iacctl", "iacctl.db")
    return os.path.abspath(os.path.expanduser(raw))


def quick_values(path: str, kind: str) -> list[tuple[str, str]] | None:
    if kind != "workspace" and kind not in _STATUSES:
        return None
    if not os.path.isfile(path):
        return None
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return None
    try:
        if kind == "workspace":
            rows = conn.execute("SELECT name, source_dir FROM workspaces ORDER BY name").fetchall()
            return [(str(name), str(source)) for name, source in rows]
        statuses = _STATUSES[kind]
        where = f"WHERE t.status IN ({','.join('?' * len(statuses))})" if statuses else ""
        rows = conn.execute(
            "SELECT t.id, t.status, t.kind, w.name FROM tasks t JOIN workspaces w ON w.id = t.workspace_id "
            f"{where} ORDER BY t.id DESC LIMIT ?", (*(statuses or ()), COMPLETION_TASKS)).fetchall()
        return [(str(task_id), f"{status} ({kind_} of {name})") for task_id, status, kind_, name in rows]
    except sqlite3.Error:
        return None
    finally:
        conn.close()
