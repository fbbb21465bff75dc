"""The store's own health (issue 13): `iacctl store check` and `iacctl store backup`.

Both open the store without migrating or writing it: a damaged or foreign file must be
looked at, never "repaired" by creating tables in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text

from iacctl.errors import StoreError, UsageError
from iacctl.services.app import App
from iacctl.store.db import Store


def _unopened(app: App) -> Store:
    return Store(app.settings)


def check(app: App) -> dict[str, Any]:
    """Integrity of the store: {"store", "ok", "problems"}; raises StoreError naming the damage."""
    store = _unopened(app)
    try:
        if app.settings.db_path is None:
            # PostgreSQL checks its own pages; here: reachable, and an iacctl schema.
            with store.translate_errors(), store.read_engine.connect() as conn:
                revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            return {"store": store.where, "ok": True, "problems": [], "revision": revision}
        problems = store.integrity_problems()
    finally:
        store.dispose()
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise StoreError(f"the store {store.where} is damaged: {shown}; restore a backup, or salvage what is "
                         f"left with: sqlite3 {store.where} .recover | sqlite3 NEW-FILE")
    return {"store": store.where, "ok": True, "problems": []}


def backup(app: App, dest: Path) -> dict[str, Any]:
    """A consistent copy of the SQLite store, taken while other commands run."""
    if app.settings.db_path is None:
        raise UsageError("the store is in PostgreSQL: back it up with pg_dump (for example: pg_dump -Fc -f "
                         "iacctl.dump \"$IACCTL_DATABASE_URL\")")
    store = _unopened(app)
    try:
        size = store.backup(dest.absolute())
    finally:
        store.dispose()
    return {"store": store.where, "backup": str(dest.absolute()), "bytes": size}
