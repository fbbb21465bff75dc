"""The HCP Terraform request (SPEC R2, NOTES): every field, compact JSON, string ids, ISO-8601
time, absolute callback URL, HMAC-SHA512 over the exact bytes; reading callbacks leniently."""

from __future__ import annotations

import hashlib
import hmac
import json
import re

import pytest

from iacctl.runtasks import protocol

RUN = protocol.RunFacts(task_id=12, task_kind="plan_and_apply", task_created_at=1_800_000_000.0, created_by="ci-7",
                        workspace_id=3, workspace_name="net", working_directory="")
FIELDS = {
    "payload_version", "stage", "access_token", "capabilitites", "capabilities",
    "configuration_version_download_url", "configuration_version_id", "is_speculative", "organization_name",
    "plan_json_api_url", "run_app_url", "run_created_at", "run_created_by", "run_id", "run_message",
    "task_result_callback_url", "task_result_enforcement_level", "task_result_id", "vcs_branch",
    "vcs_commit_url", "vcs_pull_request_url", "vcs_repo_url", "workspace_app_url", "workspace_id",
    "workspace_name", "workspace_working_directory",
}


def _payload(stage: str, kind: str = "plan_and_apply") -> dict[str, object]:
    run = protocol.RunFacts(**{**RUN.__dict__, "task_kind": kind})
    return protocol.build_payload(stage=stage, access_token="tok", result_id=7, enforcement="mandatory",
                                  public_url="https://iacctl.example.com/", run=run)


def test_payload_has_every_field_hcp_terraform_sends() -> None:
    p = _payload("post_plan")
    assert set(p) == FIELDS
    assert p["payload_version"] == 1 and p["stage"] == "post_plan" and p["access_token"] == "tok"
    assert p["task_result_id"] == "7" and p["run_id"] == "run-12" and p["workspace_id"] == "ws-3"
    assert p["task_result_callback_url"] == "https://iacctl.example.com/api/v2/task-results/7/callback"
    assert p["plan_json_api_url"] == "https://iacctl.example.com/api/v2/task-results/7/plan-json"
    assert p["task_result_enforcement_level"] == "mandatory" and p["is_speculative"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", str(p["run_created_at"]))
    assert p["capabilitites"] == p["capabilities"] == {"outcomes": True}
    assert p["organization_name"] == "iacctl" and p["workspace_name"] == "net" and p["run_created_by"] == "ci-7"
    assert p["vcs_repo_url"] is None and p["configuration_version_download_url"] is None


@pytest.mark.parametrize(("stage", "has_plan"), [("pre_plan", False), ("post_plan", True), ("pre_apply", True),
                                                 ("post_apply", True)])
def test_plan_json_url_from_post_plan_on(stage: str, has_plan: bool) -> None:
    assert (_payload(stage)["plan_json_api_url"] is not None) is has_plan


def test_speculative_plans_say_so() -> None:
    assert _payload("post_plan", kind="plan")["is_speculative"] is True


def test_body_is_compact_json_and_signed_over_its_exact_bytes() -> None:
    body = protocol.encode(_payload("post_plan"))
    assert b", " not in body and b'": ' not in body
    assert json.loads(body)["task_result_id"] == "7"
    sig = protocol.sign(body, b"s3cret")
    assert sig == hmac.new(b"s3cret", body, hashlib.sha512).hexdigest() and len(sig) == 128
    assert protocol.sign(body, None) == "" and protocol.sign(body, b"") == ""
    assert protocol.sign(body + b" ", b"s3cret") != sig


def test_verification_payload_uses_test_token_and_placeholders() -> None:
    p = protocol.verification_payload("https://iacctl.invalid")
    assert set(p) == FIELDS
    assert p["access_token"] == "test-token" and p["task_result_id"] == "taskrs-verification"
    assert p["run_id"] == "run-verification" and p["workspace_id"] == "ws-verification"


def test_callback_read_leniently() -> None:
    cb = protocol.read_callback({"data": {"attributes": {"status": "running", "extra": 1}, "id": "x"}, "meta": {}})
    assert (cb.status, cb.message, cb.url, cb.outcomes) == ("running", None, None, [])
    cb = protocol.read_callback({"data": {"type": "task-results", "attributes": {
        "status": "failed", "message": "m", "url": "https://u"}, "relationships": {"outcomes": {"data": [
            {"type": "task-result-outcomes", "attributes": {"outcome-id": "A", "description": "d", "tags": {}}},
            "not an object"]}}}})
    assert cb.status == "failed" and cb.outcomes == [
        {"outcome_id": "A", "description": "d", "body": None, "url": None, "tags": {}}]


@pytest.mark.parametrize("doc", [None, [], {}, {"data": 1}, {"data": {"attributes": []}},
                                 {"data": {"attributes": {"status": "PASSED"}}},
                                 {"data": {"type": "runs", "attributes": {"status": "passed"}}}])
def test_callback_without_known_status_is_refused(doc: object) -> None:
    with pytest.raises(protocol.BadCallback):
        protocol.read_callback(doc)
