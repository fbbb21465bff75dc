"""`iacctl tasks ...`: list, show, logs, and the detached runner `tasks run` (SPEC C1, L7)."""

from __future__ import annotations

import sys
import time
from typing import Any

import typer

from iacctl.cli import ci
from iacctl.cli.context import app_of, in_id_range, stop_gracefully_on_signals
from iacctl.cli.markdown import review_markdown
from iacctl.cli.render import WIDE, message, nothing_listed, print_json, table
from iacctl.domain.plans import counts_sentence, relation_to_terraform
from iacctl.domain.review import Review
from iacctl.domain.timeline import format_seconds
from iacctl.errors import UsageError

app = typer.Typer(help="Tasks: runs of plans and applies.", no_args_is_help=True)

DEFAULT_TABLE_ROWS = 50


@app.command("list")
def list_(
    ctx: typer.Context,
    workspace: str = typer.Option(None, "--workspace", "-w", help="Only this workspace's tasks."),
    status: str = typer.Option(None, "--status", help="Only tasks with this status (pending, running, apply_pending, "
                               "planned_and_finished, applied, applied_state_error, failed, cancelled)."),
    limit: int = typer.Option(None, "--limit", callback=in_id_range,
                              help="Only the newest N (the table shows 50 by default)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array (all matching tasks)."),
    wide: bool = WIDE,
) -> None:
    """List tasks, oldest first."""
    from iacctl.services import tasks

    rows_limit = limit if (limit is not None or as_json) else DEFAULT_TABLE_ROWS
    views = tasks.list_tasks(app_of(ctx), workspace=workspace, status=status, limit=rows_limit)
    if as_json:
        print_json(views)
        return
    # Issue 9: one line per task at 80 columns; the stage shows while it matters (a task still
    # going), the rest of it is in `tasks show`.
    table(["id", "workspace", "kind", "status", "changes", "created"],
          [[v["id"], v["workspace"], _KINDS.get(v["kind"], v["kind"]), _status(v),
            _changes(v["changes"]), (v["created_at"] or "").replace("T", " ")[:16]] for v in views],
          empty=nothing_listed("tasks", [("--workspace", workspace), ("--status", status)],
                               "no tasks yet: iacctl plan WORKSPACE starts one"),
          fold=("workspace",), optional=("created", "changes", "kind"), wide=wide)


_KINDS = {"plan_and_apply": "plan+apply", "plan": "plan", "drift_check": "drift"}


def _status(view: dict[str, Any]) -> str:
    if view["status"] in ("running", "pending") and view["stage"]:
        return f"{view['status']}: {view['stage']}"
    return str(view["status"])


def _changes(counts: dict[str, int] | None) -> str:
    if counts is None:
        return ""
    return f"+{counts['add']} ~{counts['change']} -{counts['destroy']} ±{counts['replace']}"


@app.command("show")
def show(ctx: typer.Context, task_id: int = typer.Argument(..., callback=in_id_range, help="Task id."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
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
    for role, key in (("created by", "created_by"), ("confirmed by", "confirmed_by"),
                      ("cancelled by", "cancelled_by")):
        actor = view[key]
        if actor is not None:
            said = f': "{actor["message"]}"' if actor["message"] else ""
            message(f"  {role}: {actor['display']}{said}")
    if view["triggered_by"]:
        message("  triggered by: " + ", ".join(f"workspace {s['workspace']} (task {s['task']})"
                                               for s in view["triggered_by"])
                + f"  (hop {view['trigger_hops']})")
    if view["stages"]:
        message("  stages:")
        for st in view["stages"]:
            took = "running" if st["running"] else format_seconds(st["duration_s"])
            message(f"    {st['stage']:<15} {st['started_at']}  {took}")
    if view["run_task_results"]:
        message("  run tasks:")
        for r in view["run_task_results"]:
            message(f"    {r['summary']}")
    message("  history:")
    for e in view["history"]:
        change = f"{e['from'] or '-'} -> {e['to'] or '-'}" if e["kind"] != "note" else ""
        message(f"    {e['at']}  {e['kind']:<6} {change}  {e['reason'] or ''}".rstrip())


@app.command("logs")
def logs(ctx: typer.Context, task_id: int = typer.Argument(..., callback=in_id_range, help="Task id."),
         follow: bool = typer.Option(False, "--follow", "-f", help="Stream a running task's output until it "
                                     "ends, then exit with the task's exit code."),
         timestamps: bool = typer.Option(False, "--timestamps", "-t", help="Prefix each line with its time (UTC).")
         ) -> None:
    """Print a task's log (Terraform's output and iacctl's notes)."""
    from iacctl.services import tasks

    app = app_of(ctx)
    for at, line in tasks.logs(app, task_id, follow=follow):
        sys.stdout.write((f"{_stamp(at)} {line}" if timestamps else line) + "\n")
        if follow:
            sys.stdout.flush()
    if follow:
        raise typer.Exit(tasks.exit_code(app, task_id))


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"


FORMATS = ("text", "markdown", "json")


@app.command("plan")
def plan(ctx: typer.Context, task_id: int = typer.Argument(..., callback=in_id_range, help="Task id."),
         as_json: bool = typer.Option(False, "--json", help="Print the stored plan JSON (as terraform show -json "
                                      "gives it, sensitive values masked); the same as --format json."),
         form: str = typer.Option("text", "--format", metavar="FORMAT",
                                  help="text (a table for the terminal), markdown (a pull request comment or CI "
                                       "job summary, at most 65,536 characters) or json."),
         report_file: str = typer.Option(None, "--report-file", metavar="PATH",
                                         help="Also write GitLab's Terraform report (create, update, delete "
                                              "counts) for artifacts: reports: terraform."),
         wide: bool = WIDE) -> None:
    """Review a task's saved plan: each resource change and the counts (also after the work
    directory is gone)."""
    from iacctl.services import tasks

    app = app_of(ctx)
    form = "json" if as_json else form
    if form not in FORMATS:
        raise UsageError(f"unknown --format {form!r}: one of {', '.join(FORMATS)}")
    if form == "markdown":
        # Issue 24: a failed plan has a review too (what failed, Terraform's own words).
        review = tasks.review(app, task_id, need_plan=False)
        sys.stdout.write(review_markdown(review))
    elif form == "json":
        print_json(tasks.plan_json(app, task_id))
    else:
        _print_review(tasks.review(app, task_id), wide)
    if report_file is not None:
        ci.write_report(app, task_id, report_file)


def _print_review(review: Review, wide: bool) -> None:
    message(f"task {review.task} of workspace {review.workspace} ({review.status}): "
            f"plan {(review.plan_hash or '')[:16]}, planned {review.planned_at}")
    table(["address", "action", "changes"],
          [[c.address, c.action, "; ".join(([f"from {c.moved_from}"] if c.moved_from else []) + list(c.changes))]
           for c in review.changes],
          empty="no resource changes", fold=("changes",), optional=("changes",), wide=wide)
    if review.drift:
        message("changed outside Terraform (drift found by the refresh):")
        table(["address", "drift", "changes"],
              [[c.address, c.action, "; ".join(c.changes)] for c in review.drift],
              fold=("changes",), optional=("changes",), wide=wide)
    assert review.counts is not None
    message(counts_sentence(review.counts, moves=review.moves, reads=review.reads))
    relation = relation_to_terraform(review.counts)
    if relation:
        message(relation)


@app.command("run", hidden=True)
def run(ctx: typer.Context, task_id: int = typer.Argument(..., callback=in_id_range, help="Task id.")) -> None:
    """Run a queued task if it is its turn (started detached by iacctl itself)."""
    from iacctl.services import queue

    stop_gracefully_on_signals()
    task = queue.run_queued(app_of(ctx), task_id)
    message(f"task {task_id}: {task.status}")
