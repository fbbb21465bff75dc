"""The wire formats (SPEC F3): HCP Terraform's notification payload version 1 field by field, its
verification payload, the signature over the exact body, and Slack's message."""

from __future__ import annotations

import hashlib
import hmac
import json

from iacctl.domain.notifications import Event, Facts
from iacctl.notify import payload

FACTS = Facts(event=Event.NEEDS_CONFIRMATION, task_id=7, task_kind="plan_and_apply", status="apply_pending",
              workspace_id=3, workspace_name="net", created_at=1_800_000_000.25, updated_at=1_800_000_042.5,
              actor="ci-runner-1", plan_hash="ab" * 32,
              changes={"add": 2, "change": 1, "destroy": 0, "replace": 0, "outputs": 1})

HCP_FIELDS = ["payload_version", "notification_configuration_id", "run_url", "run_id", "run_message",
              "run_created_at", "run_created_by", "workspace_id", "workspace_name", "organization_name",
              "notifications"]


def test_generic_payload_is_hcp_terraforms_version_1_with_one_extra_key() -> None:
    doc = payload.generic_payload(destination_id=4, facts=FACTS, public_url="https://iacctl.example.com/",
                                  event_id="notification:4:task-7:needs_confirmation:1", attempt=2)
    assert list(doc) == [*HCP_FIELDS, "iacctl"]
    assert doc["payload_version"] == 1
    assert doc["notification_configuration_id"] == "nc-4"
    assert doc["run_id"] == "run-7"
    assert doc["run_url"] == "https://iacctl.example.com/app/iacctl/workspaces/net/runs/run-7"
    assert doc["run_created_at"] == "2027-01-15T08:00:00.250Z"
    assert doc["workspace_id"] == "ws-3" and doc["workspace_name"] == "net"
    assert doc["notifications"] == [{"message": "Run Needs Attention", "trigger": "run:needs_attention",
                                     "run_status": "planned", "run_updated_at": "2027-01-15T08:00:42.500Z",
                                     "run_updated_by": "ci-runner-1"}]
    assert doc["iacctl"]["attempt"] == 2 and doc["iacctl"]["next_command"] == "iacctl confirm-apply 7"
    assert doc["iacctl"]["changes"]["add"] == 2 and doc["iacctl"]["plan_hash"] == "ab" * 32


def test_run_message_is_the_tasks_message_else_what_iacctl_says() -> None:
    """Issue 19 item 7: HCP's run_message is the run's message: the task's --message."""
    from dataclasses import replace

    with_message = replace(FACTS, message="rotate the db password")
    doc = payload.generic_payload(destination_id=4, facts=with_message, public_url="http://h", event_id="e", attempt=1)
    assert doc["run_message"] == "rotate the db password"
    doc = payload.generic_payload(destination_id=4, facts=FACTS, public_url="http://h", event_id="e", attempt=1)
    assert doc["run_message"] == "iacctl task 7 (plan_and_apply)"


def test_drift_is_hcps_assessment_notification_version_2() -> None:
    from dataclasses import replace

    drift = replace(FACTS, event=Event.DRIFT_DETECTED, task_kind="drift_check", changes=None,
                    drift=[{"address": "a.b", "change": "updated", "attributes": ["x"]}])
    doc = payload.generic_payload(destination_id=4, facts=drift, public_url="https://h/", event_id="e", attempt=1)
    assert list(doc) == ["payload_version", "notification_configuration_id", "notification_configuration_url",
                         "trigger_scope", "trigger", "message", "details", "iacctl"]
    assert (doc["payload_version"], doc["trigger_scope"], doc["trigger"]) == (2, "assessment", "assessment:drifted")
    assert doc["notification_configuration_url"] == "https://h/api/v2/notification-configurations/nc-4"
    result = doc["details"]["new_assessment_result"]
    assert list(result) == ["id", "url", "succeeded", "drifted", "all_checks_succeeded", "resources_drifted",
                            "resources_undrifted", "checks_passed", "checks_failed", "checks_errored", "created_at"]
    assert (result["id"], result["drifted"], result["resources_drifted"]) == ("asmtres-7", True, 1)
    assert result["created_at"] == "2027-01-15T08:00:42.500Z"
    assert doc["details"]["workspace_name"] == "net" and doc["details"]["organization_name"] == "iacctl"


def test_signature_is_hex_hmac_sha512_of_the_exact_compact_body() -> None:
    doc = payload.generic_payload(destination_id=1, facts=FACTS, public_url="http://h", event_id="e", attempt=1)
    body = payload.encode(doc)
    assert body == json.dumps(doc, separators=(",", ":")).encode()  # compact: no spaces between tokens
    assert payload.sign(body, b"tok") == hmac.new(b"tok", body, hashlib.sha512).hexdigest()


def test_verification_payload_has_run_fields_null() -> None:
    doc = payload.verification_payload(9, "ops")
    assert list(doc) == HCP_FIELDS
    assert doc["notification_configuration_id"] == "nc-9"
    assert all(doc[k] is None for k in HCP_FIELDS if k not in ("payload_version", "notification_configuration_id",
                                                              "notifications"))
    assert doc["notifications"][0]["trigger"] == "verification"
    assert doc["notifications"][0]["run_status"] is None


def test_slack_message_names_workspace_task_event_counts_and_next_command() -> None:
    msg = payload.slack_message(FACTS, "http://h")
    assert msg["text"].startswith("Run Needs Attention: workspace net, task 7")
    text = json.dumps(msg["blocks"])
    for part in ("*Workspace*\\nnet", "*Task*\\n7", "*Event*\\nneeds_confirmation", "+2 ~1 -0",
                 "iacctl confirm-apply 7"):
        assert part in text
