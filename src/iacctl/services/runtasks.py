"""Run tasks (SPEC R1-R8): what `iacctl runtask ...` means, and the stage hooks that run the
attached run tasks inside a task (wired by services/runs.py into the executor's StageHooks)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError

from iacctl.domain.durations import format_duration, parse_duration
from iacctl.domain.lifecycle import Stage
from iacctl.domain.names import check_name
from iacctl.errors import IacctlError, UsageError
from iacctl.executor.run import StageHooks, TaskRun
from iacctl.executor.termination import Cancelled
from iacctl.runtasks import client, protocol
from iacctl.runtasks.stage import Stopped, describe, run_stage
from iacctl.services.app import App
from iacctl.services.inputs import check_url, read_secret_file
from iacctl.services.views import iso
from iacctl.store import repo
from iacctl.store.models import RunTask, TaskResult, WorkspaceRunTask

MAX_TIMEOUT_S = 7 * 86400.0


class VerificationFailed(IacctlError):
    """R1: the run task's service did not answer the verification request with 200."""


# -- run tasks ------------------------------------------------------------------------------------


def _timeout(text: str | None) -> float | None:
    if text is None:
        return None
    seconds = parse_duration(text)
    if seconds > MAX_TIMEOUT_S:
        raise UsageError(f"--timeout {text} is over 7d")
    return seconds


def verify(url: str, key: bytes | None) -> None:
    """R1: the dummy, signed request; exactly 200 or the run task is not saved."""
    body = protocol.encode(protocol.verification_payload("https://iacctl.invalid"))
    try:
        client.deliver(url, body, protocol.sign(body, key), timeout_s=15.0)
    except client.DeliveryError as exc:
        raise VerificationFailed(f"verification request failed: {exc}; the run task was not saved") from None


def run_task_view(run_task: RunTask, attached: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "name": run_task.name,
        "url": run_task.url,
        "description": run_task.description,
        "hmac_key": run_task.hmac_key_secret is not None,  # X2: whether there is one, never the key
        "timeout": format_duration(run_task.timeout_s),
        "created_at": iso(run_task.created_at),
    }
    if attached is not None:
        view["attachments"] = attached
    return view


def create(app: App, name: str, url: str, *, key_file: str | None, description: str | None,
           timeout: str | None) -> dict[str, Any]:
    check_name("run task", name)
    check_url(url, "run task URL")
    key = read_secret_file(key_file, "HMAC key") if key_file else None
    seconds = _timeout(timeout) or 600.0
    with app.store.read() as session:
        if repo.find_run_task(session, name) is not None:
            raise UsageError(f"run task {name!r} already exists")
    verify(url, key)
    cipher = app.store.cipher
    try:
        with app.store.write() as session:
            t = repo.now()
            session.add(RunTask(name=name, url=url, description=description, timeout_s=seconds,
                                hmac_key_secret=cipher.encrypt(key) if key else None, created_at=t, updated_at=t))
    except IntegrityError:
        raise UsageError(f"run task {name!r} already exists") from None
    return show(app, name)


def update(app: App, name: str, *, url: str | None, key_file: str | None, no_key: bool,
           description: str | None, timeout: str | None) -> dict[str, Any]:
    if key_file and no_key:
        raise UsageError("give --hmac-key-file or --no-hmac-key, not both")
    if url is not None:
        check_url(url, "run task URL")
    new_key = read_secret_file(key_file, "HMAC key") if key_file else None
    seconds = _timeout(timeout)
    cipher = app.store.cipher
    with app.store.read() as session:
        current = repo.get_run_task(session, name)
    if url is not None or key_file or no_key:
        # R1: changing where or how it is called verifies again before anything is saved.
        key = None if no_key else (new_key or (cipher.decrypt(current.hmac_key_secret)
                                               if current.hmac_key_secret else None))
        verify(url or current.url, key)
    with app.store.write() as session:
        run_task = repo.get_run_task(session, name)
        if url is not None:
            run_task.url = url
        if new_key is not None:
            run_task.hmac_key_secret = cipher.encrypt(new_key)
        if no_key:
            run_task.hmac_key_secret = None
        if description is not None:
            run_task.description = description
        if seconds is not None:
            run_task.timeout_s = seconds
        run_task.updated_at = repo.now()
        session.add(run_task)
    return show(app, name)


def delete(app: App, name: str) -> None:
    with app.store.write() as session:
        run_task = repo.get_run_task(session, name)
        for attachment, _r, _w in repo.attachments(session, run_task_id=run_task.id):
            session.delete(attachment)
        session.flush()
        session.delete(run_task)


def _attachment_view(a: WorkspaceRunTask, r: Any, w: Any) -> dict[str, Any]:
    return {"run_task": r.name, "workspace": w.name, "stage": a.stage, "enforcement": a.enforcement}


def list_run_tasks(app: App) -> list[dict[str, Any]]:
    with app.store.read() as session:
        rows = list(repo.run_tasks(session))
        attached = repo.attachments(session)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for a, r, w in attached:
        by_task.setdefault(r.name, []).append(_attachment_view(a, r, w))
    return [run_task_view(r, by_task.get(r.name, [])) for r in rows]


def show(app: App, name: str) -> dict[str, Any]:
    with app.store.read() as session:
        run_task = repo.get_run_task(session, name)
        attached = [_attachment_view(a, r, w) for a, r, w in repo.attachments(session, run_task_id=run_task.id)]
    return run_task_view(run_task, attached)


# -- attachments ----------------------------------------------------------------------------------


def attach(app: App, name: str, workspace: str, *, stage: str, enforcement: str) -> dict[str, Any]:
    if stage not in protocol.STAGES:
        raise UsageError(f"unknown stage {stage!r}: one of {', '.join(protocol.STAGES)}")
    if enforcement not in protocol.ENFORCEMENTS:
        raise UsageError(f"unknown enforcement {enforcement!r}: one of {', '.join(protocol.ENFORCEMENTS)}")
    with app.store.write() as session:
        run_task = repo.get_run_task(session, name)
        ws = repo.get_workspace(session, workspace)
        existing = repo.find_attachment(session, ws.id or 0, run_task.id or 0)
        if existing is not None:
            existing.stage, existing.enforcement = stage, enforcement
            session.add(existing)
        else:
            session.add(WorkspaceRunTask(workspace_id=ws.id or 0, run_task_id=run_task.id or 0, stage=stage,
                                         enforcement=enforcement, created_at=repo.now()))
    return {"run_task": name, "workspace": workspace, "stage": stage, "enforcement": enforcement}


def detach(app: App, name: str, workspace: str) -> None:
    with app.store.write() as session:
        run_task = repo.get_run_task(session, name)
        ws = repo.get_workspace(session, workspace)
        existing = repo.find_attachment(session, ws.id or 0, run_task.id or 0)
        if existing is None:
            raise UsageError(f"run task {name} is not attached to workspace {workspace}")
        session.delete(existing)


# -- results --------------------------------------------------------------------------------------


def result_view(result: TaskResult) -> dict[str, Any]:
    return {
        "id": result.id,
        "task": result.task_id,
        "run_task": result.run_task_name,
        "stage": result.stage,
        "enforcement": result.enforcement,
        "status": result.status,
        "message": result.message,
        "url": result.url,
        "outcomes": json.loads(result.outcomes_json) if result.outcomes_json else [],
        "token_used": result.token_used,
        "token_cleared": result.access_token_secret is None,
        "created_at": iso(result.created_at),
        "deadline_at": iso(result.deadline_at),
        "finished_at": iso(result.finished_at),
        "summary": describe(result),
    }


def results(app: App, task_id: int) -> list[dict[str, Any]]:
    with app.store.read() as session:
        repo.get_task(session, task_id)
        return [result_view(r) for r in repo.results_of_task(session, task_id)]


def time_out_overdue(app: App) -> list[tuple[int, int, str]]:
    """S8/R6: the sweep marks results past their timeout `timeout` and clears their tokens.
    Returns (result id, task id, run task name) of those it marked."""
    marked = []
    with app.store.write() as session:
        for result in repo.overdue_results(session, repo.now()):
            if repo.update_open_result(session, result.id or 0, status="timeout",
                                       message="no result before the timeout (found by the sweep)"):
                marked.append((result.id or 0, result.task_id, result.run_task_name))
    return marked


# -- the stage hooks ------------------------------------------------------------------------------


def hooks_for(app: App, task_id: int) -> StageHooks:
    """R7/C6: one hook per stage that has run tasks attached to the task's workspace."""
    with app.store.read() as session:
        task = repo.get_task(session, task_id)
        stages = {a.stage for a, _r, _w in repo.attachments(session, workspace_id=task.workspace_id)}
    return StageHooks(by_stage={Stage(s): [_hook(s)] for s in stages})


def _hook(stage: str) -> Callable[[TaskRun], None]:
    def hook(run: TaskRun) -> None:
        # After the apply a cancel cannot undo anything: post_apply waits to the end (R7).
        should_stop = (lambda: False) if stage == "post_apply" else run.watch.requested
        try:
            run_stage(run.store, run.task_id, stage, run.log.note, should_stop)
        except Stopped as exc:
            raise Cancelled(f"cancelled at stage {stage}: {exc}") from None

    return hook


# -- serve ----------------------------------------------------------------------------------------


def serve(app: App, listen: str, public_url: str | None, ready: Callable[[str, str], None],
          stop: threading.Event) -> None:
    """R8: serve the callback API until `stop` is set, registered in the store so waiting tasks
    use it."""
    from iacctl.runtasks import server

    if public_url is not None:
        check_url(public_url, "--public-url")
    try:
        running = server.start(app.store, listen)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    public = (public_url or running.url).rstrip("/")
    try:
        with server.registered(app.store, public, f"{running.host}:{running.port}"):
            ready(running.url, public)
            while not stop.wait(0.5):
                if not running.thread.is_alive():
                    raise IacctlError("the callback server stopped unexpectedly")
    finally:
        running.stop()
