"""Workspaces, their variables and their lock (SPEC C1, E9, L5)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select

from iacctl.domain.actors import actor_view
from iacctl.domain.admission import plan_lifetime
from iacctl.domain.durations import format_duration, parse_duration
from iacctl.domain.lifecycle import Status
from iacctl.domain.masking import is_former_secret
from iacctl.domain.names import check_name, check_variable_name, shown_name
from iacctl.domain.variables import check_value, hcl_probes
from iacctl.errors import Refused, UsageError
from iacctl.services.app import LOCAL_POOL, App, current_actor
from iacctl.services.views import drift_view, iso
from iacctl.store import repo
from iacctl.store.models import Pod, Task, Variable, Workspace


def _source_dir(directory: str) -> str:
    path = Path(directory).expanduser()
    if not path.exists():
        raise UsageError(f"directory {directory} does not exist")
    if not path.is_dir():
        raise UsageError(f"{directory} is not a directory")
    try:
        next(iter(path.iterdir()), None)
    except PermissionError:
        raise UsageError(f"directory {directory} cannot be read") from None
    return str(path.resolve())


def _binary_settings(terraform: str | None, version: str | None) -> tuple[str | None, str | None]:
    """E10: a binary (name or path) or a version to download, not both."""
    if terraform and version:
        raise UsageError("give --terraform (a binary) or --terraform-version (a release), not both")
    # Issue 20: the executor is imported by the commands that change a workspace, not by a listing.
    from iacctl.executor.binaries import check_version
    from iacctl.executor.terraform import check_binary_setting

    return (check_binary_setting(terraform) if terraform else None,
            check_version(version) if version else None)


def create(app: App, name: str, directory: str, *, pool: str = LOCAL_POOL,
           terraform: str | None = None, terraform_version: str | None = None,
           plan_lifetime: str | None = None) -> dict[str, Any]:
    check_name("workspace", name)
    source = _source_dir(directory)
    binary, version = _binary_settings(terraform, terraform_version)
    lifetime = parse_duration(plan_lifetime) if plan_lifetime else None
    try:
        with app.store.write() as session:
            # Issue 21: unique regardless of case (`Net` beside `net` is a typo waiting to apply
            # to the wrong one); stores that already hold such a pair keep both.
            clash = session.exec(select(Workspace).where(func.lower(Workspace.name) == name.lower())).first()
            if clash is not None:
                same = "" if clash.name == name else f" as {clash.name!r} (names are unique regardless of case)"
                raise UsageError(f"workspace {name!r} already exists{same}")
            pool_row = repo.get_pool(session, pool)
            session.add(Workspace(name=name, source_dir=source, pool_id=pool_row.id or 0,
                                  terraform_bin=binary, terraform_version=version,
                                  plan_lifetime_s=lifetime, created_at=repo.now()))
    except IntegrityError:
        raise UsageError(f"workspace {name!r} already exists") from None
    return show(app, name)


def update(app: App, name: str, *, directory: str | None, terraform: str | None,
           terraform_version: str | None = None, plan_lifetime: str | None) -> dict[str, Any]:
    source = _source_dir(directory) if directory else None
    binary, version = _binary_settings(terraform, terraform_version)
    lifetime = parse_duration(plan_lifetime) if plan_lifetime else None
    with app.store.write() as session:
        ws = repo.get_workspace(session, name)
        if source:
            ws.source_dir = source
        # Choosing one way to find the binary drops the other.
        if binary:
            ws.terraform_bin, ws.terraform_version = binary, None
        if version:
            ws.terraform_bin, ws.terraform_version = None, version
        if lifetime:
            ws.plan_lifetime_s = lifetime
        session.add(ws)
    return show(app, name)


def _lock_view(ws: Workspace) -> dict[str, Any] | None:
    if ws.lock_holder is None and ws.locked_by_task_id is None:
        return None
    return {"holder": ws.lock_holder, "task": ws.locked_by_task_id, "reason": ws.lock_reason,
            "locked_at": iso(ws.locked_at)}


def _view(ws: Workspace, pool: str | None, pool_lifetime: float | None,
          latest: tuple[int, int, bool, float] | None, drift: Any) -> dict[str, Any]:
    """A workspace as `workspace show/list` give it, from one row of repo.workspaces_with_facts."""
    lifetime = plan_lifetime(ws.plan_lifetime_s, pool_lifetime)
    return {
        "name": ws.name,
        "directory": ws.source_dir,
        "pool": pool,
        "terraform": ws.terraform_bin,
        "terraform_version": ws.terraform_version,
        "plan_lifetime": format_duration(lifetime),
        "lock": _lock_view(ws),
        "state_version": (
            {"id": latest[0], "serial": latest[1], "partial": latest[2],
             "created_at": iso(latest[3])} if latest else None
        ),
        "created_at": iso(ws.created_at),
        # F5: the last drift check (iacctl drift show NAME for the resources and attributes).
        "drift": drift_view(drift),
    }


def show(app: App, name: str) -> dict[str, Any]:
    # Issue 23: the workspace with its facts, its variables, its triggers: three statements.
    with app.store.read() as session:
        rows = repo.workspaces_with_facts(session, name)
        if not rows:
            repo.get_workspace(session, name)  # raises NotFound, with a did-you-mean
        ws = rows[0][0]
        view = _view(*rows[0])
        view["variables"] = [_var_view(v) for v in repo.variables_of(session, ws.id or 0)]
        # F4: what its applies set off and what sets it off, beside its lock and drift.
        follows, followed_by = repo.triggers_around(session, ws.id or 0)
        view["triggers"] = {
            "follows": [{"workspace": source, "only_if_changed": flag} for source, flag in follows],
            "followed_by": followed_by,
        }
        return view


def list_all(app: App) -> list[dict[str, Any]]:
    with app.store.read() as session:
        return [_view(*row) for row in repo.workspaces_with_facts(session)]


def lock(app: App, name: str, reason: str, holder: str) -> dict[str, Any]:
    with app.store.write() as session:
        ws = repo.get_workspace(session, name)
        if not repo.lock_workspace(session, ws.id or 0, task_id=None, holder=holder, reason=reason):
            raise Refused(f"workspace {name} is already locked by {ws.lock_holder}: {ws.lock_reason}")
    return show(app, name)


def unlock(app: App, name: str, *, force: bool, message: str | None = None) -> dict[str, Any]:
    """L5: remove the workspace lock. Held by a task, only with --force, and then for real: a
    task waiting for confirmation is cancelled with it (a task left apply_pending without its
    lock would block the workspace forever); a running task's lock is refused while its process
    lives, and when the process is gone the task is ended as the sweep ends it. Issue 21: the
    view says which task the unlock ended (`ended_task`), and who unlocked, with their message."""
    actor = current_actor(message)
    from iacctl.services import ending, queue  # issue 20: only unlocking ends tasks and starts the queue

    by = actor.said()
    ended: dict[str, Any] | None = None
    with app.store.read() as session:
        ws = repo.get_workspace(session, name)
        holder = session.get(Task, ws.locked_by_task_id) if ws.locked_by_task_id is not None else None
    if ws.lock_holder is None and ws.locked_by_task_id is None:
        raise Refused(f"workspace {name} is not locked")
    if holder is not None and holder.status in (Status.RUNNING, Status.APPLY_PENDING) and not force:
        raise Refused(
            f"workspace {name} is locked by task {holder.id}, which is {holder.status}; "
            f"cancel it (iacctl cancel {holder.id}) or unlock with --force"
        )
    if holder is not None and holder.status == Status.RUNNING:
        if not ending.runner_gone(holder):
            raise Refused(
                f"workspace {name} is locked by task {holder.id}, which is running (stage {holder.stage}) in "
                f"process {holder.runner_pid} on {holder.runner_host}; cancel it (iacctl cancel {holder.id}) "
                "instead: removing the lock under a running Terraform would let another apply start beside it"
            )
        final = ending.end_abandoned(app, holder.id or 0, f"lock removed with --force by {by}; its process was gone")
        if final == Status.RUNNING:
            # Issue 18 item 3: its runner is dead but Terraform still applies in the pod; the
            # lock is what keeps another apply from starting beside it.
            raise Refused(
                f"workspace {name} is locked by task {holder.id}, whose runner is gone but whose Terraform still "
                f"applies in its pod; cancel it (iacctl cancel {holder.id}) or wait for it to end"
            )
        ended = {"task": holder.id, "was": str(Status.RUNNING), "now": str(final)}
    elif holder is not None and holder.status == Status.APPLY_PENDING:
        final = ending.end_waiting(app, holder.id or 0, Status.CANCELLED, f"lock removed with --force by {by}",
                                   by=actor)
        ended = {"task": holder.id, "was": str(Status.APPLY_PENDING), "now": str(final)}
    with app.store.write() as session:
        ws = repo.get_workspace(session, name)
        # A failed task may keep its lock on purpose (a pod lost mid-apply; E8): the operator
        # has looked, and says so by unlocking.
        repo.unlock_workspace(session, ws.id or 0)
        if ws.locked_by_task_id is not None:
            repo.add_event(session, ws.locked_by_task_id, "note", None, None,
                           f"workspace {name} unlocked by {by}")
    # Unlocking frees the workspace's turn: start what was queued behind the lock (task 6).
    queue.kick_queue(app)
    view = show(app, name)
    view["ended_task"] = ended
    view["unlocked_by"] = actor_view(actor.to_json())
    return view


def delete(app: App, name: str, *, force: bool) -> dict[str, Any]:
    """Issue 9: remove a workspace and everything recorded of it. Refused (nothing changed)
    while a task of it is pending, running or waiting for confirmation; a workspace with state
    versions or a lock goes only with --force, as its state is the record of real
    infrastructure. Leaves no orphan rows and no kept work directories."""
    with app.store.read() as session:
        ws = repo.get_workspace(session, name)
        live = session.exec(
            select(Task).where(Task.workspace_id == ws.id,
                               col(Task.status).in_([Status.PENDING, Status.RUNNING, Status.APPLY_PENDING]))
            .order_by(col(Task.id))
        ).all()
        versions = repo.latest_state_version_id(session, ws.id or 0)
    if live:
        ids = ", ".join(f"{t.id} ({t.status})" for t in live)
        raise Refused(f"workspace {name} has tasks that are not over: {ids}; cancel them first "
                      f"(iacctl cancel {live[0].id})")
    if versions is not None and not force:
        raise Refused(f"workspace {name} has state versions (the record of what Terraform manages); "
                      f"delete it anyway with --force (iacctl state pull {name} keeps a copy)")
    if (ws.lock_holder is not None or ws.locked_by_task_id is not None) and not force:
        raise Refused(f"workspace {name} is locked by {ws.lock_holder}: {ws.lock_reason}; unlock it first, "
                      "or delete it with --force")
    with app.store.write() as session:
        ws = repo.get_workspace(session, name)
        pools = {t.id: t.pool_id for t in session.exec(select(Task).where(Task.workspace_id == ws.id)).all()}
        pods = {t.id: t.pod_id for t in session.exec(select(Task).where(Task.workspace_id == ws.id)).all()}
        pod_names = {p.id: p.name for p in session.exec(select(Pod)).all()}
        task_ids = repo.delete_workspace(session, ws.id or 0)
    # Work directories kept for an operator (issue 13) go with the tasks they were kept for.
    for task_id in task_ids:
        with contextlib.suppress(Exception):
            runtime = app.runtime_for_pool_id(pools.get(task_id) or ws.pool_id)
            runtime.remove_kept_dir(pod_names.get(pods.get(task_id) or 0, ""), task_id)
        from iacctl.executor.termination import kept_state_path

        kept_state_path(app.settings.work_root, task_id).unlink(missing_ok=True)
    return {"name": name, "deleted": True, "tasks": len(task_ids)}


# -- variables (E9) -------------------------------------------------------------------------------


def _var_view(var: Variable) -> dict[str, Any]:
    # X2: a sensitive value is never shown, not even in --json.
    return {"key": var.key, "category": var.category, "sensitive": var.sensitive, "hcl": var.hcl,
            "value": None if var.sensitive else var.value}


def _check_hcl(ws: Workspace, key: str, value: str) -> None:
    """Issue 21: an --hcl value is one HCL expression, read by Terraform's own parser at `var set`
    rather than at the next plan. The workspace's binary (or a cached release of its version)
    parses it; nothing is downloaded for it."""
    from iacctl.executor.binaries import cached_binary
    from iacctl.executor.terraform import find_binary
    from iacctl.runtimes.local import hcl_syntax_error

    binary: str | None = None
    if ws.terraform_version and cached_binary(ws.terraform_version).is_file():
        binary = str(cached_binary(ws.terraform_version))
    else:
        with contextlib.suppress(Exception):
            binary = find_binary(ws.terraform_bin)
    if binary is None:
        raise UsageError(f"cannot check the HCL value of {shown_name(key)}: workspace {ws.name}'s Terraform binary "
                         "is not here yet (plan once, or set it without --hcl)")
    error = hcl_syntax_error(binary, hcl_probes(value))
    if error is not None:
        raise UsageError(f"the value of {shown_name(key)} is not an HCL expression ({error}); "
                         "quote strings inside it, or set it without --hcl")


def set_variable(app: App, name: str, key: str, value: str, *, sensitive: bool, env: bool,
                 hcl: bool, allow_empty: bool = False) -> dict[str, Any]:
    check_variable_name(key, env=env)
    category = "env" if env else "terraform"
    with app.store.read() as session:
        ws, variables = repo.workspace_and_variables(session, name)  # one statement (issue 23)
    others = [v for v in variables if (v.category, v.key) != (category, key)]
    # Sizes of the others as they reach Terraform (a sensitive one's ciphertext is larger: fine).
    sizes = [len((v.value or "").encode()) + (len(v.value_secret) if v.value_secret else 0) for v in others]
    check_value(key, value, sensitive=sensitive, allow_empty=allow_empty, others=sizes)
    if hcl:
        _check_hcl(ws, key, value)
    blob = app.store.cipher.encrypt_text(value) if sensitive else None
    seen = next((v for v in variables if (v.category, v.key) == (category, key)), None)
    if seen is None or not _replaces_a_secret(app, seen, value, sensitive):
        # Issue 23: the common case is one statement, written only if the variable is still as
        # read (else another process changed it meanwhile, and the transaction below decides).
        try:
            with app.store.write_alone() as session:
                put = repo.put_variable_if_unchanged(session, ws.id or 0, category, key, seen, value=value,
                                                     sensitive=sensitive, hcl=hcl, value_secret=blob)
        except IntegrityError:
            put = None  # created by another process between our read and our insert
        if put is not None:
            return _var_view(put)
    with app.store.write() as session:
        ws = repo.get_workspace(session, name)
        var = repo.find_variable(session, ws.id or 0, category, key)
        if var is None:
            var = Variable(workspace_id=ws.id or 0, key=key, category=category, updated_at=repo.now())
        else:
            # Issue 24 item 4: a secret it replaces stays masked in what later tasks show.
            repo.remember_former_secret(session, app.store.cipher, var, value, sensitive)
        var.sensitive, var.hcl, var.updated_at = sensitive, hcl, repo.now()
        var.value = None if sensitive else value
        var.value_secret = blob
        session.add(var)
        session.flush()
        return _var_view(var)


def _replaces_a_secret(app: App, var: Variable, value: str, sensitive: bool) -> bool:
    """Issue 24 item 4: whether setting `value` replaces a secret that must be remembered."""
    if var.value_secret is None:
        return False
    return is_former_secret(var.sensitive, app.store.cipher.decrypt_text(var.value_secret), value, sensitive)


def unset_variable(app: App, name: str, key: str, *, env: bool) -> None:
    category = "env" if env else "terraform"
    with app.store.write() as session:
        ws = repo.get_workspace(session, name)
        var = repo.find_variable(session, ws.id or 0, category, key)
        if var is None:
            raise UsageError(f"workspace {name} has no {category} variable {key!r}")
        repo.remember_former_secret(session, app.store.cipher, var, None, False)  # issue 24 item 4
        session.delete(var)


def list_variables(app: App, name: str) -> list[dict[str, Any]]:
    with app.store.read() as session:
        ws = repo.get_workspace(session, name)
        return [_var_view(v) for v in repo.variables_of(session, ws.id or 0)]
