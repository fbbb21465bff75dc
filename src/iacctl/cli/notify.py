"""`iacctl notify ...` and `iacctl outbox ...`: notifications compatible with HCP Terraform, and
the outbox of follow-ups (SPEC F1, F3)."""

from __future__ import annotations

from typing import Any

import typer

from iacctl.cli.context import app_of, in_id_range
from iacctl.cli.render import message, nothing_listed, print_json, table

app = typer.Typer(help="Notification destinations (HCP Terraform compatible webhooks, Slack) and their "
                       "delivery log.", no_args_is_help=True)
outbox_app = typer.Typer(help="The outbox: every follow-up of a task until it is delivered, dead or dismissed.",
                         no_args_is_help=True)

EVENTS_HELP = ("Comma-separated events: created, planning, needs_confirmation, applying, applied, planned, failed, "
               "cancelled, and drift_detected: a drift check (iacctl drift check) found drift not seen before, "
               "sent as HCP's assessment notification (payload_version 2, trigger assessment:drifted).")


def _say(view: dict[str, Any], what: str, as_json: bool) -> None:
    if as_json:
        print_json(view)
        return
    where = f"workspace {view['workspace']}" if view["workspace"] else "every workspace"
    signed = ", signed with its token" if view["token"] else ""
    state = "" if view["enabled"] else " (disabled)"
    message(f"notification destination {view['name']} {what}: {view['type']} {view['url']}; "
            f"events {','.join(view['events'])} of {where}{signed}{state}")


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Destination name."),
    url: str = typer.Option(..., "--url", help="Where notifications are POSTed (a Slack incoming webhook URL for "
                                               "--type slack)."),
    kind: str = typer.Option("generic", "--type", help="generic (HCP Terraform's payload) or slack."),
    token_file: str = typer.Option(None, "--token-file", help="File holding the token that signs requests "
                                                              "(X-TFE-Notification-Signature)."),
    events: str = typer.Option(..., "--events", help=EVENTS_HELP),
    workspace: str = typer.Option(None, "--workspace", help="Only this workspace's tasks (default: every workspace)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create a destination. A verification request is sent first; it must be answered 2xx."""
    from iacctl.services import notifications

    view = notifications.create(app_of(ctx), name, url=url, kind=kind, token_file=token_file, events=events,
                                workspace=workspace)
    _say(view, "created", as_json)


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List destinations (tokens and Slack URLs are never shown)."""
    from iacctl.services import notifications

    views = notifications.list_destinations(app_of(ctx))
    if as_json:
        print_json(views)
        return
    table(["name", "type", "workspace", "events", "enabled", "url"],
          [[v["name"], v["type"], v["workspace"] or "(all)", ",".join(v["events"]), "yes" if v["enabled"] else "no",
            v["url"]] for v in views],
          empty="no notification destinations: iacctl notify create NAME --url URL --events EVENTS adds one")


@app.command("show")
def show(ctx: typer.Context, name: str = typer.Argument(..., help="Destination name."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show a destination (its token and a Slack URL masked)."""
    from iacctl.services import notifications

    view = notifications.show(app_of(ctx), name)
    if as_json:
        print_json(view)
        return
    for key, value in view.items():
        shown = ",".join(value) if isinstance(value, list) else ("-" if value is None else value)
        message(f"{key}: {shown}")


@app.command("delete")
def delete(ctx: typer.Context, name: str = typer.Argument(..., help="Destination name.")) -> None:
    """Delete a destination; its notifications still waiting are dismissed."""
    from iacctl.services import notifications

    dismissed = notifications.delete(app_of(ctx), name)
    extra = f"; {dismissed} waiting notification(s) dismissed" if dismissed else ""
    message(f"notification destination {name} deleted{extra}")


@app.command("enable")
def enable(ctx: typer.Context, name: str = typer.Argument(..., help="Destination name."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Enable a destination; a verification request must be answered 2xx first."""
    from iacctl.services import notifications

    view, _ = notifications.set_enabled(app_of(ctx), name, True)
    _say(view, "enabled", as_json)


@app.command("disable")
def disable(ctx: typer.Context, name: str = typer.Argument(..., help="Destination name."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Disable a destination; its notifications still waiting are dismissed."""
    from iacctl.services import notifications

    view, dismissed = notifications.set_enabled(app_of(ctx), name, False)
    if as_json:
        print_json(view)
        return
    extra = f"; {dismissed} waiting notification(s) dismissed" if dismissed else ""
    message(f"notification destination {name} disabled{extra}")


@app.command("verify")
def verify(ctx: typer.Context, name: str = typer.Argument(..., help="Destination name."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Send the verification request again (HCP Terraform's `verification` trigger); exit 1 unless 2xx."""
    from iacctl.services import notifications

    view = notifications.verify(app_of(ctx), name)
    _say(view, "verified", as_json)


@app.command("deliveries")
def deliveries(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Only this destination's attempts."),
    failed: bool = typer.Option(False, "--failed", help="Only attempts that did not deliver."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The delivery log: every attempt with time, event, task, HTTP code, duration and error."""
    from iacctl.services import notifications

    views = notifications.delivery_log(app_of(ctx), name, failed_only=failed)
    if as_json:
        print_json(views)
        return
    table(["at", "destination", "event", "task", "attempt", "result", "http", "ms", "error"],
          [[v["at"], v["destination"], v["event"], v["task"] or "-", v["attempt"], v["result"],
            v["http_status"] or "-", f"{v['duration_ms']:.0f}", v["error"] or ""] for v in views],
          empty=nothing_listed("deliveries", [("destination", name), ("--failed", failed)],
                               "no deliveries yet: tasks of workspaces with notification destinations "
                               "(iacctl notify create) make them as they end"))


@outbox_app.command("list")
def outbox_list(
    ctx: typer.Context,
    status: str = typer.Option(None, "--status", help="Only entries with this status: pending, delivering, "
                                                      "delivered, dead or dismissed."),
    kind: str = typer.Option(None, "--kind", help="Only entries of this kind: notification, trigger (run "
                                                  "triggers) or inventory (inventory syncs)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List outbox entries (the latest 200): status, attempts, next attempt, last error."""
    from iacctl.services import notifications

    views = notifications.outbox_list(app_of(ctx), status, kind)
    if as_json:
        print_json(views)
        return
    table(["id", "task", "event", "destination", "status", "attempts", "next_attempt", "last_error"],
          [[v["id"], v["task"], v["event"], v["destination"], v["status"], v["attempts"],
            v["next_attempt_at"] or "-", v["last_error"] or ""] for v in views],
          empty=nothing_listed("outbox entries", [("--status", status), ("--kind", kind)],
                               "the outbox is empty: notifications, run triggers and inventory syncs are written "
                               "to it as tasks end"))


def _say_entry(view: dict[str, Any], what: str, as_json: bool) -> None:
    if as_json:
        print_json(view)
        return
    message(f"outbox entry {view['id']} ({view['destination']}, task {view['task']} {view['event']}) {what}: "
            f"{view['status']}")


@outbox_app.command("retry")
def outbox_retry(
    ctx: typer.Context,
    entry_id: int = typer.Argument(..., callback=in_id_range, help="Outbox entry id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Send a dead or waiting entry again now (with a new day of retries)."""
    from iacctl.services import notifications

    _say_entry(notifications.outbox_retry(app_of(ctx), entry_id), "queued again", as_json)


@outbox_app.command("dismiss")
def outbox_dismiss(
    ctx: typer.Context,
    entry_id: int = typer.Argument(..., callback=in_id_range, help="Outbox entry id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Give up a dead or waiting entry: it is not sent and no longer reported."""
    from iacctl.services import notifications

    _say_entry(notifications.outbox_dismiss(app_of(ctx), entry_id), "dismissed", as_json)
