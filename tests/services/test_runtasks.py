"""Run tasks end to end (SPEC R1-R8, seed 002 C3-C6, H3, M10, O4): real run-task services on
127.0.0.1 (tests/fixtures/runtask_services.py), the real `iacctl plan` and `confirm-apply`, the
results waited for through a server iacctl starts for the wait or through `iacctl runtask
serve` in another process."""

from __future__ import annotations

import hashlib
import hmac
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.background import Background, spawn
from tests.conftest import Env
from tests.fixtures.runtask_services import RunTaskService, running_service


@pytest.fixture
def service(request: pytest.FixtureRequest) -> Iterator[RunTaskService]:
    with running_service(request.param) as s:
        yield s


def _attach(env: Env, svc: RunTaskService, name: str = "opa", *, stage: str = "post_plan",
            enforcement: str = "mandatory", timeout: str | None = None, key: bytes | None = None) -> None:
    args = ["runtask", "create", name, "--url", svc.url]
    if timeout:
        args += ["--timeout", timeout]
    if key is not None:
        (env.root / f"{name}.key").write_bytes(key + b"\n")
        args += ["--hmac-key-file", str(env.root / f"{name}.key")]
    env.ok(*args)
    env.ok("runtask", "attach", name, "net", "--stage", stage, "--enforcement", enforcement)


def _results(env: Env, task_id: int = 1) -> list[dict[str, Any]]:
    return env.ok("runtask", "results", str(task_id), "--json").json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("service", ["pass"], indirect=True)
def test_a_passing_run_task_lets_the_plan_wait_for_confirmation(env: Env, service: RunTaskService) -> None:
    env.workspace("net")
    _attach(env, service)
    r = env.ok("plan", "net", code=2)
    assert "run task opa (mandatory) at post_plan: passed - all checks passed (https://checks.example/r/1)" in r.out
    [result] = _results(env)
    assert result["status"] == "passed" and result["token_used"] and result["token_cleared"]
    assert service.plan_json_status == [200]
    [req] = service.task_requests()
    assert req.payload["stage"] == "post_plan"
