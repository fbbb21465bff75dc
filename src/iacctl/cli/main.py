"""Entry point: builds the Typer app and turns errors into one line and an exit code (SPEC C3,
X4). The only place that maps exceptions to exit codes."""

from __future__ import annotations

import os
import sys
import traceback

import typer

try:  # typer >= 0.2x parses with its own copy of click: its exceptions are not click's.
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on the real click
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from iacctl.errors import EXIT_CANCELLED, EXIT_FAILED, EXIT_USAGE, IacctlError

HELP = """Run Terraform and OpenTofu changes safely: plan, review, confirm, apply exactly the saved plan.

Exit codes: 0 done; 1 the task or command failed; 2 the plan has changes and waits for
confirm-apply; 3 the task was cancelled; 4 the task was re-planned and needs a new
confirmation; 5 refused (wrong status, stale or expired plan, lock held); 64 bad usage or
unknown name/id.

Store: --db PATH or IACCTL_DB (SQLite), IACCTL_DATABASE_URL (PostgreSQL), else the user data
directory."""


def build_app() -> typer.Typer:
    from iacctl.cli import notify, pods, runs, runtask, state, store, tasks, workspace
    from iacctl.cli.context import global_options

    app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=True,
                      context_settings={"help_option_names": ["-h", "--help"]},
                      pretty_exceptions_enable=False, rich_markup_mode=None)
    app.callback()(global_options)
    app.add_typer(workspace.app, name="workspace")
    runs.register(app)
    app.add_typer(tasks.app, name="tasks")
    app.add_typer(state.app, name="state")
    app.add_typer(pods.app, name="pods")
    app.add_typer(pods.pool_app, name="pool")
    app.add_typer(runtask.app, name="runtask")
    app.add_typer(store.app, name="store")
    app.add_typer(notify.app, name="notify")
    app.add_typer(notify.outbox_app, name="outbox")
    return app


def _say(message: str) -> None:
    sys.stderr.write(f"iacctl: {message}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in args or os.environ.get("IACCTL_VERBOSE") == "1"
    command = typer.main.get_command(build_app())
    try:
        code = command.main(args=args, prog_name="iacctl", standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as exc:
        sys.stderr.write((exc.ctx.get_help() if exc.ctx else "") + "\n")
        code = EXIT_USAGE
    except click_exceptions.UsageError as exc:
        hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx else ""
        _say(f"{exc.format_message()}{hint}")
        code = EXIT_USAGE
    except typer.Abort:
        _say("interrupted")
        code = EXIT_CANCELLED
    except IacctlError as exc:
        if verbose:
            traceback.print_exc()
        _say(str(exc))
        code = exc.exit_code
    except KeyboardInterrupt:
        _say("interrupted")
        code = EXIT_CANCELLED
    except BrokenPipeError:
        code = EXIT_FAILED
    except Exception as exc:
        if verbose:
            traceback.print_exc()
        _say(f"internal error: {exc!r} (run with --verbose for details)")
        code = EXIT_FAILED
    _finish_follow_ups()
    sys.exit(code if isinstance(code, int) else 0)


def _finish_follow_ups() -> None:
    from iacctl.cli.context import finish_follow_ups

    try:
        line = finish_follow_ups()
    except BaseException:  # Ctrl-C while waiting: the entries stay for the sweep
        line = None
    if line:
        _say(line)
