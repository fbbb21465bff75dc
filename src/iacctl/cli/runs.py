"""`iacctl plan`, `confirm-apply`, `cancel`: the commands that run tasks (SPEC L3-L6, E1)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import typer

from iacctl.cli.context import app_of, in_id_range, stop_gracefully_on_signals
from iacctl.cli.render import TerminalReporter, message, print_json
from iacctl.errors import EXIT_CHANGES, EXIT_OK, IacctlError, TaskCancelled, TaskFailed, UsageError

if TYPE_CHECKING:
    from iacctl.services.app import App

WAIT_TIMEOUT = typer.Option(
    None, "--wait-timeout", envvar="IACCTL_WAIT_TIMEOUT", metavar="DURATION",
    help="Give up waiting for the task's turn or a free slot after this long (e.g. 10m): the waiting task "
         "is cancelled and the command exits 5. Use it in CI.",
)


MESSAGE = typer.Option(
    None, "--message", "-m", metavar="TEXT",
    help="Why: recorded with who ran the command (tasks show, its history).",
)


def _wait_timeout(text: str | None) -> float | None:
    from iacctl.domain.durations import parse_duration

    return parse_duration(text) if text else None


@contextlib.contextmanager
def _json_whatever_the_end(app: App, as_json: bool, task_id: int | None = None) -> Iterator[None]:
    """Issue 19 item 5: with --json, a command that created or touched a task prints the task's
    document on stdout whatever its exit code (a re-plan, a wait given up, a refusal), so that
    `... | jq .id` works exactly where a script branches; the error stays one line on stderr."""
    try:
        yield
    except IacctlError as exc:
        about = exc.task_id if exc.task_id is not None else task_id
        if as_json and about is not None and not isinstance(exc, UsageError):
            from iacctl.services import tasks

            with contextlib.suppress(IacctlError):  # a store that says no has no document to give
                print_json(tasks.show(app, about))
        raise


@contextlib.contextmanager
def _for_the_ci(faces: Callable[[int], None]) -> Iterator[Callable[[int | None], None]]:
    """Issue 24 item 3: whatever the command's end (applied, waiting, failed, cancelled,
    re-planned, refused), what the CI shows of the task it touched is written after its own
    output, and never changes its exit code. `about(task_id)` names the task once known; an
    error that names one names it too."""
    touched: list[int | None] = [None]

    def about(task_id: int | None) -> None:
        touched[0] = task_id

    try:
        yield about
    except IacctlError as exc:
        if touched[0] is None and not isinstance(exc, UsageError):
            touched[0] = exc.task_id
        raise
    finally:
        if touched[0] is not None:
            faces(touched[0])


def _finish(task_view: dict[str, Any], as_json: bool) -> int:
    """Exit code for a task's end (C3)."""
    if as_json:
        print_json(task_view)
    status = task_view["status"]
    if status == "failed":
        # Issue 9: the reason (Terraform's own diagnostic) and where the whole log is.
        raise TaskFailed(f"task {task_view['id']} failed at stage {task_view['stage']}: {task_view['error']}; "
                         f"full log: iacctl tasks logs {task_view['id']}")
    if status == "cancelled":
        raise TaskCancelled(f"task {task_view['id']} cancelled: {task_view['error']}")
    if status == "applied_state_error":
        raise TaskFailed(task_view["error"] or "applied, but the state was not stored")
    if status == "apply_pending":
        if not as_json:
            counts = task_view["changes"] or {}
            message(f"task {task_view['id']}: plan has changes ({_summary(counts, task_view.get('moves'))}); "
                    f"review it with: iacctl tasks plan {task_view['id']}; "
                    f"apply it with: iacctl confirm-apply {task_view['id']}")
        return EXIT_CHANGES
    if status == "planned_and_finished":
        if not as_json:
            message(f"task {task_view['id']}: {_summary(task_view['changes'] or {}, task_view.get('moves'))}")
        # A speculative plan with changes exits 2, as terraform plan -detailed-exitcode does.
        return EXIT_CHANGES if task_view["has_changes"] else EXIT_OK
    if status == "applied" and not as_json:
        message(f"task {task_view['id']}: applied; state version {task_view['state_version']}")
        for f in task_view.get("queued_followers") or ():
            # Issue 21, F4: what the apply set off, so nobody is surprised by a lock it took.
            message(f"run trigger: task {f['task']} queued in workspace {f['workspace']}; it plans in the "
                    f"background and waits for: iacctl confirm-apply {f['task']}")
    return EXIT_OK


def _summary(counts: dict[str, int], moves: int | None = None) -> str:
    if not counts or not any(counts.values()):
        # Issue 19 item 7: a plan of moves only says so, never "plan has changes (no changes)".
        return f"no changes; {moves} move{'s' if moves != 1 else ''}" if moves else "no changes"
    text = (f"{counts.get('add', 0)} to add, {counts.get('change', 0)} to change, "
            f"{counts.get('destroy', 0)} to destroy, {counts.get('replace', 0)} to replace")
    if counts.get("replace"):
        # Terraform's own Plan line counts a replacement as an add and a destroy: say so, so the
        # two never read as contradicting each other.
        text += (f"; Terraform's Plan line: {counts.get('add', 0) + counts['replace']} to add, "
                 f"{counts.get('change', 0)} to change, {counts.get('destroy', 0) + counts['replace']} to destroy")
    if moves:
        text += f"; {moves} move{'s' if moves != 1 else ''}"
    return text


def plan(
    ctx: typer.Context,
    workspace: str = typer.Argument(..., help="Workspace name."),
    plan_only: bool = typer.Option(False, "--plan-only", help="Speculative plan: never locks, never applies."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Only queue the task; it runs in the background."),
    wait_timeout: str = WAIT_TIMEOUT,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Hide Terraform's own output."),
    text: str = MESSAGE,
    as_json: bool = typer.Option(False, "--json", help="Print the task as JSON."),
    report_file: str = typer.Option(None, "--report-file", metavar="PATH",
                                    help="Also write GitLab's Terraform report of the plan (create, update, delete "
                                         "counts) for artifacts: reports: terraform."),
) -> None:
    """Plan a workspace. Exit 2 when the plan has changes and waits for confirm-apply."""
    from iacctl.services import plan as planning
    from iacctl.services import tasks

    app = app_of(ctx)
    reporter = TerminalReporter(to_stderr=as_json, show_output=not quiet)
    limit = _wait_timeout(wait_timeout)
    stop_gracefully_on_signals()
    with _for_the_ci(lambda task_id: _plan_faces(app, task_id, report_file)) as about:
        with _json_whatever_the_end(app, as_json):
            task = planning.plan_workspace(app, workspace, plan_only=plan_only, wait=not no_wait,
                                           reporter=reporter, wait_timeout=limit, message=text)
        about(task.id)
        view = tasks.show(app, task.id or 0)
        if no_wait and view["status"] == "failed":
            # Issue 10 item 6: the pool cannot start it (the cluster refuses its pods).
            raise typer.Exit(_finish(view, as_json))
        if no_wait:
            if as_json:
                print_json(view)
            else:
                message(f"task {view['id']} queued ({view['status']})")
            raise typer.Exit(EXIT_OK)
        raise typer.Exit(_finish(view, as_json))


def _plan_faces(app: App, task_id: int, report_file: str | None) -> None:
    from iacctl.cli import ci

    ci.summarize_plan(app, task_id)
    if report_file is not None:
        ci.write_report(app, task_id, report_file)


def confirm_apply(
    ctx: typer.Context,
    task_id: int = typer.Argument(..., callback=in_id_range, help="The apply_pending task to apply."),
    rebuild: bool = typer.Option(
        False, "--rebuild", help="Rebuild the work directory from the store instead of reusing the plan's slot."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Hide Terraform's own output."),
    wait_timeout: str = WAIT_TIMEOUT,
    text: str = MESSAGE,
    as_json: bool = typer.Option(False, "--json", help="Print the task as JSON."),
    plan_hash: str = typer.Option(
        None, "--plan-hash", metavar="HASH",
        help="Apply only if the task's saved plan still has this hash (as its review shows it; at least 12 "
             "characters): what the reviewer approved is what is applied."),
) -> None:
    """Apply exactly the saved plan of an apply_pending task (restated on stderr first). Exit 4
    if it had to be re-planned."""
    from iacctl.services import confirm, tasks

    app = app_of(ctx)
    reporter = TerminalReporter(to_stderr=as_json, show_output=not quiet)
    limit = _wait_timeout(wait_timeout)
    pinned = pinned_hash(plan_hash)
    stop_gracefully_on_signals()
    state_version: list[int | None] = [None]

    def faces(about: int) -> None:
        from iacctl.cli import ci

        ci.summarize_apply(app, about, state_version[0])

    with _for_the_ci(faces) as about:
        with _json_whatever_the_end(app, as_json, task_id):
            task = confirm.confirm_apply(app, task_id, rebuild=rebuild, reporter=reporter, wait_timeout=limit,
                                         message=text, plan_hash=pinned)
        about(task_id)
        view = tasks.show(app, task.id or 0)
        state_version[0] = view["state_version"]
        view["queued_followers"] = confirm.queued_followers(app, task.id or 0)
        raise typer.Exit(_finish(view, as_json))


def pinned_hash(text: str | None) -> str | None:
    """Issue 24 item 2: a plan hash as the review shows it, or a prefix of it that still names
    one plan (12 hex digits or more)."""
    if text is None:
        return None
    value = text.strip().lower()
    if len(value) < 12 or len(value) > 64 or any(ch not in "0123456789abcdef" for ch in value):
        raise UsageError(f"--plan-hash {text[:80]!r} is not a plan hash: give the hash `iacctl tasks plan ID` "
                         "shows (at least 12 of its hex digits)")
    return value


def cancel(
    ctx: typer.Context,
    task_id: int = typer.Argument(..., callback=in_id_range, help="A pending, running or apply_pending task."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Do not wait for a running task to stop."),
    text: str = MESSAGE,
    as_json: bool = typer.Option(False, "--json", help="Print the task as JSON."),
) -> None:
    """Cancel a task. A running one is stopped gracefully (Terraform gets SIGINT)."""
    from iacctl.services import cancel as cancelling
    from iacctl.services import tasks

    app = app_of(ctx)
    reporter = TerminalReporter(to_stderr=True, show_output=False)
    with _json_whatever_the_end(app, as_json, task_id):
        task = cancelling.cancel(app, task_id, wait=not no_wait, reporter=reporter, message=text)
    view = tasks.show(app, task.id or 0)
    if as_json:
        print_json(view)
    elif view["status"] == "cancelled":
        message(f"task {task_id} cancelled")
    else:
        message(f"task {task_id}: cancel requested (it is {view['status']}, stage {view['stage']})")
    from iacctl.cli import ci

    ci.summarize_cancel(app, task_id)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
    app.command("confirm-apply")(confirm_apply)
    app.command("cancel")(cancel)
