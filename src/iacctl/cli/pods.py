"""`iacctl pods ...` (list, reconcile, recover) and `iacctl pool ...` (SPEC S1-S3, S8)."""

from __future__ import annotations

import typer

from iacctl.cli.context import app_of
from iacctl.cli.render import message, print_json, table

app = typer.Typer(help="Pods and their slots; the recovery sweep.", no_args_is_help=True)
pool_app = typer.Typer(help="Pools: where tasks execute.", no_args_is_help=True)


@app.command("list")
def list_(ctx: typer.Context, pool: str = typer.Option(None, "--pool"),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """List pods with their slots: idle, running (task) or reserved (task)."""
    from iacctl.services import pods

    views = pods.list_pods(app_of(ctx), pool)
    if as_json:
        print_json(views)
        return
    rows = []
    for p in views:
        slots = ", ".join(f"{s['index']}:{s['state']}" + (f"(task {s['task']})" if s["task"] else "")
                          for s in p["slots"])
        rows.append([p["pool"], p["name"], p["status"], slots])
    table(["pool", "pod", "status", "slots"], rows, empty="no pods")


@app.command("reconcile")
def reconcile(ctx: typer.Context, pool: str = typer.Option(None, "--pool"),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Bring pods and slots to the pool's settings; prints what changed."""
    from iacctl.services import pods

    changes = pods.reconcile(app_of(ctx), pool)
    if as_json:
        print_json(changes)
        return
    for c in changes:
        message(f"{c['pool']}/{c['pod']}: slot {c['slot']} {c['change']}")
    if not changes:
        message("nothing to change")


@app.command("recover")
def recover(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """The recovery sweep: end tasks whose process is gone, free leaked slots and locks, re-plan
    lost plan contexts, start queued tasks nobody waits for. Safe from cron."""
    from iacctl.services import recovery

    actions = [a.as_dict() for a in recovery.recover(app_of(ctx))]
    if as_json:
        print_json(actions)
        return
    for a in actions:
        who = f"task {a['task']}" if a["task"] else (a["workspace"] or a["slot"] or "")
        message(f"{a['action']}: {who} {a['detail']}".strip())
    if not actions:
        message("nothing to recover")


@pool_app.command("list")
def pool_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """List pools."""
    from iacctl.services import pods

    views = pods.list_pools(app_of(ctx))
    if as_json:
        print_json(views)
        return
    table(["name", "backend", "slots_per_pod", "plan_lifetime"],
          [[v["name"], v["backend"], v["slots_per_pod"], v["plan_lifetime"]] for v in views])


@pool_app.command("show")
def pool_show(ctx: typer.Context, name: str = typer.Argument(...),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Show a pool's settings."""
    from iacctl.services import pods

    view = pods.show_pool(app_of(ctx), name)
    if as_json:
        print_json(view)
    else:
        for k, v in view.items():
            message(f"{k}: {v}")


@pool_app.command("set")
def pool_set(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    slots_per_pod: int = typer.Option(None, "--slots-per-pod"),
    plan_lifetime: str = typer.Option(None, "--plan-lifetime"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Change a pool's settings (slots per pod, plan lifetime)."""
    from iacctl.services import pods

    view = pods.set_pool(app_of(ctx), name, slots_per_pod=slots_per_pod, plan_lifetime=plan_lifetime)
    if as_json:
        print_json(view)
    else:
        message(f"pool {name}: {view['slots_per_pod']} slots per pod, plans live {view['plan_lifetime']}")
