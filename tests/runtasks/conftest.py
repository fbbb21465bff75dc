"""A real callback API (uvicorn on 127.0.0.1, any port) on a test store holding a workspace, a
task with a saved plan JSON and a run task; results with fresh tokens made on demand."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import Env

PLAN_JSON: dict[str, Any] = {
    "format_version": "1.2",
    "resource_changes": [
        {"address": "terraform_data.first", "type": "terraform_data", "name": "first",
         "change": {"actions": ["create"]}},
    ],
}


@dataclass
class CallbackApi:
    env: Env
    app: Any
    url: str
    task_id: int

    def result(self, *, timeout_s: float = 600.0, stage: str = "post_plan", enforcement: str = "mandatory",
               task_id: int | None = None) -> tuple[int, str]:
        from iacctl.runtasks.stage import new_result
        from iacctl.store import repo

        store = self.app.store
        with store.write() as session:
            task = repo.get_task(session, task_id or self.task_id)
            run_task = repo.get_run_task(session, "opa")
            run_task.timeout_s = timeout_s
            return new_result(session, store.cipher, task, run_task, stage, enforcement)

    def row(self, result_id: int) -> Any:
        from iacctl.store.models import TaskResult

        with self.app.store.read() as session:
            return session.get(TaskResult, result_id)

    def callback_url(self, result_id: int | str) -> str:
        return f"{self.url}/api/v2/task-results/{result_id}/callback"


def add_task(app: Any, workspace: str = "net", *, with_plan: bool = True) -> int:
    from iacctl.store import repo
    from iacctl.store.models import PlanArtifact, Task

    store = app.store
    with store.write() as session:
        ws = repo.get_workspace(session, workspace)
        t = repo.now()
        task = Task(workspace_id=ws.id or 0, kind="plan_and_apply", status="running", created_at=t, updated_at=t)
        session.add(task)
        session.flush()
        if with_plan:
            session.add(PlanArtifact(
                task_id=task.id or 0, plan_hash="0" * 64, created_at=t, plan_secret=store.cipher.encrypt(b"plan"),
                plan_json_secret=store.cipher.encrypt(zlib.compress(json.dumps(PLAN_JSON).encode())),
            ))
        return task.id or 0


@pytest.fixture
def callback_api(env: Env) -> Iterator[CallbackApi]:
    from iacctl.runtasks import server
    from iacctl.store.models import RunTask

    env.workspace("net")
    app = env.app()
    with app.store.write() as session:
        t = 0.0
        session.add(RunTask(name="opa", url="http://127.0.0.1:9/unused", timeout_s=600.0, created_at=t, updated_at=t))
    task_id = add_task(app)
    running = server.start(app.store, "127.0.0.1:0")
    try:
        yield CallbackApi(env, app, running.url, task_id)
    finally:
        running.stop()
        app.close()
