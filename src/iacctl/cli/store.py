"""`iacctl store ...`: check the store's integrity, back it up online (issue 13)."""

from __future__ import annotations

from pathlib import Path

import typer

from iacctl.cli.context import app_of
from iacctl.cli.render import message, print_json

app = typer.Typer(help="The store itself: integrity check and online backup.", no_args_is_help=True)


@app.command("check")
def check(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Check every page and index of the store; exit 1 naming the damage."""
    from iacctl.services import store

    view = store.check(app_of(ctx))
    if as_json:
        print_json(view)
    else:
        message(f"store {view['store']}: ok")


@app.command("backup")
def backup(ctx: typer.Context, file: Path = typer.Argument(..., help="The new backup file (must not exist)."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Copy the SQLite store to FILE, consistently, while other commands use it (SQLite's online
    backup API). On PostgreSQL, use pg_dump."""
    from iacctl.services import store

    view = store.backup(app_of(ctx), file)
    if as_json:
        print_json(view)
    else:
        message(f"store {view['store']} backed up to {view['backup']} ({view['bytes']} bytes)")
