"""`iacctl runtask ...`: run tasks compatible with HCP Terraform (SPEC R1-R8, C1)."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import typer

from iacctl.cli.context import app_of, in_id_range
from iacctl.cli.render import message, print_json, table

app = typer.Typer(help="Run tasks: external checks (HCP Terraform run tasks) at a task's stages.",
                  no_args_is_help=True)


def _say_run_task(view: dict[str, Any], what: str, as_json: bool) -> None:
    if as_json:
        print_json(view)
        return
    key = "signed with its HMAC key" if view["hmac_key"] else "no HMAC key"
    message(f"run task {view['name']} {what}: {view['url']} ({key}, timeout {view['timeout']})")


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Run task name."),
    url: str = typer.Option(..., "--url", help="The service's URL (it receives the POST requests)."),
    hmac_key_file: str = typer.Option(None, "--hmac-key-file", help="File holding the HMAC key (signs requests)."),
    description: str = typer.Option(None, "--description", help="What it checks (for people)."),
    timeout: str = typer.Option(None, "--timeout", help="How long a result may take (default 10m)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create a run task. A verification request is sent first; it must be answered 200."""
    from iacctl.services import runtasks

    view = runtasks.create(app_of(ctx), name, url, key_file=hmac_key_file, description=description,
                           timeout=timeout)
    _say_run_task(view, "created", as_json)


@app.command("update")
def update(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Run task name."),
    url: str = typer.Option(None, "--url", help="A new URL for the service (verified first)."),
    hmac_key_file: str = typer.Option(None, "--hmac-key-file", help="File holding a new HMAC key (signs requests)."),
    no_hmac_key: bool = typer.Option(False, "--no-hmac-key", help="Send requests unsigned from now on."),
    description: str = typer.Option(None, "--description", help="What it checks (for people)."),
    timeout: str = typer.Option(None, "--timeout", help="How long a result may take (e.g. 10m)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Change a run task. A new URL or key is verified (200) before it is saved."""
    from iacctl.services import runtasks

    view = runtasks.update(app_of(ctx), name, url=url, key_file=hmac_key_file, no_key=no_hmac_key,
                           description=description, timeout=timeout)
    _say_run_task(view, "updated", as_json)


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List run tasks and where they are attached."""
    from iacctl.services import runtasks

    views = runtasks.list_run_tasks(app_of(ctx))
    if as_json:
        print_json(views)
        return
    table(["name", "url", "hmac_key", "timeout", "attached"],
          [[v["name"], v["url"], "yes" if v["hmac_key"] else "no", v["timeout"],
            ", ".join(f"{a['workspace']}@{a['stage']}({a['enforcement']})" for a in v["attachments"])]
           for v in views],
          empty="no run tasks: iacctl runtask create NAME --url URL adds one")


@app.command("show")
def show(ctx: typer.Context, name: str = typer.Argument(..., help="Run task name."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show a run task."""
    from iacctl.services import runtasks

    view = runtasks.show(app_of(ctx), name)
    if as_json:
        print_json(view)
        return
    for k, v in view.items():
        if k != "attachments":
            message(f"{k}: {v}")
    for a in view["attachments"]:
        message(f"attached: {a['workspace']} at {a['stage']} ({a['enforcement']})")


@app.command("delete")
def delete(ctx: typer.Context, name: str = typer.Argument(..., help="Run task name.")) -> None:
    """Delete a run task and its attachments (past results stay)."""
    from iacctl.services import runtasks

    runtasks.delete(app_of(ctx), name)
    message(f"run task {name} deleted")


@app.command("attach")
def attach(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Run task name."),
    workspace: str = typer.Argument(..., help="Workspace name."),
    stage: str = typer.Option("post_plan", "--stage", help="pre_plan, post_plan, pre_apply or post_apply."),
    enforcement: str = typer.Option("advisory", "--enforcement", help="advisory or mandatory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Attach a run task to a workspace at a stage (attaching again changes stage and enforcement)."""
    from iacctl.services import runtasks

    view = runtasks.attach(app_of(ctx), name, workspace, stage=stage, enforcement=enforcement)
    if as_json:
        print_json(view)
    else:
        message(f"run task {name} attached to {workspace} at {stage} ({enforcement})")


@app.command("detach")
def detach(ctx: typer.Context, name: str = typer.Argument(..., help="Run task name."),
           workspace: str = typer.Argument(..., help="Workspace name.")) -> None:
    """Detach a run task from a workspace."""
    from iacctl.services import runtasks

    runtasks.detach(app_of(ctx), name, workspace)
    message(f"run task {name} detached from {workspace}")


@app.command("results")
def results(ctx: typer.Context, task_id: int = typer.Argument(..., callback=in_id_range, help="Task id."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The run-task results of a task: status, message, url and outcomes per run task and stage."""
    from iacctl.services import runtasks

    views = runtasks.results(app_of(ctx), task_id)
    if as_json:
        print_json(views)
        return
    table(["id", "stage", "run_task", "enforcement", "status", "message", "url"],
          [[v["id"], v["stage"], v["run_task"], v["enforcement"], v["status"], v["message"] or "", v["url"] or ""]
           for v in views],
          empty=f"task {task_id} has no run-task results")
    for v in views:
        for o in v["outcomes"]:
            message(f"  result {v['id']} outcome {o['outcome_id'] or '-'}: {o['description'] or ''}".rstrip())


@app.command("serve")
def serve(
    ctx: typer.Context,
    listen: str = typer.Option("127.0.0.1:8800", "--listen", help="HOST:PORT to listen on."),
    public_url: str = typer.Option(None, "--public-url",
                                   help="The URL services call back to (default: http://HOST:PORT)."),
) -> None:
    """Serve the run-task callback API. Tasks waiting on run tasks send services here."""
    from iacctl.services import runtasks

    stop = threading.Event()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)

    def ready(listening: str, public: str) -> None:
        message(f"run-task callback server listening on {listening}; public URL {public}")

    runtasks.serve(app_of(ctx), listen, public_url, ready, stop)
    message("run-task callback server stopped")
