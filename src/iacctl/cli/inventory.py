"""`iacctl inventory ...` (SPEC F2): the resources the workspaces' states hold, synced after each
apply, and the URL the same records are POSTed to."""

from __future__ import annotations

import typer

from iacctl.cli.context import app_of
from iacctl.cli.render import WIDE, message, nothing_listed, print_json, table

app = typer.Typer(help="The inventory: every resource of every workspace's state, synced after each apply.",
                  no_args_is_help=True)
endpoint_app = typer.Typer(help="The URL each inventory sync is also POSTed to (signed as notifications are).",
                           no_args_is_help=True)
app.add_typer(endpoint_app, name="endpoint")

JSON = typer.Option(False, "--json", help="Print JSON.")


@app.command("list")
def list_(
    ctx: typer.Context,
    workspace: str = typer.Argument(None, help="Only this workspace's resources."),
    rtype: str = typer.Option(None, "--type", help="Only resources of this type (e.g. aws_instance)."),
    removed: bool = typer.Option(False, "--removed", help="Also resources that are gone from the state."),
    as_json: bool = JSON,
    wide: bool = WIDE,
) -> None:
    """List the resources in the inventory (those still in the state; --removed for all)."""
    from iacctl.services import inventory

    views = inventory.list_resources(app_of(ctx), workspace, rtype=rtype, include_removed=removed or as_json)
    if as_json:
        print_json(views)
        return
    table(["workspace", "address", "id", "serial", "first seen", "last seen", "removed"],
          [[v["workspace"], v["address"], v["id"] or "-", v["serial"], v["first_seen"], v["last_seen"],
            v["removed_at"] or ""] for v in views],
          empty=nothing_listed("resources", [("workspace", workspace), ("--type", rtype)],
                               "the inventory is empty: it is filled after each apply (iacctl confirm-apply)"),
          optional=("first seen", "last seen", "id", "serial", "removed"), wide=wide)


@app.command("status")
def status(ctx: typer.Context, workspace: str = typer.Argument(..., help="Workspace name."),
           as_json: bool = JSON) -> None:
    """The workspace's last inventory sync: serial synced, when, and any error."""
    from iacctl.services import inventory

    view = inventory.sync_status(app_of(ctx), workspace)
    if as_json:
        print_json(view)
        return
    message(f"workspace {workspace}: inventory {view['status']}"
            + (f", serial {view['serial']} synced at {view['synced_at']}" if view["serial"] is not None else "")
            + (f"; last error: {view['error']}" if view["error"] else ""))


@endpoint_app.command("set")
def endpoint_set(
    ctx: typer.Context,
    url: str = typer.Argument(..., help="An http:// or https:// URL."),
    hmac_key_file: str = typer.Option(None, "--hmac-key-file", help="File holding the key that signs each body "
                                      "(X-TFE-Notification-Signature: hex HMAC-SHA512); stored encrypted."),
    as_json: bool = JSON,
) -> None:
    """POST each inventory sync's records to URL from now on."""
    from iacctl.services import inventory

    view = inventory.set_endpoint(app_of(ctx), url, hmac_key_file)
    if as_json:
        print_json(view)
    else:
        message(f"inventory syncs are POSTed to {url}" + (" (signed)" if view and view["hmac_key"] else ""))


@endpoint_app.command("show")
def endpoint_show(ctx: typer.Context, as_json: bool = JSON) -> None:
    """The inventory URL (the key is never shown)."""
    from iacctl.services import inventory

    view = inventory.show_endpoint(app_of(ctx))
    if as_json:
        print_json(view)
    elif view is None:
        message("no inventory URL is set: iacctl inventory endpoint set URL")
    else:
        message(f"{view['url']}" + (" (signed)" if view["hmac_key"] else ""))


@endpoint_app.command("remove")
def endpoint_remove(ctx: typer.Context) -> None:
    """Stop POSTing inventory syncs."""
    from iacctl.services import inventory

    inventory.remove_endpoint(app_of(ctx))
    message("inventory URL removed")
