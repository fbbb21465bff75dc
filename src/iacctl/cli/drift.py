"""`iacctl drift check|show` (SPEC F5, issue 12): refresh-only checks of workspaces and the drift
they recorded."""

from __future__ import annotations

import threading
from typing import Any

import typer

from iacctl.cli.context import app_of, stop_gracefully_on_signals
from iacctl.cli.render import TerminalReporter, message, print_json, table
from iacctl.domain.lifecycle import Stage
from iacctl.errors import EXIT_CANCELLED, EXIT_CHANGES, EXIT_FAILED, EXIT_OK, EXIT_REFUSED, UsageError

app = typer.Typer(help="Drift: refresh-only checks of what changed outside Terraform (exit 0 no drift, "
                       "2 drift found, 1 a check failed).", no_args_is_help=True)

JSON = typer.Option(False, "--json", help="Print JSON.")


class _Prefixed(TerminalReporter):
    """--all: each workspace's stages and notes, prefixed with its name; Terraform's own lines
    are kept in the task logs (iacctl tasks logs ID), not interleaved here."""

    _lock = threading.Lock()

    def __init__(self, workspace: str, *, to_stderr: bool) -> None:
        super().__init__(to_stderr=to_stderr, show_output=False)
        self.workspace = workspace

    def stage(self, task_id: int, stage: Stage) -> None:
        with self._lock:
            self._plain(f"[{self.workspace}] task {task_id} stage: {stage}")

    def note(self, text: str) -> None:
        with self._lock:
            self._plain(f"[{self.workspace}] {text}")


def _line(result: dict[str, Any]) -> str:
    name, outcome = result["workspace"], result["outcome"]
    if outcome == "drifted":
        count = len(result["drifted"])
        head = (f"{name}: drift in {count} resource(s) (task {result['task']}; details: iacctl drift show {name}; "
                f"the plan: iacctl tasks plan {result['task']})")
        rows = [f"  {r['address']}: " + ("deleted outside Terraform" if r["change"] == "deleted"
                                         else ", ".join(r["attributes"]) or "changed") for r in result["drifted"]]
        return "\n".join([head, *rows])
    if outcome == "no_drift":
        return f"{name}: no drift (task {result['task']})"
    if outcome == "skipped":
        return f"{name}: skipped: {result['reason']}"
    return f"{name}: check {outcome}: {result['reason']}"


def exit_code(outcomes: list[str], *, single: bool) -> int:
    """C3, issue 12: 1 if a check failed (drift found elsewhere is still recorded and listed),
    else 3 if one was cancelled, else 2 if any drift was found, else 0. A single workspace
    that was skipped is refused (5): nothing was checked."""
    if "failed" in outcomes:
        return EXIT_FAILED
    if "cancelled" in outcomes:
        return EXIT_CANCELLED
    if "drifted" in outcomes:
        return EXIT_CHANGES
    if single and outcomes == ["skipped"]:
        return EXIT_REFUSED
    return EXIT_OK


@app.command("check")
def check(
    ctx: typer.Context,
    workspace: str = typer.Argument(None, help="Workspace name (or --all)."),
    all_: bool = typer.Option(False, "--all", help="Check every workspace, as many at once as the pools allow."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Hide Terraform's own output."),
    as_json: bool = JSON,
) -> None:
    """Run a refresh-only plan of a workspace (or --all) as a speculative task: it never locks
    and never applies; a busy workspace, or one whose last plan or apply failed, is skipped.
    Records the drifted resources on the workspace. Exit 0 no drift, 2 drift found, 1 a check
    failed."""
    from iacctl.services import drift

    if all_ == bool(workspace):
        raise UsageError("give a workspace name or --all (not both)")
    app = app_of(ctx)
    stop_gracefully_on_signals()

    def reporter_for(name: str) -> Any:
        if all_:
            return _Prefixed(name, to_stderr=as_json)
        return TerminalReporter(to_stderr=as_json, show_output=not quiet)

    def said(result: drift.CheckResult) -> None:
        if not as_json:
            message(_line(result.as_json()))

    results = drift.check(app, None if all_ else [workspace], reporter_for, said)
    views = [r.as_json() for r in results]
    if as_json:
        print_json(views)
    raise typer.Exit(exit_code([v["outcome"] for v in views], single=not all_))


@app.command("show")
def show(ctx: typer.Context, workspace: str = typer.Argument(..., help="Workspace name."),
         as_json: bool = JSON) -> None:
    """Show a workspace's last drift check: the drifted resources and which attributes differ
    (names only; the values are in the check's saved plan: iacctl tasks plan ID)."""
    from iacctl.services import drift

    view = drift.show(app_of(ctx), workspace)
    if as_json:
        print_json(view)
        return
    if not view["checked"]:
        message(f"workspace {workspace}: never checked for drift (iacctl drift check {workspace})")
        return
    if view["cleared_at"]:
        message(f"workspace {workspace}: drift found by task {view['task']} at {view['checked_at']} was cleared "
                f"by the apply of task {view['cleared_by_task']} at {view['cleared_at']}")
        return
    if not view["drifted"]:
        message(f"workspace {workspace}: no drift at {view['checked_at']} (task {view['task']})")
        return
    message(f"workspace {workspace}: {len(view['resources'])} drifted resource(s) at {view['checked_at']} "
            f"(task {view['task']}; its plan: iacctl tasks plan {view['task']})")
    table(["address", "change", "attributes"],
          [[r["address"], r["change"], ", ".join(r["attributes"]) or "-"] for r in view["resources"]])
