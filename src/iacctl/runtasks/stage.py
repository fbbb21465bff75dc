"""Running a stage's run tasks for a task (SPEC R2, R3, R5, R6, R8; seed 002 C3, C5, M10, O4):
create the results with fresh tokens, send the signed requests in parallel, wait for the
callbacks (through a live `iacctl runtask serve`, or a server started here for the wait), mark
overdue results `timeout` at once, say each result as it arrives, and decide.

A mandatory result that is not `passed` fails the stage (TaskFailed, which the executor turns
into the one termination path); an advisory one only warns. Nothing delivered is never taken
for passed.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from iacctl.crypto import Cipher
from iacctl.domain.durations import format_duration
from iacctl.errors import TaskFailed, UsageError
from iacctl.runtasks import client, protocol, tokens
from iacctl.store import repo
from iacctl.store.db import Store
from iacctl.store.models import RunTask, Task, TaskResult, Workspace

POLL_S = 0.2
LISTEN_ENV = "IACCTL_RUNTASK_LISTEN"
PUBLIC_URL_ENV = "IACCTL_RUNTASK_PUBLIC_URL"
DEFAULT_LISTEN = "127.0.0.1:0"


class Stopped(Exception):
    """The task was asked to stop while it waited for run tasks."""


@dataclass
class _Sent:
    result_id: int
    name: str
    enforcement: str


def describe(result: TaskResult) -> str:
    text = f"run task {result.run_task_name} ({result.enforcement}) at {result.stage}: {result.status}"
    if result.message:
        text += f" - {result.message}"
    if result.url:
        text += f" ({result.url})"
    return text


def outcome_lines(result: TaskResult) -> list[str]:
    outcomes: list[dict[str, Any]] = json.loads(result.outcomes_json) if result.outcomes_json else []
    return [f"  outcome {o.get('outcome_id') or '-'}: {o.get('description') or ''}".rstrip() for o in outcomes]


@contextlib.contextmanager
def callback_base(store: Store, say: Callable[[str], None]) -> Iterator[str]:
    """R8: the public URL services call back to: a live `runtask serve`'s, else a server of
    this process on IACCTL_RUNTASK_LISTEN (default 127.0.0.1, any port) for the wait."""
    from iacctl.runtasks import server

    with store.read() as session:
        live = repo.fresh_runtask_server(session, repo.now() - server.FRESH_S)
    if live is not None:
        yield live.public_url
        return
    listen = os.environ.get(LISTEN_ENV) or DEFAULT_LISTEN
    try:
        running = server.start(store, listen)
    except ValueError as exc:
        raise UsageError(f"{LISTEN_ENV}: {exc}") from None
    except OSError as exc:
        raise TaskFailed(f"cannot start the run-task callback server on {listen}: {exc}") from None
    public = os.environ.get(PUBLIC_URL_ENV) or running.url
    say(f"no `iacctl runtask serve` is running; callbacks for this wait go to {public} (listening on {running.url})")
    try:
        yield public
    finally:
        running.stop()


def run_stage(store: Store, task_id: int, stage: str, say: Callable[[str], None],
              should_stop: Callable[[], bool]) -> None:
    with store.read() as session:
        task = repo.get_task(session, task_id)
        workspace = repo.workspace_by_id(session, task.workspace_id)
        attached = [(a.enforcement, r) for a, r, _w in
                    repo.attachments(session, workspace_id=workspace.id, stage=stage)]
    if not attached:
        return
    say(f"{stage}: {len(attached)} run task(s): " + ", ".join(f"{r.name} ({e})" for e, r in attached))
    with callback_base(store, say) as base:
        sent = _create_and_send(store, task, workspace, stage, attached, base, say)
        results = _wait(store, sent, say, should_stop)
    _decide(stage, results, say)


def _create_and_send(store: Store, task: Task, workspace: Workspace, stage: str,
                     attached: list[tuple[str, RunTask]], base: str, say: Callable[[str], None]) -> list[_Sent]:
    cipher = store.cipher
    requests: list[tuple[_Sent, str, bytes, str]] = []
    run = protocol.RunFacts(
        task_id=task.id or 0, task_kind=task.kind, task_created_at=task.created_at,
        created_by=repo.task_actor(task), workspace_id=workspace.id or 0,
        workspace_name=workspace.name, working_directory="",
    )
    # The results and their tokens are committed before any request leaves: a service that
    # calls back before answering the POST finds its result.
    with store.write() as session:
        for enforcement, run_task in attached:
            result_id, token = new_result(session, cipher, task, run_task, stage, enforcement)
            body = protocol.encode(protocol.build_payload(
                stage=stage, access_token=token, result_id=result_id, enforcement=enforcement,
                public_url=base, run=run,
            ))
            key = cipher.decrypt(run_task.hmac_key_secret) if run_task.hmac_key_secret else None
            requests.append((_Sent(result_id, run_task.name, enforcement), run_task.url, body,
                             protocol.sign(body, key)))

    def send(item: tuple[_Sent, str, bytes, str]) -> None:
        sent, url, body, signature = item
        try:
            client.deliver(url, body, signature)
        except client.DeliveryError as exc:
            # R5/O4: not delivered is webhook_error, distinct from failed.
            with store.write() as session:
                repo.update_open_result(session, sent.result_id, status="webhook_error", message=str(exc))
            return
        with store.write() as session:
            current = session.get(TaskResult, sent.result_id)
            if current is not None and current.status == "pending":
                repo.update_open_result(session, sent.result_id, status="running")
        say(f"run task {sent.name}: request delivered; waiting for its result")

    with ThreadPoolExecutor(max_workers=min(8, len(requests))) as pool:
        list(pool.map(send, requests))
    return [r[0] for r in requests]


def new_result(session: Session, cipher: Cipher, task: Task, run_task: RunTask, stage: str,
               enforcement: str) -> tuple[int, str]:
    """A pending task result with its fresh access token (R3, C5), stored encrypted. Returns
    the result id and the token (sent once, in the request payload)."""
    t = repo.now()
    result = TaskResult(
        task_id=task.id or 0, run_task_id=run_task.id, run_task_name=run_task.name, stage=stage,
        enforcement=enforcement, status="pending", created_at=t, updated_at=t,
        deadline_at=t + run_task.timeout_s,
    )
    session.add(result)
    session.flush()
    result_id = result.id or 0
    token = tokens.issue(cipher, result_id=result_id, task_id=task.id or 0, workspace_id=task.workspace_id,
                         stage=stage, ttl_s=tokens.ttl_for(run_task.timeout_s))
    result.access_token_secret = cipher.encrypt_text(token)
    session.add(result)
    return result_id, token


def _wait(store: Store, sent: list[_Sent], say: Callable[[str], None],
          should_stop: Callable[[], bool]) -> list[TaskResult]:
    """R6: until each result is final or past its own timeout (marked `timeout` at once, M10)."""
    ids = [s.result_id for s in sent]
    shown: dict[int, tuple[str, str | None, str | None]] = {}
    while True:
        with store.read() as session:
            results = list(repo.results_by_id(session, ids))
        t = repo.now()
        for result in results:
            if result.status in repo.RESULT_OPEN and t > result.deadline_at:
                with store.write() as session:
                    repo.update_open_result(
                        session, result.id or 0, status="timeout",
                        message=f"no result within {format_duration(result.deadline_at - result.created_at)}",
                    )
        with store.read() as session:
            results = list(repo.results_by_id(session, ids))
        for result in results:
            seen = (result.status, result.message, result.outcomes_json)
            if shown.get(result.id or 0) != seen and not (result.status == "pending"):
                if result.status != "running" or result.message or result.outcomes_json:
                    say(describe(result))
                    for line in outcome_lines(result):
                        say(line)
                shown[result.id or 0] = seen
        if all(r.status in repo.RESULT_FINAL for r in results):
            return results
        if should_stop():
            raise Stopped("stopped while waiting for run tasks")
        time.sleep(POLL_S)


def _decide(stage: str, results: list[TaskResult], say: Callable[[str], None]) -> None:
    blocking: list[str] = []
    for result in results:
        if result.status == "passed":
            continue
        reason = f"{result.run_task_name}: {result.status}" + (f" ({result.message})" if result.message else "")
        if result.enforcement == "mandatory":
            blocking.append(reason)
        else:
            say(f"warning: advisory run task {reason}; continuing")
    if blocking:
        raise TaskFailed(f"mandatory run task failed at {stage}: " + "; ".join(blocking))
