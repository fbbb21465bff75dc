"""`iacctl state ...`: versions, pull, save-applied (SPEC E8)."""

from __future__ import annotations

import os
import sys

import typer

from iacctl.cli.context import app_of, check_file_target, in_id_range
from iacctl.cli.render import message, print_json, table

app = typer.Typer(help="State versions of workspaces.", no_args_is_help=True)


@app.command("versions")
def versions(ctx: typer.Context, workspace: str = typer.Argument(..., help="Workspace name."),
             as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List a workspace's state versions."""
    from iacctl.services import state

    views = state.versions(app_of(ctx), workspace)
    if as_json:
        print_json(views)
        return
    table(["id", "serial", "partial", "task", "sha256", "created"],
          [[v["id"], v["serial"], "yes" if v["partial"] else "", v["task"], v["sha256"][:16], v["created_at"]]
           for v in views], empty=f"workspace {workspace} has no state yet")


@app.command("pull")
def pull(
    ctx: typer.Context,
    workspace: str = typer.Argument(..., help="Workspace name."),
    version: int = typer.Option(None, "--version", callback=in_id_range,
                                help="A state version id (default: the latest)."),
    output: str = typer.Option(None, "--output", "-o", help="Write to this file (mode 0600) instead of stdout."),
) -> None:
    """Print a state version (decrypted)."""
    from iacctl.services import state

    if output:
        check_file_target(output, "--output")
    data = state.pull(app_of(ctx), workspace, version)
    if output:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        message(f"state written to {output}", err=True)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


@app.command("save-applied")
def save_applied(ctx: typer.Context, task_id: int = typer.Argument(..., callback=in_id_range, help="Task id."),
                 as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Store the state an applied_state_error task left behind, and unlock its workspace."""
    from iacctl.services import state

    view = state.save_applied(app_of(ctx), task_id)
    if as_json:
        print_json(view)
    else:
        message(f"task {task_id}: state stored as version {view['id']} (serial {view['serial']})")


@app.command("save-partial")
def save_partial(ctx: typer.Context, task_id: int = typer.Argument(..., callback=in_id_range, help="Task id."),
                 as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Store the state of an apply that stopped part-way (full disk, killed Terraform) from the
    work directory kept for it, once there is room, and unlock its workspace."""
    from iacctl.services import state

    view = state.save_partial(app_of(ctx), task_id)
    if as_json:
        print_json(view)
    else:
        message(f"task {task_id}: partial state stored as version {view['id']} (serial {view['serial']}); "
                "workspace unlocked")
