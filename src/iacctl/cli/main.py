"""Entry point: builds the Typer app and turns errors into one line and an exit code (SPEC C3,
X4). The only place that maps exceptions to exit codes."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

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
    from iacctl.cli import (
        agent,
        complete,
        drift,
        inventory,
        notify,
        pods,
        runs,
        runtask,
        state,
        store,
        tasks,
        workspace,
    )
    from iacctl.cli.context import global_options

    # Issue 21: one completion mechanism, the scripts in completions/ (they know workspace names,
    # task ids and statuses); Typer's own --install-completion knew none of them.
    app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False,
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
    complete.register(app)
    app.command("version")(version)
    app.add_typer(notify.app, name="notify")
    app.add_typer(notify.outbox_app, name="outbox")
    app.add_typer(inventory.app, name="inventory")
    app.add_typer(drift.app, name="drift")
    app.add_typer(agent.app, name="agent")
    return app


def version() -> None:
    """Print iacctl's version (as --version does)."""
    from iacctl import __version__

    typer.echo(f"iacctl {__version__}")


def _say(message: str) -> None:
    try:
        sys.stderr.write(f"iacctl: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # issue 19 item 6: nobody reads stderr any more; the exit code still says it
    sys.stderr.flush()


def _takes_value(param: Any) -> bool:
    return bool(getattr(param, "param_type_name", "") == "option" and not getattr(param, "is_flag", False)
                and not getattr(param, "count", False))


def hoist_global_options(root: Any, args: list[str]) -> tuple[list[str], list[str]]:
    """Issue 9: the global options work wherever a user puts them. `--db PATH` and `--verbose`
    after the subcommand are moved in front of it (where the root command reads them); a
    `--json` before the command that has it is moved after it. Values of the command's own
    options are never taken for global options."""
    front: list[str] = []
    out: list[str] = []
    node: Any = root
    leaf: Any = None
    json_early = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.extend(args[i:])
            break
        if arg == "--verbose":
            front.append(arg)
        elif arg == "--db" and i + 1 < len(args):
            front += [arg, args[i + 1]]
            i += 1
        elif arg.startswith("--db="):
            front.append(arg)
        elif arg == "--json" and leaf is None and node is not None:
            json_early = True
        elif leaf is not None and arg.startswith("-") and "=" not in arg:
            out.append(arg)
            param = next((p for p in leaf.params if arg in (*p.opts, *p.secondary_opts)), None)
            if param is not None and _takes_value(param) and i + 1 < len(args):
                out.append(args[i + 1])
                i += 1
        else:
            out.append(arg)
            commands = getattr(node, "commands", None) if leaf is None and node is not None else None
            if commands is not None and not arg.startswith("-"):
                node = commands.get(arg)
                if node is not None and getattr(node, "commands", None) is None:
                    leaf = node
        i += 1
    if json_early:
        if leaf is not None and any("--json" in p.opts for p in leaf.params):
            cut = out.index("--") if "--" in out else len(out)
            out.insert(cut, "--json")
        else:
            out.append("--json")  # let the parser say where it is not an option
    return front, out


_COMMAND: Any = None


def cli_command() -> Any:
    """The command tree, built once per process (the agent builds it before forking workers)."""
    global _COMMAND
    if _COMMAND is None:
        _COMMAND = typer.main.get_command(build_app())
    return _COMMAND


def main(argv: list[str] | None = None) -> None:
    command = cli_command()
    front, rest = hoist_global_options(command, list(sys.argv[1:] if argv is None else argv))
    verbose = "--verbose" in front or os.environ.get("IACCTL_VERBOSE") == "1"
    args = front + rest
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
