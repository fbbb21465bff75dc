"""`iacctl pods ...` (list, reconcile, recover) and `iacctl pool ...` (SPEC S1-S3, S8)."""

from __future__ import annotations

import typer

from iacctl.cli.context import app_of, in_id_range
from iacctl.cli.render import WIDE, message, nothing_listed, print_json, table
from iacctl.errors import BackendRefused

app = typer.Typer(help="Pods and their slots; the recovery sweep.", no_args_is_help=True)
pool_app = typer.Typer(help="Pools: where tasks execute.", no_args_is_help=True)


@app.command("list")
def list_(ctx: typer.Context, pool: str = typer.Option(None, "--pool", help="Only this pool's pods."),
          as_json: bool = typer.Option(False, "--json", help="Print JSON."), wide: bool = WIDE) -> None:
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
        machine = p.get("machine") or ""
        rows.append([p["pool"], p["name"], p["status"], slots,
                     machine + (" (this machine)" if p.get("this_machine") else "")])
    table(["pool", "pod", "status", "slots", "machine"], rows,
          empty=nothing_listed("pods", [("--pool", pool)], "no pods: Kubernetes pools create them as tasks need "
                               "slots (iacctl pool create NAME --backend kubernetes)"), fold=("slots",), wide=wide)


@app.command("reconcile")
def reconcile(ctx: typer.Context, pool: str = typer.Option(None, "--pool", help="Only this pool (default: all)."),
              as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Scale Kubernetes pools to the pods their tasks need (running and reserved slots, within
    min and max pods; none in a freeze window) and bring slots to the pool's settings; prints
    what changed. Idempotent."""
    # S3: desired pods = ceil((running + reserved slots) / slots per pod), within [min, max].
    from iacctl.services import pods

    changes = pods.reconcile(app_of(ctx), pool)
    if as_json:
        print_json(changes)
    else:
        for c in changes:
            where = f"{c['pool']}/{c['pod']}" if c["pod"] else c["pool"]
            message(f"{where}: {c['change']}: {c['detail']}")
        if not changes:
            message("nothing to change")
    refused = next((c for c in changes if c["change"] == "refused"), None)
    if refused is not None:
        # Issue 10 item 6: a cluster that refuses the pool's pods is an error for cron too.
        raise BackendRefused(f"pool {refused['pool']}: {refused['detail']}")


@app.command("recover")
def recover(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The recovery sweep: end tasks whose process is gone, free leaked slots and locks, re-plan
    lost plan contexts, start queued tasks nobody waits for. Safe from cron."""
    from iacctl.services import recovery

    actions = [a.as_dict() for a in recovery.recover(app_of(ctx))]
    if as_json:
        print_json(actions)
        return
    for a in actions:
        who = f"task {a['task']}" if a["task"] else (a["workspace"] or a["slot"] or "")
        where = f" of workspace {a['workspace']}" if a["task"] and a["workspace"] else ""
        ended = f" -> {a['outcome']}" if a["outcome"] != "done" else ""
        message(f"{a['action']}: {who}{where} {a['detail']}{ended}".strip())
    if not actions:
        message("nothing to recover")


@pool_app.command("list")
def pool_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List pools."""
    from iacctl.services import pools

    views = pools.list_pools(app_of(ctx))
    if as_json:
        print_json(views)
        return
    table(["name", "backend", "slots_per_pod", "plan_lifetime"],
          [[v["name"], v["backend"], v["slots_per_pod"], v["plan_lifetime"]] for v in views])


@pool_app.command("create")
def pool_create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Pool name."),
    backend: str = typer.Option(..., "--backend", help="kubernetes"),
    namespace: str = typer.Option(None, "--namespace", help="Namespace of the pool's pods."),
    image: str = typer.Option(None, "--image", help="Runner image (terraform, sh, tar)."),
    slots_per_pod: int = typer.Option(3, "--slots-per-pod", help="Tasks one pod runs at once."),
    min_pods: int = typer.Option(0, "--min-pods", help="The fewest pods it keeps."),
    max_pods: int = typer.Option(10, "--max-pods", help="The most pods it scales up to."),
    context: str = typer.Option(None, "--context", help="kubeconfig context (default: current, or in-cluster)."),
    service_account: str = typer.Option(None, "--service-account", help="Service account of its pods."),
    work_root: str = typer.Option(None, "--work-root", help="Slots' directory inside the pod (/var/lib/iacctl)."),
    on_lost_context: str = typer.Option(
        "replan", "--on-lost-context", help="replan or warmup: what to do when a plan's pod is lost before its apply."
    ),
    scale_down_delay: str = typer.Option("15m", "--scale-down-delay",
                                         help="How long a pod stays idle before it is deleted."),
    warmup_lifetime: str = typer.Option(None, "--warmup-lifetime", help="How long a warm-up stays ready (30m)."),
    warmup_retries: int = typer.Option(None, "--warmup-retries", help="Warm-up attempts before re-planning (3)."),
    cpu: str = typer.Option(None, "--cpu", help="CPU request and limit of each pod (e.g. 500m)."),
    memory: str = typer.Option(None, "--memory", help="Memory request and limit of each pod (e.g. 1Gi)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create a Kubernetes pool: tasks of its workspaces run in its pods, slots-per-pod to a pod."""
    from iacctl.services import pools

    view = pools.create_pool(
        app_of(ctx), name, backend=backend, namespace=namespace, image=image, context=context,
        service_account=service_account, slots_per_pod=slots_per_pod, min_pods=min_pods, max_pods=max_pods,
        work_root=work_root, on_lost_context=on_lost_context, scale_down_delay=scale_down_delay,
        warmup_lifetime=warmup_lifetime, warmup_retries=warmup_retries, cpu=cpu, memory=memory,
    )
    if as_json:
        print_json(view)
    else:
        message(f"pool {name} created ({view['backend']}, namespace {view['namespace']}, "
                f"{view['slots_per_pod']} slots per pod, {view['min_pods']}-{view['max_pods']} pods)")


@pool_app.command("freeze")
def pool_freeze(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Pool name."),
    starts: str = typer.Option(..., "--from", help="Start, ISO date-time (UTC unless an offset is given)."),
    until: str = typer.Option(..., "--until", help="End, ISO date-time."),
    reason: str = typer.Option(None, "--reason", help="Why (shown with the window)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Add a freeze window: no task starts in the pool and its pods are deleted while it lasts."""
    from iacctl.services import pools

    window = pools.freeze(app_of(ctx), name, starts, until, reason)
    if as_json:
        print_json(window)
    else:
        message(f"pool {name} frozen from {window['from']} until {window['until']} (window {window['id']})")


@pool_app.command("unfreeze")
def pool_unfreeze(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Pool name."),
    window: int = typer.Option(None, "--window", callback=in_id_range,
                               help="Id of one window (default: all not yet over)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Remove freeze windows of a pool."""
    from iacctl.services import pools

    view = pools.unfreeze(app_of(ctx), name, window)
    if as_json:
        print_json(view)
    else:
        message(f"pool {name}: {len(view['freeze_windows'])} freeze window(s) left")


@pool_app.command("show")
def pool_show(ctx: typer.Context, name: str = typer.Argument(..., help="Pool name."),
              as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show a pool's settings."""
    from iacctl.services import pools

    view = pools.show_pool(app_of(ctx), name)
    if as_json:
        print_json(view)
        return
    for k, v in view.items():
        if k == "freeze_windows":
            for w in v:
                message(f"freeze window {w['id']}: {w['from']} until {w['until']}"
                        + (f" ({w['reason']})" if w["reason"] else ""))
        elif k == "resources":
            if v:
                message(f"resources: {v}")
        else:
            message(f"{k}: {'-' if v is None else v}")


@pool_app.command("set")
def pool_set(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Pool name."),
    slots_per_pod: int = typer.Option(None, "--slots-per-pod",
                                      help="Slots per pod (the local pool: how many tasks run at once on "
                                           "this machine)."),
    plan_lifetime: str = typer.Option(None, "--plan-lifetime",
                                      help="How long a plan may wait for confirmation (e.g. 24h)."),
    max_pods: int = typer.Option(None, "--max-pods", help="Kubernetes pools: the most pods it scales up to."),
    min_pods: int = typer.Option(None, "--min-pods", help="Kubernetes pools: the fewest pods it keeps."),
    context: str = typer.Option(None, "--context", help="Kubernetes pools: the kubeconfig context (checked)."),
    image: str = typer.Option(None, "--image", help="Kubernetes pools: the runner image of new pods."),
    namespace: str = typer.Option(None, "--namespace",
                                  help="Kubernetes pools: the namespace of its pods (only while it has none)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Change a pool's settings (slots per pod, plan lifetime, min and max pods, context, image, namespace)."""
    from iacctl.services import pods

    view = pods.set_pool(app_of(ctx), name, slots_per_pod=slots_per_pod, plan_lifetime=plan_lifetime,
                         max_pods=max_pods, min_pods=min_pods, context=context, image=image, namespace=namespace)
    if as_json:
        print_json(view)
    else:
        message(f"pool {name}: {view['slots_per_pod']} slots per pod, plans live {view['plan_lifetime']}")


@pool_app.command("delete")
def pool_delete(ctx: typer.Context, name: str = typer.Argument(..., help="Pool name."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Delete a pool. Refused while workspaces use it or it has pods."""
    from iacctl.services import pools

    view = pools.delete_pool(app_of(ctx), name)
    if as_json:
        print_json(view)
    else:
        message(f"pool {name} deleted")
