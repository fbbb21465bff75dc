"""`iacctl complete KIND` (hidden): the values shell completion offers for workspace names,
task ids and statuses (issue 9 item 10). The static scripts in completions/ call it only where
such a value is expected, so a TAB elsewhere costs no Python start-up."""

from __future__ import annotations

import sys

import typer

from iacctl.cli.context import app_of


def complete(ctx: typer.Context, kind: str = typer.Argument(...)) -> None:
    """Print 'value<TAB>description' lines (workspace, task, apply_pending_task, live_task, status)."""
    from iacctl.services import tasks

    try:
        pairs = tasks.completion(app_of(ctx), kind)
    except Exception:  # a TAB never prints an error into the command line being typed
        raise typer.Exit(1) from None
    sys.stdout.write("".join(f"{value}\t{text}\n" for value, text in pairs))


def register(app: typer.Typer) -> None:
    app.command("complete", hidden=True)(complete)
