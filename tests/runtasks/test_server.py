"""The callback API (SPEC R3, R4, X3; seed 002 C4, C5; seed 003 checklist): real HTTP against
the real server. Forged callbacks are refused: no token, a malformed token, an expired token,
another result's token, a token of another installation, a final status twice."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.fixtures.runtask_services import body
from tests.runtasks.conftest import PLAN_JSON, CallbackApi


def _patch(url: str, doc: object, token: str | None = None, **headers: str) -> httpx.Response:
    h = dict(headers)
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    return httpx.patch(url, json=doc, headers=h, timeout=30)


def _get(api: CallbackApi, result_id: int, what: str, token: str | None) -> httpx.Response:
    h = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(f"{api.url}/api/v2/task-results/{result_id}/{what}", headers=h, timeout=30)


def _error(r: httpx.Response) -> str:
    [error] = r.json()["errors"]
    assert error["status"] == str(r.status_code)
    return str(error["detail"])


def test_callback_with_a_valid_token_is_accepted_once_and_clears_the_token(callback_api: CallbackApi) -> None:
    """Checklist: valid token -> 200; the token is cleared after the callback (token used)."""
    api = callback_api
    rid, token = api.result()
    assert api.row(rid).access_token_secret is not None and not api.row(rid).token_used
    r = _patch(api.callback_url(rid), body("passed", "fine", "https://x.example/1"), token)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/vnd.api+json")
    assert r.json()["data"]["attributes"]["status"] == "passed"
    row = api.row(rid)
    assert (row.status, row.message, row.url) == ("passed", "fine", "https://x.example/1")
    assert row.token_used and row.access_token_secret is None and row.finished_at is not None
    # C4: a final status is accepted once.
    again = _patch(api.callback_url(rid), body("failed", "changed my mind"), token)
    assert again.status_code == 409 and "already passed" in _error(again)
    assert api.row(rid).status == "passed"
    # The cleared token opens nothing any more.
    assert _get(api, rid, "plan-json", token).status_code == 401


def test_running_updates_then_outcomes_then_final(callback_api: CallbackApi) -> None:
    api = callback_api
    rid, token = api.result()
    assert _patch(api.callback_url(rid), body("running", "scanning"), token).status_code == 200
    assert (api.row(rid).status, api.row(rid).message) == ("running", "scanning")
    outcomes = [{"outcome-id": "P-1", "description": "port 22 open", "body": "# details", "url": "https://x/p1",
                 "tags": {"severity": [{"label": "high", "level": "error"}]}, "unknown-member": 1}]
    assert _patch(api.callback_url(rid), body("running", outcomes=outcomes), token).status_code == 200
    assert api.row(rid).access_token_secret is not None  # running does not use up the token
    assert _patch(api.callback_url(rid), body("failed", "1 finding"), token).status_code == 200
    row = api.row(rid)
    assert (row.status, row.message) == ("failed", "1 finding")
    assert '"outcome_id": "P-1"' in row.outcomes_json and '"description": "port 22 open"' in row.outcomes_json


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer not-a-jwt", "Basic dXNlcjpwYXNz", "Bearer a.b.c"])
def test_no_or_malformed_token_is_401(callback_api: CallbackApi, header: str | None) -> None:
    """Checklist: no token -> 401; wrong token -> 401."""
    api = callback_api
    rid, _ = api.result()
    headers = {"Authorization": header} if header is not None else {}
    r = _patch(api.callback_url(rid), body("passed"), None, **headers)
    assert r.status_code == 401, r.text
    assert api.row(rid).status == "pending"


def test_expired_token_is_401(callback_api: CallbackApi) -> None:
    from iacctl.runtasks import tokens

    api = callback_api
    rid, _ = api.result()
    expired = tokens.issue(api.app.store.cipher, result_id=rid, task_id=api.task_id, workspace_id=1,
                           stage="post_plan", ttl_s=-30)
    r = _patch(api.callback_url(rid), body("passed"), expired)
    assert r.status_code == 401 and "expired" in _error(r)
    assert api.row(rid).status == "pending"


def test_token_expires_at_the_timeout_capped_at_24h(callback_api: CallbackApi) -> None:
    import jwt

    api = callback_api
    _, short = api.result(timeout_s=120)
    _, long = api.result(timeout_s=3 * 86400)
    now = time.time()
    for token, ttl in ((short, 120), (long, 86400)):
        claims = jwt.decode(token, options={"verify_signature": False})
        assert abs(claims["exp"] - (now + ttl)) < 5
        assert claims["stage"] == "post_plan" and claims["task_id"] == api.task_id
        assert claims["workspace_id"] == "ws-1" and claims["result_id"].isdigit()


def test_a_token_of_another_result_is_403(callback_api: CallbackApi) -> None:
    """Checklist: the token's result id does not match -> 403."""
    api = callback_api
    rid1, token1 = api.result()
    rid2, _ = api.result()
    r = _patch(api.callback_url(rid2), body("passed"), token1)
    assert r.status_code == 403, r.text
    assert _get(api, rid2, "plan-json", token1).status_code == 403
    assert api.row(rid2).status == "pending" and api.row(rid1).status == "pending"


def test_a_token_signed_with_another_key_is_401(callback_api: CallbackApi) -> None:
    import jwt

    api = callback_api
    rid, token = api.result()
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode(claims, "a guessed secret of at least thirty-two bytes!", algorithm="HS256")
    assert _patch(api.callback_url(rid), body("passed"), forged).status_code == 401
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert _patch(api.callback_url(rid), body("passed"), unsigned).status_code == 401
    assert api.row(rid).status == "pending"


def test_a_revoked_token_is_401_even_before_it_expires(callback_api: CallbackApi) -> None:
    """C5: an earlier token of the same result (re-issued) no longer opens it."""
    from iacctl.store.models import TaskResult

    api = callback_api
    rid, token = api.result()
    with api.app.store.write() as session:
        row = session.get(TaskResult, rid)
        row.access_token_secret = api.app.store.cipher.encrypt_text("something else")
        session.add(row)
    assert _patch(api.callback_url(rid), body("passed"), token).status_code == 401


@pytest.mark.parametrize("doc", [
    {"data": {"type": "task-results", "attributes": {"status": "errored"}}},
    {"data": {"type": "task-results", "attributes": {}}},
    {"data": {"type": "plans", "attributes": {"status": "passed"}}},
    {"data": []},
    [],
    "passed",
])
def test_bad_body_or_status_is_422(callback_api: CallbackApi, doc: object) -> None:
    api = callback_api
    rid, token = api.result()
    r = _patch(api.callback_url(rid), doc, token)
    assert r.status_code == 422, r.text
    assert api.row(rid).status == "pending" and api.row(rid).access_token_secret is not None


def test_not_json_is_422_and_a_body_over_5_mb_is_413(callback_api: CallbackApi) -> None:
    api = callback_api
    rid, token = api.result()
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    assert httpx.patch(api.callback_url(rid), content=b"{not json", headers=auth).status_code == 422
    big = b'{"data":{"attributes":{"status":"passed","message":"' + b"x" * (5 * 1024 * 1024) + b'"}}}'
    assert httpx.patch(api.callback_url(rid), content=big, headers=auth, timeout=60).status_code == 413

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(6):
            yield b" " * (1024 * 1024)

    streamed = httpx.patch(api.callback_url(rid), content=chunks(), headers=auth, timeout=60)
    assert streamed.status_code == 413
    assert api.row(rid).status == "pending"


def test_plan_json_and_resource_changes_need_the_token(callback_api: CallbackApi) -> None:
    """Checklist: GET plan-json / resource-changes with a valid Bearer token -> 200 and the
    data; without a token -> 401."""
    api = callback_api
    rid, token = api.result()
    r = _get(api, rid, "plan-json", token)
    assert r.status_code == 200 and r.json() == PLAN_JSON
    r = _get(api, rid, "resource-changes", token)
    assert r.status_code == 200 and r.json() == {"resource_changes": PLAN_JSON["resource_changes"]}
    for what in ("plan-json", "resource-changes"):
        assert _get(api, rid, what, None).status_code == 401
        assert _get(api, rid, what, "garbage").status_code == 401


def test_plan_json_of_a_task_without_a_plan_is_404(callback_api: CallbackApi) -> None:
    from tests.runtasks.conftest import add_task

    api = callback_api
    rid, token = api.result(task_id=add_task(api.app, with_plan=False), stage="pre_plan")
    r = _get(api, rid, "plan-json", token)
    assert r.status_code == 404 and "has no plan yet" in _error(r)


def test_the_openapi_document_is_served(callback_api: CallbackApi) -> None:
    doc = httpx.get(f"{callback_api.url}/openapi.json").json()
    paths = doc["paths"]
    assert set(paths) == {"/api/v2/task-results/{result_id}/callback",
                          "/api/v2/task-results/{result_id}/plan-json",
                          "/api/v2/task-results/{result_id}/resource-changes"}
    assert "patch" in paths["/api/v2/task-results/{result_id}/callback"]
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
