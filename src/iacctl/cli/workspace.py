"""`iacctl workspace ...`: create, list, show, set, lock, unlock, var (SPEC C1, E9, L5)."""

from __future__ import annotations

import getpass
import sys
from typing import Any

import typer

from iacctl.cli.context import app_of
from iacctl.cli.render import WIDE, message, print_json, table
from iacctl.errors import UsageError

app = typer.Typer(help="Workspaces: a named Terraform configuration with variables, state and lock.",
                  no_args_is_help=True)
var_app = typer.Typer(help="Workspace variables (Terraform and environment).", no_args_is_help=True)
app.add_typer(var_app, name="var")
trigger_app = typer.Typer(help="Run triggers: an apply of a source workspace queues a plan of this one.",
                          no_args_is_help=True)
app.add_typer(trigger_app, name="trigger")

JSON = typer.Option(False, "--json", help="Print JSON.")


def _lock_text(lock: dict[str, Any] | None) -> str:
    if lock is None:
        return "unlocked"
    return f"locked by {lock['holder']}: {lock['reason']}"


def _binary_text(view: dict[str, Any]) -> str:
    if view["terraform_version"]:
        return f"version {view['terraform_version']} (downloaded and cached)"
    return view["terraform"] or "terraform on PATH"


def _state_text(state: dict[str, Any] | None) -> str:
    return "none" if state is None else f"version {state['id']} (serial {state['serial']})"


def triggers_text(triggers: dict[str, Any]) -> str:
    """F4: which workspaces' applies queue a plan of this one, and which this one's applies queue."""
    parts = []
    if triggers["follows"]:
        parts.append("follows " + ", ".join(
            t["workspace"] + (" (only if it changed something)" if t["only_if_changed"] else "")
            for t in triggers["follows"]))
    if triggers["followed_by"]:
        parts.append("its applies queue plans of " + ", ".join(triggers["followed_by"]))
    return "; ".join(parts)


def drift_text(drift: dict[str, Any]) -> str:
    """F5: the last drift check in one line."""
    if not drift["checked"]:
        return "never checked (iacctl drift check NAME)"
    if drift["cleared_at"]:
        return f"cleared by the apply of task {drift['cleared_by_task']} at {drift['cleared_at']}"
    if not drift["drifted"]:
        return f"none at {drift['checked_at']} (task {drift['task']})"
    addresses = ", ".join(r["address"] for r in drift["resources"][:5])
    more = f" and {len(drift['resources']) - 5} more" if len(drift["resources"]) > 5 else ""
    return (f"{len(drift['resources'])} drifted resource(s) at {drift['checked_at']} (task {drift['task']}): "
            f"{addresses}{more}")


def _show(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(view)
        return
    state = view["state_version"]
    message(f"workspace {view['name']}\n  directory: {view['directory']}\n  pool: {view['pool']}\n"
            f"  terraform: {_binary_text(view)}\n  plan lifetime: {view['plan_lifetime']}\n"
            f"  lock: {_lock_text(view['lock'])}\n"
            f"  state: {_state_text(state)}\n"
            f"  drift: {drift_text(view['drift'])}")
    triggers = view.get("triggers")
    if triggers and (triggers["follows"] or triggers["followed_by"]):
        message(f"  run triggers: {triggers_text(triggers)}")
    for var in view.get("variables", []):
        shown = "(sensitive)" if var["sensitive"] else var["value"]
        message(f"  {var['category']} variable {var['key']} = {shown}")


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Workspace name."),
    directory: str = typer.Option(..., "--dir", help="The Terraform configuration directory."),
    pool: str = typer.Option("local", "--pool", help="Pool whose slots run its tasks."),
    terraform: str = typer.Option(None, "--terraform", help="Terraform or OpenTofu binary (name or path)."),
    terraform_version: str = typer.Option(
        None, "--terraform-version", help="A release to download, verify and cache (e.g. 1.11.4)."
    ),
    plan_lifetime: str = typer.Option(
        None, "--plan-lifetime", help="How long a plan may wait for confirmation (e.g. 24h)."
    ),
    as_json: bool = JSON,
) -> None:
    """Create a workspace."""
    from iacctl.services import workspaces

    view = workspaces.create(app_of(ctx), name, directory, pool=pool, terraform=terraform,
                             terraform_version=terraform_version, plan_lifetime=plan_lifetime)
    if as_json:
        print_json(view)
    else:
        message(f"workspace {name} created ({view['directory']})")


@app.command("set")
def set_(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Workspace name."),
    directory: str = typer.Option(None, "--dir", help="A new Terraform configuration directory."),
    terraform: str = typer.Option(None, "--terraform", help="Terraform or OpenTofu binary (name or path); drops "
                                  "--terraform-version."),
    terraform_version: str = typer.Option(None, "--terraform-version", help="A release to download, verify and "
                                          "cache (e.g. 1.11.4); drops --terraform."),
    plan_lifetime: str = typer.Option(None, "--plan-lifetime", help="How long a plan may wait for confirmation "
                                      "(e.g. 24h)."),
    as_json: bool = JSON,
) -> None:
    """Change a workspace's settings."""
    from iacctl.services import workspaces

    _show(workspaces.update(app_of(ctx), name, directory=directory, terraform=terraform,
                            terraform_version=terraform_version, plan_lifetime=plan_lifetime), as_json)


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JSON, wide: bool = WIDE) -> None:
    """List workspaces."""
    from iacctl.services import workspaces

    views = workspaces.list_all(app_of(ctx))
    if as_json:
        print_json(views)
        return
    table(["name", "pool", "lock", "state", "directory"],
          [[v["name"], v["pool"], _lock_text(v["lock"]),
            v["state_version"]["serial"] if v["state_version"] else "-", v["directory"]] for v in views],
          empty="no workspaces yet: iacctl workspace create NAME --dir DIR",
          fold=("lock", "directory"), optional=("directory", "state", "pool"), wide=wide)


@app.command("show")
def show(ctx: typer.Context, name: str = typer.Argument(..., help="Workspace name."), as_json: bool = JSON) -> None:
    """Show a workspace, its lock and its variables (sensitive values hidden)."""
    from iacctl.services import workspaces

    _show(workspaces.show(app_of(ctx), name), as_json)


@app.command("delete")
def delete(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Workspace name."),
    force: bool = typer.Option(False, "--force", help="Also when it has state versions or a lock."),
    as_json: bool = JSON,
) -> None:
    """Delete a workspace and everything recorded of it (tasks, logs, plans, state versions).
    Refused while a task of it is pending, running or waiting for confirmation."""
    from iacctl.services import workspaces

    view = workspaces.delete(app_of(ctx), name, force=force)
    if as_json:
        print_json(view)
    else:
        message(f"workspace {name} deleted ({view['tasks']} task(s) with it)")


@app.command("lock")
def lock(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Workspace name."),
    reason: str = typer.Option("locked by an operator", "--reason", help="Why (shown with the lock)."),
    as_json: bool = JSON,
) -> None:
    """Lock a workspace: its plan-and-apply tasks wait until it is unlocked."""
    from iacctl.services import workspaces

    view = workspaces.lock(app_of(ctx), name, reason, f"user {getpass.getuser()}")
    if as_json:
        print_json(view)
    else:
        message(f"workspace {name} locked")


@app.command("unlock")
def unlock(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Workspace name."),
    force: bool = typer.Option(False, "--force", help="Also take the lock from a task: one waiting for "
                               "confirmation is cancelled; a running one only when its process is gone."),
    text: str = typer.Option(None, "--message", "-m", metavar="TEXT",
                             help="Why: recorded with who unlocked (tasks show of the task that held the lock)."),
    as_json: bool = JSON,
) -> None:
    """Unlock a workspace. Says which task it ended, if it took the lock from one."""
    from iacctl.services import workspaces

    view = workspaces.unlock(app_of(ctx), name, force=force, message=text)
    if as_json:
        print_json(view)
        return
    ended = view["ended_task"]
    if ended is None:
        message(f"workspace {name} unlocked")
    else:
        # Issue 21: a forced unlock says what it did to the task that held the lock.
        message(f"workspace {name} unlocked; task {ended['task']} ({ended['was']}) is now {ended['now']}")


@var_app.command("set")
def var_set(
    ctx: typer.Context,
    workspace: str = typer.Argument(..., help="Workspace name."),
    key: str = typer.Argument(..., help="Variable name."),
    value: str = typer.Argument(None, help="The value; '-' reads it from standard input; omitted, it is asked "
                                "for on a terminal (without echo)."),
    sensitive: bool = typer.Option(False, "--sensitive", help="Encrypt it and never show it."),
    env: bool = typer.Option(False, "--env", help="An environment variable, not a Terraform one."),
    hcl: bool = typer.Option(False, "--hcl", help="The value is an HCL expression (lists, maps); checked with "
                             "Terraform's parser."),
    allow_empty: bool = typer.Option(False, "--allow-empty", help="Accept an empty sensitive value (refused "
                                     "otherwise: it is nearly always an unset shell variable)."),
    as_json: bool = JSON,
) -> None:
    """Set a variable (TF_VAR_KEY for Terraform variables). Values are at most 64 KiB each and
    1 MiB for a workspace together (they reach Terraform as environment variables)."""
    from iacctl.services import workspaces

    if value is None and not sys.stdin.isatty():
        # X4: a script that forgot the value must not store whatever its stdin holds (or "").
        raise UsageError(f"no value given for {key}: give it as an argument, or '-' to read it from standard input")
    if value is None or value == "-":
        if sys.stdin.isatty():
            value = getpass.getpass(f"value of {key}: ")
        else:
            value = sys.stdin.read().rstrip("\n")
    if value is None:
        raise UsageError("no value given")
    view = workspaces.set_variable(app_of(ctx), workspace, key, value, sensitive=sensitive, env=env, hcl=hcl,
                                   allow_empty=allow_empty)
    if as_json:
        print_json(view)
    else:
        message(f"{view['category']} variable {key} set on {workspace}" + (" (sensitive)" if sensitive else ""))


@var_app.command("unset")
def var_unset(
    ctx: typer.Context,
    workspace: str = typer.Argument(..., help="Workspace name."),
    key: str = typer.Argument(..., help="Variable name."),
    env: bool = typer.Option(False, "--env", help="An environment variable, not a Terraform one."),
) -> None:
    """Remove a variable."""
    from iacctl.services import workspaces

    workspaces.unset_variable(app_of(ctx), workspace, key, env=env)
    message(f"variable {key} removed from {workspace}")


@var_app.command("list")
def var_list(ctx: typer.Context, workspace: str = typer.Argument(..., help="Workspace name."),
             as_json: bool = JSON) -> None:
    """List variables (sensitive values are never shown)."""
    from iacctl.services import workspaces

    views = workspaces.list_variables(app_of(ctx), workspace)
    if as_json:
        print_json(views)
        return
    table(["key", "category", "value"],
          [[v["key"], v["category"], "(sensitive)" if v["sensitive"] else v["value"]] for v in views],
          empty=f"workspace {workspace} has no variables: iacctl workspace var set {workspace} KEY VALUE")


@trigger_app.command("add")
def trigger_add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The workspace that follows."),
    source: str = typer.Option(..., "--source", help="The workspace whose applies queue a plan of NAME."),
    only_if_changed: bool = typer.Option(False, "--only-if-changed", help="Only after an apply that changed "
                                         "resources or outputs."),
    as_json: bool = JSON,
) -> None:
    """Make NAME follow SOURCE: each apply of SOURCE queues a plan of NAME, which waits for
    confirm-apply. At most 20 sources; a trigger that would close a loop is refused (exit 5)."""
    from iacctl.services import triggers

    view = triggers.add(app_of(ctx), name, source, only_if_changed=only_if_changed)
    if as_json:
        print_json(view)
        return
    when = " that change resources or outputs" if view["only_if_changed"] else ""
    message(f"workspace {name} follows {source}: its applies{when} queue a plan of {name}"
            + ("" if view["added"] else " (it already did)"))


@trigger_app.command("list")
def trigger_list(ctx: typer.Context, name: str = typer.Argument(..., help="Workspace name."),
                 as_json: bool = JSON) -> None:
    """The workspaces NAME follows."""
    from iacctl.services import triggers

    views = triggers.list_sources(app_of(ctx), name)
    if as_json:
        print_json(views)
        return
    table(["source", "only if changed", "created", "by"],
          [[v["source"], "yes" if v["only_if_changed"] else "no", v["created_at"], v["created_by"] or ""]
           for v in views],
          empty=f"workspace {name} follows no workspace: iacctl workspace trigger add {name} --source WORKSPACE")


@trigger_app.command("remove")
def trigger_remove(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Workspace name."),
    source: str = typer.Option(..., "--source", help="The workspace it is to stop following."),
    as_json: bool = JSON,
) -> None:
    """Make NAME stop following SOURCE."""
    from iacctl.services import triggers

    view = triggers.remove(app_of(ctx), name, source)
    if as_json:
        print_json(view)
    else:
        message(f"workspace {name} no longer follows {source}")
