"""`iacctl tasks ...`: list, show, logs, and the detached runner `tasks run` (SPEC C1, L7)."""

from __future__ import annotations

import sys

import typer

from iacctl.cli.context import ID_MAX, ID_MIN, app_of, stop_gracefully_on_signals
from iacctl.cli.render import message, print_json, table

app = typer.Typer(help="Tasks: runs of plans and applies.", no_args_is_help=True)

DEFAULT_TABLE_ROWS = 50


@app.command("list")
def list_(
    ctx: typer.Context,
    workspace: str = typer.Option(None, "--workspace", "-w"),
    status: str = typer.Option(None, "--status"),
    limit: int = typer.Option(None, "--limit", max=ID_MAX, help="Only the newest N (the table shows 50 by default)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array (all matching tasks)."),
) -> None:
    """List tasks, oldest first."""
    from iacctl.services import tasks

    rows_limit = limit if (limit is not None or as_json) else DEFAULT_TABLE_ROWS
    views = tasks.list_tasks(app_of(ctx), workspace=workspace, status=status, limit=rows_limit)
    if as_json:
        print_json(views)
        return
    table(["id", "workspace", "kind", "status", "stage", "changes", "created"],
          [[v["id"], v["workspace"], v["kind"], v["status"], v["stage"] or "",
            _changes(v["changes"]), v["created_at"]] for v in views],
          empty="no tasks")


def _changes(counts: dict[str, int] | None) -> str:
    if counts is None:
        return ""
    return f"+{counts['add']} ~{counts['change']} -{counts['destroy']} ±{counts['replace']}"


@app.command("show")
def show(ctx: typer.Context, task_id: int = typer.Argument(..., min=ID_MIN, max=ID_MAX),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Show a task: status, stage, plan hash, changes, slot, and its history."""
    from iacctl.services import tasks

    view = tasks.show(app_of(ctx), task_id)
    if as_json:
        print_json(view)
        return
    message(f"task {view['id']} ({view['kind']}) of workspace {view['workspace']}: {view['status']}"
            + (f" at stage {view['stage']}" if view["stage"] else ""))
    if view["error"]:
        message(f"  error: {view['error']}")
    if view["plan_hash"]:
        message(f"  plan_hash: {view['plan_hash']}  changes: {_changes(view['changes'])}")
    if view["slot"] is not None:
        message(f"  slot: {view['pool']}/{view['pod']}/slot-{view['slot']}"
                + (f"  apply path: {view['apply_path']}" if view["apply_path"] else ""))
    if view["run_task_results"]:
        message("  run tasks:")
        for r in view["run_task_results"]:
            message(f"    {r['summary']}")
    message("  history:")
    for e in view["history"]:
        change = f"{e['from'] or '-'} -> {e['to'] or '-'}" if e["kind"] != "note" else ""
        message(f"    {e['at']}  {e['kind']:<6} {change}  {e['reason'] or ''}".rstrip())


@app.command("logs")
def logs(ctx: typer.Context, task_id: int = typer.Argument(..., min=ID_MIN, max=ID_MAX),
         follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing while it runs.")) -> None:
    """Print a task's log (Terraform's output and iacctl's notes)."""
    from iacctl.services import tasks

    for line in tasks.logs(app_of(ctx), task_id, follow=follow):
        sys.stdout.write(line + "\n")
        if follow:
            sys.stdout.flush()


@app.command("run", hidden=True)
def run(ctx: typer.Context, task_id: int = typer.Argument(..., min=ID_MIN, max=ID_MAX)) -> None:
    """Run a queued task if it is its turn (started detached by iacctl itself)."""
    from iacctl.services import queue

    stop_gracefully_on_signals()
    task = queue.run_queued(app_of(ctx), task_id)
    message(f"task {task_id}: {task.status}")
