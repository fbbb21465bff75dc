"""The global options and the App the commands share (hatch keeps one application object)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from iacctl.services.app import App

# 5b (issue 13): ids and counts are SQLite 64-bit integers; a number beyond them names nothing
# stored, so it is bad usage (64), refused by the parser before the store is opened.
ID_MAX = 2**63 - 1
ID_MIN = -(2**63)


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
    """Ctrl-C and SIGTERM (a CI job being cancelled) ask the running task to stop gracefully."""
    from iacctl.executor.watch import stop_gracefully_on_signals as install

    install()
