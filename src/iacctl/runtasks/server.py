"""The run-task callback API (SPEC R4, R8, X3), as HCP Terraform serves it to run tasks:

  PATCH /api/v2/task-results/{id}/callback          JSON:API `task-results` body
  GET   /api/v2/task-results/{id}/plan-json         the plan JSON of the result's task
  GET   /api/v2/task-results/{id}/resource-changes  its resource changes

All three need `Authorization: Bearer <the result's access token>`: none or invalid -> 401,
another result's token -> 403. A final status is accepted once (409 after). Bodies over 5 MB are
refused before they are parsed (413); a bad body or status is 422. Errors are JSON:API
documents. The app is built on a Store and runs in `iacctl runtask serve` or, for the length of
a wait, in a thread of the process that waits (see runtasks/stage.py).

FastAPI and uvicorn are imported only here, and this module only where a server runs.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at run time.

import contextlib
import json
import os
import socket
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from iacctl.runtasks import tokens
from iacctl.runtasks.protocol import CALLBACK_STATUSES, BadCallback, read_callback
from iacctl.store import repo
from iacctl.store.db import Store
from iacctl.store.models import RunTaskServer, TaskResult

MAX_BODY_BYTES = 5 * 1024 * 1024
JSONAPI = "application/vnd.api+json"
HEARTBEAT_S = 5.0
FRESH_S = 20.0  # a serve record older than this is taken for dead

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ApiError(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


def _error_doc(status: int, title: str, detail: str) -> dict[str, Any]:
    return {"errors": [{"status": str(status), "title": title, "detail": detail}]}


async def _send_error(send: Send, status: int, title: str, detail: str) -> None:
    body = json.dumps(_error_doc(status, title, detail)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", JSONAPI.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """X3: refuse a body over the limit before anything parses it, whether it announces its
    length or streams it in chunks."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    announced = int(value)
                except ValueError:
                    await _send_error(send, 400, "bad request", "Content-Length is not a number")
                    return
                if announced > self.limit:
                    await _send_error(send, 413, "payload too large", f"the body is over {self.limit} bytes")
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            if message["type"] != "http.request":
                continue
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _send_error(send, 413, "payload too large", f"the body is over {self.limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# The callback body as the OpenAPI document describes it (read leniently: extra members pass).
_OUTCOME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["task-result-outcomes"]},
        "attributes": {
            "type": "object",
            "properties": {
                "outcome-id": {"type": "string"},
                "description": {"type": "string"},
                "body": {"type": "string"},
                "url": {"type": "string"},
                "tags": {"type": "object"},
            },
        },
    },
}
CALLBACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "object",
            "required": ["attributes"],
            "properties": {
                "type": {"type": "string", "enum": ["task-results"]},
                "attributes": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": {"type": "string", "enum": list(CALLBACK_STATUSES)},
                        "message": {"type": "string"},
                        "url": {"type": "string"},
                    },
                },
                "relationships": {
                    "type": "object",
                    "properties": {
                        "outcomes": {
                            "type": "object",
                            "properties": {"data": {"type": "array", "items": _OUTCOME_SCHEMA}},
                        }
                    },
                },
            },
        }
    },
}
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "no token, or a malformed, expired or revoked one"},
    403: {"description": "the token of another task result"},
    404: {"description": "no such task result or data"},
    409: {"description": "the task result already has its final status"},
    413: {"description": "the body is over 5 MB"},
    422: {"description": "the body is not a task-results document with a known status"},
}


def _result_view(result: TaskResult) -> dict[str, Any]:
    return {
        "data": {
            "id": str(result.id),
            "type": "task-results",
            "attributes": {
                "status": result.status,
                "message": result.message,
                "url": result.url,
                "stage": result.stage,
                "task-name": result.run_task_name,
                "workspace-task-enforcement-level": result.enforcement,
            },
        }
    }


class CallbackService:
    """What the endpoints do, on the store, without the web framework (sync; FastAPI runs it
    in its thread pool)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def authorized(self, result_id: str, token: str | None, *, for_update: bool) -> TaskResult:
        cipher = self.store.cipher
        try:
            claims = tokens.check(cipher, token, result_id)
        except tokens.TokenInvalid as exc:
            raise ApiError(401, "unauthorized", str(exc)) from None
        except tokens.TokenForbidden as exc:
            raise ApiError(403, "forbidden", str(exc)) from None
        with self.store.read() as session:
            result = session.get(TaskResult, claims.result_id)
        if result is None:
            raise ApiError(404, "not found", f"no task result {result_id}")
        if for_update and result.status in repo.RESULT_FINAL:
            raise ApiError(409, "conflict", f"task result {result_id} is already {result.status}")
        stored = cipher.decrypt_text(result.access_token_secret) if result.access_token_secret else None
        # X3: compare in constant time. A cleared token (C5) no longer opens anything.
        import hmac

        if stored is None or token is None or not hmac.compare_digest(stored.encode(), token.encode()):
            raise ApiError(401, "unauthorized", "the access token is no longer valid for this task result")
        return result

    def callback(self, result: TaskResult, result_id: str, body: bytes) -> dict[str, Any]:
        """Apply a callback to a result that `authorized` let through."""
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(422, "unprocessable entity", "the body is not JSON") from None
        try:
            update = read_callback(doc)
        except BadCallback as exc:
            raise ApiError(422, "unprocessable entity", str(exc)) from None
        fields: dict[str, Any] = {"status": update.status}
        if update.message is not None:
            fields["message"] = update.message
        if update.url is not None:
            fields["url"] = update.url
        if update.outcomes:
            fields["outcomes_json"] = json.dumps(update.outcomes)
        with self.store.write() as session:
            if not repo.update_open_result(session, result.id or 0, **fields):
                raise ApiError(409, "conflict", f"task result {result_id} already has its final status")
            fresh = session.get(TaskResult, result.id)
            assert fresh is not None
            return _result_view(fresh)

    def plan_json(self, result_id: str, token: str | None) -> dict[str, Any]:
        result = self.authorized(result_id, token, for_update=False)
        with self.store.read() as session:
            artifact = repo.plan_artifact_of(session, result.task_id)
        if artifact is None:
            raise ApiError(404, "not found", f"task {result.task_id} has no plan yet")
        doc = json.loads(zlib.decompress(self.store.cipher.decrypt(artifact.plan_json_secret)))
        return doc if isinstance(doc, dict) else {"plan": doc}

    def resource_changes(self, result_id: str, token: str | None) -> dict[str, Any]:
        plan = self.plan_json(result_id, token)
        return {"resource_changes": plan.get("resource_changes") or []}


def create_app(store: Store) -> Any:
    """The FastAPI application (wrapped in the body limit) serving the callback API."""
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    service = CallbackService(store)
    bearer = HTTPBearer(auto_error=False, description="The task result's access_token from the request payload.")
    api = FastAPI(title="iacctl run-task callback API", version="1",
                  description="HCP Terraform compatible run-task callbacks of iacctl.")

    def error_response(status: int, title: str, detail: str) -> JSONResponse:
        return JSONResponse(_error_doc(status, title, detail), status_code=status, media_type=JSONAPI)

    @api.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.title, exc.detail)

    @api.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "unprocessable entity", "the request is not valid")

    @api.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, "error", str(exc.detail))

    def token_of(creds: HTTPAuthorizationCredentials | None) -> str | None:
        return creds.credentials if creds is not None else None

    @api.patch(
        "/api/v2/task-results/{result_id}/callback",
        summary="Report a run task's status (running, passed, failed) with message, url and outcomes",
        responses=_ERROR_RESPONSES,
        openapi_extra={"requestBody": {"required": True, "content": {
            JSONAPI: {"schema": CALLBACK_SCHEMA}, "application/json": {"schema": CALLBACK_SCHEMA}}}},
    )
    async def callback(result_id: str, request: Request,
                       creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> JSONResponse:
        # The token is checked before the body is read: a caller without one learns nothing.
        token = token_of(creds)
        result = await run_in_threadpool(service.authorized, result_id, token, for_update=True)
        body = await request.body()
        doc = await run_in_threadpool(service.callback, result, result_id, body)
        return JSONResponse(doc, media_type=JSONAPI)

    @api.get("/api/v2/task-results/{result_id}/plan-json", summary="The plan JSON of the result's run",
             responses=_ERROR_RESPONSES)
    async def plan_json(result_id: str,
                        creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(service.plan_json, result_id, token_of(creds)))

    @api.get("/api/v2/task-results/{result_id}/resource-changes", summary="The resource changes of the run",
             responses=_ERROR_RESPONSES)
    async def resource_changes(result_id: str,
                               creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(service.resource_changes, result_id, token_of(creds)))

    api.add_middleware(BodyLimit)
    return api


# -- running it -----------------------------------------------------------------------------------


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen must be HOST:PORT (e.g. 127.0.0.1:8800), not {listen!r}")
    return host.strip("[]"), int(port)


@dataclass
class RunningServer:
    host: str
    port: int
    server: Any
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start(store: Store, listen: str) -> RunningServer:
    """Start the callback API with uvicorn in a thread of this process (port 0: any free port).
    Raises OSError when the address cannot be bound."""
    import uvicorn

    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(store), log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="runtask-callbacks",
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise OSError(f"the callback server on {host}:{bound_port} did not start")
        time.sleep(0.02)
    return RunningServer(host, bound_port, server, thread)


@contextlib.contextmanager
def registered(store: Store, public_url: str, listen: str) -> Iterator[None]:
    """R8: while `runtask serve` runs, its public URL is in the store with a heartbeat, so a
    waiting task sends services there instead of starting a server of its own."""
    from iacctl.runtimes.local import hostname

    t = repo.now()
    with store.write() as session:
        row = RunTaskServer(public_url=public_url, listen=listen, host=hostname(), pid=os.getpid(),
                            started_at=t, heartbeat_at=t)
        session.add(row)
        session.flush()
        row_id = row.id
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception), store.write() as session:
                current = session.get(RunTaskServer, row_id)
                if current is not None:
                    current.heartbeat_at = repo.now()
                    session.add(current)

    beater = threading.Thread(target=beat, name="runtask-serve-heartbeat", daemon=True)
    beater.start()
    try:
        yield
    finally:
        stop.set()
        beater.join(timeout=5)
        with contextlib.suppress(Exception), store.write() as session:
            current = session.get(RunTaskServer, row_id)
            if current is not None:
                session.delete(current)
