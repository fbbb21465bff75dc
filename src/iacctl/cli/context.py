"""The global options and the App the commands share (hatch keeps one application object)."""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from iacctl.services.app import App


def global_options(
    ctx: typer.Context,
    db: str = typer.Option(None, "--db", envvar="IACCTL_DB", help="SQLite store file."),
    verbose: bool = typer.Option(False, "--verbose", help="Show tracebacks of errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        from iacctl import __version__

        typer.echo(f"iacctl {__version__}")
        raise typer.Exit(0)
    ctx.obj = {"db": db}


def app_of(ctx: typer.Context) -> App:
    from iacctl.services.app import App

    obj = ctx.find_root().obj or {}
    if "app" not in obj:
        obj["app"] = App(obj.get("db"))
        ctx.find_root().obj = obj
    app: App = obj["app"]
    return app


def stop_gracefully_on_signals() -> None:
    """Ctrl-C and SIGTERM (a CI job being cancelled) ask the running task to stop gracefully:
    Terraform gets SIGINT and the task goes through the termination path (E1, E2)."""
    from iacctl.executor.watch import interrupted

    def handler(signum: int, _frame: FrameType | None) -> None:
        if interrupted.is_set():
            sys.stderr.write("iacctl: already stopping; waiting for Terraform to finish cleanly\n")
            return
        interrupted.set()
        sys.stderr.write("iacctl: interrupt received; stopping the task gracefully\n")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
