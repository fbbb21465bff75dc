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


def in_id_range(value: int | None) -> int | None:
    """The bounds checked without showing them: `--help` of every id said
    [-9223372036854775808<=x<=9223372036854775807] (issue 21)."""
    if value is not None and value > ID_MAX:
        raise typer.BadParameter(f"{value} is not less than or equal to {ID_MAX}: no stored id or count is that large")
    if value is not None and value < ID_MIN:
        raise typer.BadParameter(f"{value} is not greater than or equal to {ID_MIN}: no stored id is that small")
    return value


def _print_version(value: bool) -> None:
    # Eager, so `iacctl --version` works on its own, without a command (issue 9).
    if value:
        from iacctl import __version__

        typer.echo(f"iacctl {__version__}")
        raise typer.Exit(0)


def global_options(
    ctx: typer.Context,
    db: str = typer.Option(None, "--db", envvar="IACCTL_DB", help="SQLite store file."),
    verbose: bool = typer.Option(False, "--verbose", help="Show tracebacks of errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_print_version, expose_value=False),
) -> None:
    if db:
        check_file_target(db, "--db")
    ctx.obj = {"db": db}


def check_file_target(path: str, option: str) -> None:
    """X4 (issue 9): a file iacctl is to write goes in a directory that exists; a typo in it is
    bad usage (exit 64) before anything is created, not a store or file in a surprise place."""
    from pathlib import Path

    from iacctl.errors import UsageError

    target = Path(path).expanduser()
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: the directory {parent} does not exist")
    if target.is_dir():
        raise UsageError(f"{option} {path} is a directory, not a file")


_APPS: list[App] = []


def app_of(ctx: typer.Context) -> App:
    from iacctl.services.app import App

    obj = ctx.find_root().obj or {}
    if "app" not in obj:
        obj["app"] = App(obj.get("db"))
        ctx.find_root().obj = obj
        _APPS.append(obj["app"])
    app: App = obj["app"]
    return app


def finish_follow_ups() -> str | None:
    """F1: when a command ends, its follow-ups get at most the budget to be delivered; what is
    not delivered yet is said in one line. Never changes the command's exit code."""
    if not any(app.wrote_follow_ups() for app in _APPS):
        _APPS.clear()
        return None  # issue 20: nothing written to the outbox (a listing): import no delivery
    from iacctl.services import queue

    lines = []
    for app in _APPS:
        try:
            line = queue.finish_follow_ups(app)
        except Exception as exc:
            line = f"follow-ups not delivered now ({exc}); `iacctl pods recover` delivers them"
        if line:
            lines.append(line)
    _APPS.clear()
    return lines[0] if lines else None


def stop_gracefully_on_signals() -> None:
    """Ctrl-C and SIGTERM (a CI job being cancelled) ask the running task to stop gracefully."""
    from iacctl.executor.watch import stop_gracefully_on_signals as install

    install()
