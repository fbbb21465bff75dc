"""What a destination receives (SPEC F3), built from the facts an outbox entry recorded when
its status change happened. No I/O.

The generic destination gets HCP Terraform's notification payload version 1, field by field, so
receivers written for HCP Terraform work unchanged; iacctl's own facts (task id, plan hash,
change counts, event id, attempt) go under one extra key, `iacctl`, which they ignore. The body
is compact JSON and `X-TFE-Notification-Signature` is the hex HMAC-SHA512 of exactly those bytes
keyed with the destination's token. Slack gets `text` plus blocks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from iacctl.domain.notifications import HCP, VERIFICATION_TRIGGER, Event, Facts

PAYLOAD_VERSION = 1
ASSESSMENT_PAYLOAD_VERSION = 2  # HCP's drift (assessment) notifications
ORGANIZATION = "iacctl"
SIGNATURE_HEADER = "X-TFE-Notification-Signature"
EXTRA_KEY = "iacctl"


def iso8601(t: float | None) -> str | None:
    """HCP Terraform's time format: UTC with milliseconds."""
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"


def run_id(task_id: int) -> str:
    return f"run-{task_id}"


def run_url(public_url: str, facts: Facts) -> str:
    """Where people open the run, laid out as HCP Terraform's run URLs."""
    return f"{public_url.rstrip('/')}/app/{ORGANIZATION}/workspaces/{facts.workspace_name}/runs/{run_id(facts.task_id)}"


def next_command(facts: Facts) -> str | None:
    """What a person does next after this event, as a command line."""
    if facts.event == Event.NEEDS_CONFIRMATION:
        return f"iacctl confirm-apply {facts.task_id}"
    if facts.event in (Event.FAILED, Event.CANCELLED):
        return f"iacctl tasks logs {facts.task_id}"
    if facts.event == Event.DRIFT_DETECTED:
        return f"iacctl drift show {facts.workspace_name}"
    if facts.event in (Event.CREATED, Event.PLANNING, Event.APPLYING):
        return f"iacctl tasks show {facts.task_id}"
    return None


def generic_payload(*, destination_id: int, facts: Facts, public_url: str, event_id: str,
                    attempt: int) -> dict[str, Any]:
    """F3: HCP Terraform's notification payload version 1 (version 2 for drift, as HCP sends
    assessments), and iacctl's facts under `iacctl`."""
    if facts.event == Event.DRIFT_DETECTED:
        return assessment_payload(destination_id=destination_id, facts=facts, public_url=public_url,
                                  event_id=event_id, attempt=attempt)
    naming = HCP[facts.event]
    return {
        "payload_version": PAYLOAD_VERSION,
        "notification_configuration_id": f"nc-{destination_id}",
        "run_url": run_url(public_url, facts),
        "run_id": run_id(facts.task_id),
        "run_message": facts.message or f"iacctl task {facts.task_id} ({facts.task_kind})",
        "run_created_at": iso8601(facts.created_at),
        "run_created_by": facts.actor,
        "workspace_id": f"ws-{facts.workspace_id}",
        "workspace_name": facts.workspace_name,
        "organization_name": ORGANIZATION,
        "notifications": [
            {
                "message": naming.message,
                "trigger": naming.trigger,
                "run_status": naming.run_status,
                "run_updated_at": iso8601(facts.updated_at),
                "run_updated_by": facts.actor,
            }
        ],
        EXTRA_KEY: _extra(facts, event_id, attempt),
    }


def _extra(facts: Facts, event_id: str, attempt: int) -> dict[str, Any]:
    return {
        "event": facts.event.value,
        "event_id": event_id,
        "attempt": attempt,
        "task_id": facts.task_id,
        "task_kind": facts.task_kind,
        "task_status": facts.status,
        "plan_hash": facts.plan_hash,
        "changes": facts.changes,
        "error": facts.error,
        "drift": facts.drift,
        "next_command": next_command(facts),
    }


def assessment_payload(*, destination_id: int, facts: Facts, public_url: str, event_id: str,
                       attempt: int) -> dict[str, Any]:
    """Issue 19 item 7: a drift check's notification in the shape HCP Terraform sends its
    assessments (a workspace notification, payload version 2, trigger_scope `assessment`), so a
    receiver written for HCP, which switches on payload_version, parses it. The drift check task
    is the assessment; iacctl keeps no prior result to compare with (null, as HCP sends for a
    first assessment). Checks (HCP's continuous validation) are not run: zero counts."""
    naming = HCP[facts.event]
    base = public_url.rstrip("/")
    drifted = facts.drift or []
    return {
        "payload_version": ASSESSMENT_PAYLOAD_VERSION,
        "notification_configuration_id": f"nc-{destination_id}",
        "notification_configuration_url": f"{base}/api/v2/notification-configurations/nc-{destination_id}",
        "trigger_scope": "assessment",
        "trigger": naming.trigger,
        "message": naming.message,
        "details": {
            "new_assessment_result": {
                "id": f"asmtres-{facts.task_id}",
                "url": f"{base}/api/v2/assessment-results/asmtres-{facts.task_id}",
                "succeeded": True,
                "drifted": bool(drifted),
                "all_checks_succeeded": True,
                "resources_drifted": len(drifted),
                "resources_undrifted": 0,
                "checks_passed": 0,
                "checks_failed": 0,
                "checks_errored": 0,
                "created_at": iso8601(facts.updated_at),
            },
            "prior_assessment_result": None,
            "workspace_id": f"ws-{facts.workspace_id}",
            "workspace_name": facts.workspace_name,
            "organization_name": ORGANIZATION,
        },
        EXTRA_KEY: _extra(facts, event_id, attempt),
    }


def verification_payload(destination_id: int | None, name: str) -> dict[str, Any]:
    """What HCP Terraform sends when a configuration is created, enabled or verified: run
    fields null and trigger `verification`; the receiver must answer 2xx."""
    return {
        "payload_version": PAYLOAD_VERSION,
        "notification_configuration_id": f"nc-{destination_id}" if destination_id is not None else None,
        "run_url": None,
        "run_id": None,
        "run_message": None,
        "run_created_at": None,
        "run_created_by": None,
        "workspace_id": None,
        "workspace_name": None,
        "organization_name": None,
        "notifications": [
            {
                "message": f"Verification of {name}",
                "trigger": VERIFICATION_TRIGGER,
                "run_status": None,
                "run_updated_at": None,
                "run_updated_by": None,
            }
        ],
    }


def _changes_text(changes: dict[str, int] | None) -> str | None:
    if not changes:
        return None
    return (f"+{changes.get('add', 0)} ~{changes.get('change', 0)} -{changes.get('destroy', 0)} "
            f"±{changes.get('replace', 0)}")


def slack_message(facts: Facts, public_url: str) -> dict[str, Any]:
    """F3: a message Slack's incoming webhooks accept: `text` (shown in notifications and by
    clients without blocks) and blocks naming workspace, task, event, counts and what to run next."""
    naming = HCP[facts.event]
    text = f"{naming.message}: workspace {facts.workspace_name}, task {facts.task_id} ({facts.event.value})"
    fields = [
        {"type": "mrkdwn", "text": f"*Workspace*\n{facts.workspace_name}"},
        {"type": "mrkdwn", "text": f"*Task*\n{facts.task_id} ({facts.task_kind})"},
        {"type": "mrkdwn", "text": f"*Event*\n{facts.event.value}"},
        {"type": "mrkdwn", "text": f"*Changes*\n{_changes_text(facts.changes) or 'none recorded'}"},
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{naming.message} · {facts.workspace_name}"}},
        {"type": "section", "fields": fields},
    ]
    if facts.error:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Error*\n{facts.error[:2500]}"}})
    if facts.drift:
        drifted = "\n".join(f"`{d['address']}` {d['change']}: {', '.join(d.get('attributes') or []) or '-'}"
                            for d in facts.drift[:20])
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Drifted*\n{drifted[:2500]}"}})
    command = next_command(facts)
    if command:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"Next: `{command}`"}]})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{run_url(public_url, facts)}|run-"
                                                                              f"{facts.task_id}>"}]})
    return {"text": text, "blocks": blocks}


def slack_verification(name: str) -> dict[str, Any]:
    return {"text": f"Verification of {name}: iacctl notifications will arrive here."}


def encode(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent, and signed: compact JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def sign(body: bytes, token: bytes) -> str:
    """F3: hex HMAC-SHA512 of the exact body keyed with the token (HCP's notification signature)."""
    return hmac.new(token, body, hashlib.sha512).hexdigest()
