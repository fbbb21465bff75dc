"""The HCP Terraform run-task wire format (SPEC R1, R2, R4): the request payload, its exact
bytes and signature, and reading a callback body.

Existing services written for HCP Terraform must work unchanged, so the payload carries every
field HCP Terraform sends, ids are strings, times ISO-8601, URLs absolute, the JSON is compact
(some services verify the HMAC over compact JSON) and go-tfe's misspelled `capabilitites` is
sent beside `capabilities`. No I/O here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

PAYLOAD_VERSION = 1
ORGANIZATION = "iacctl"
STAGES = ("pre_plan", "post_plan", "pre_apply", "post_apply")
ENFORCEMENTS = ("advisory", "mandatory")
# The stages whose request carries the plan JSON URL (R2): the plan exists from post_plan on.
PLAN_JSON_STAGES = frozenset({"post_plan", "pre_apply", "post_apply"})
CALLBACK_STATUSES = ("running", "passed", "failed")
SIGNATURE_HEADER = "X-TFC-Task-Signature"
TEST_TOKEN = "test-token"  # R1: the verification request's access token, as HCP Terraform sends


def result_path(result_id: int | str) -> str:
    return f"/api/v2/task-results/{result_id}"


def iso8601(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass(frozen=True)
class RunFacts:
    """What the payload says about the run (task) and its workspace."""

    task_id: int
    task_kind: str
    task_created_at: float
    created_by: str
    workspace_id: int
    workspace_name: str
    working_directory: str


def build_payload(
    *, stage: str, access_token: str, result_id: int, enforcement: str, public_url: str, run: RunFacts,
) -> dict[str, Any]:
    """R2: the request body HCP Terraform sends to a run task, field for field."""
    base = public_url.rstrip("/")
    callback = base + result_path(result_id) + "/callback"
    return {
        "payload_version": PAYLOAD_VERSION,
        "stage": stage,
        "access_token": access_token,
        "capabilitites": {"outcomes": True},  # sic: go-tfe reads this spelling
        "capabilities": {"outcomes": True},
        "configuration_version_download_url": None,
        "configuration_version_id": f"cv-{run.task_id}",
        "is_speculative": run.task_kind in ("plan", "drift_check"),  # F5: a drift check never applies
        "organization_name": ORGANIZATION,
        "plan_json_api_url": (base + result_path(result_id) + "/plan-json") if stage in PLAN_JSON_STAGES else None,
        "run_app_url": f"{base}/app/{ORGANIZATION}/workspaces/{run.workspace_name}/runs/run-{run.task_id}",
        "run_created_at": iso8601(run.task_created_at),
        "run_created_by": run.created_by,
        "run_id": f"run-{run.task_id}",
        "run_message": f"iacctl task {run.task_id} ({run.task_kind})",
        "task_result_callback_url": callback,
        "task_result_enforcement_level": enforcement,
        "task_result_id": str(result_id),
        "vcs_branch": None,
        "vcs_commit_url": None,
        "vcs_pull_request_url": None,
        "vcs_repo_url": None,
        "workspace_app_url": f"{base}/app/{ORGANIZATION}/workspaces/{run.workspace_name}",
        "workspace_id": f"ws-{run.workspace_id}",
        "workspace_name": run.workspace_name,
        "workspace_working_directory": run.working_directory,
    }


def verification_payload(public_url: str) -> dict[str, Any]:
    """R1: the dummy request sent when a run task is created or changed: placeholder ids and
    the `test-token` access token, which services recognise and answer 200 without work."""
    run = RunFacts(task_id=0, task_kind="plan_and_apply", task_created_at=time.time(), created_by="iacctl",
                   workspace_id=0, workspace_name="verification", working_directory="")
    doc = build_payload(stage="test", access_token=TEST_TOKEN, result_id=0, enforcement="advisory",
                        public_url=public_url, run=run)
    doc.update(task_result_id="taskrs-verification", run_id="run-verification",
               workspace_id="ws-verification", configuration_version_id="cv-verification")
    return doc


def encode(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent, and signed: compact JSON (no spaces)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def sign(body: bytes, key: bytes | None) -> str:
    """R2: hex HMAC-SHA512 of the exact body bytes; empty when the run task has no key."""
    if not key:
        return ""
    return hmac.new(key, body, hashlib.sha512).hexdigest()


@dataclass
class Callback:
    status: str
    message: str | None = None
    url: str | None = None
    outcomes: list[dict[str, Any]] = field(default_factory=list)


class BadCallback(ValueError):
    """The callback body is not a task-results document with a known status (422)."""


def read_callback(doc: Any) -> Callback:
    """R4: read a JSON:API `task-results` body leniently: extra members are ignored, message
    and url may be missing, outcomes come from relationships.outcomes.data."""
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict):
        raise BadCallback("the body has no `data` object")
    if data.get("type") not in (None, "task-results"):
        raise BadCallback(f"`data.type` must be task-results, not {data.get('type')!r}")
    attributes = data.get("attributes")
    if not isinstance(attributes, dict):
        raise BadCallback("the body has no `data.attributes` object")
    status = attributes.get("status")
    if status not in CALLBACK_STATUSES:
        raise BadCallback(f"`status` must be one of {', '.join(CALLBACK_STATUSES)}, not {status!r}")
    message = attributes.get("message")
    url = attributes.get("url")
    outcomes: list[dict[str, Any]] = []
    relationships = data.get("relationships")
    if isinstance(relationships, dict):
        rel = relationships.get("outcomes")
        items = rel.get("data") if isinstance(rel, dict) else None
        if isinstance(items, list):
            outcomes = [_outcome(item) for item in items if isinstance(item, dict)]
    return Callback(
        status=status,
        message=str(message)[:4000] if message is not None else None,
        url=str(url)[:2000] if url is not None else None,
        outcomes=outcomes,
    )


def _outcome(item: dict[str, Any]) -> dict[str, Any]:
    attrs = item.get("attributes") if isinstance(item.get("attributes"), dict) else item
    assert isinstance(attrs, dict)
    return {
        "outcome_id": _text(attrs.get("outcome-id")),
        "description": _text(attrs.get("description")),
        "body": _text(attrs.get("body")),
        "url": _text(attrs.get("url")),
        "tags": attrs.get("tags") if isinstance(attrs.get("tags"), dict) else {},
    }


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:10000]
