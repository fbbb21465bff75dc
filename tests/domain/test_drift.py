"""Drift as pure rules (SPEC F5, issue 12 item 2): reading resource_drift, the fingerprint that
decides whether a drift notification goes out, and which workspaces a check leaves alone."""

from __future__ import annotations

from typing import Any

from iacctl.domain.drift import (
    DELETED,
    UPDATED,
    DriftedResource,
    TaskFacts,
    differing_attributes,
    fingerprint,
    notify_drift,
    parse_resource_drift,
    skip_reason,
)
from iacctl.domain.notifications import Event, sent_for
from iacctl.domain.plans import redact_plan, resource_drift


def _drift(address: str, actions: list[str], before: Any, after: Any, **extra: Any) -> dict[str, Any]:
    return {"address": address, "mode": "managed", "type": address.split(".")[0], "name": address.split(".")[1],
            "change": {"actions": actions, "before": before, "after": after, **extra}}


PLAN = {
    "format_version": "1.2",
    "resource_drift": [
        _drift("filedrift_file.b", ["delete"], {"path": "/b", "content": "beta"}, None),
        _drift("filedrift_file.a", ["update"], {"path": "/a", "content": "alpha", "id": "/a"},
               {"path": "/a", "content": "changed", "id": "/a"}),
    ],
    "resource_changes": [],
}


def test_resource_drift_gives_addresses_kinds_and_attribute_names_sorted_by_address() -> None:
    assert parse_resource_drift(PLAN) == [
        DriftedResource("filedrift_file.a", UPDATED, ("content",)),
        DriftedResource("filedrift_file.b", DELETED),
    ]


def test_no_resource_drift_is_no_drift() -> None:
    assert parse_resource_drift({"format_version": "1.2"}) == []
    assert parse_resource_drift({"resource_drift": None}) == []
    assert fingerprint([]) is None


def test_attribute_names_only_never_values() -> None:
    secret = {"path": "/a", "password": "hunter2-old"}
    found = parse_resource_drift({"resource_drift": [
        _drift("x.a", ["update"], secret, {**secret, "password": "hunter2-new"},
               before_sensitive={"password": True}, after_sensitive={"password": True})]})
    assert found == [DriftedResource("x.a", UPDATED, ("password",))]
    assert "hunter2" not in repr(found) and "hunter2" not in str(found[0].as_json())


def test_differing_attributes_counts_nested_values_by_their_top_level_name() -> None:
    assert differing_attributes({"tags": {"a": 1}, "n": 1}, {"tags": {"a": 2}, "n": 1}) == ("tags",)
    assert differing_attributes({"a": 1}, {"a": 1, "b": None}) == ()
    assert differing_attributes(None, {"a": 1}) == ()


def test_the_same_drift_in_another_order_has_the_same_fingerprint() -> None:
    a = DriftedResource("x.a", UPDATED, ("content", "mode"))
    b = DriftedResource("x.b", DELETED)
    assert fingerprint([a, b]) == fingerprint([b, DriftedResource("x.a", UPDATED, ("mode", "content"))])
    assert fingerprint([a]) != fingerprint([a, b])
    assert fingerprint([a]) != fingerprint([DriftedResource("x.a", UPDATED, ("content",))])
    assert fingerprint([b]) != fingerprint([DriftedResource("x.b", UPDATED, ())])


def test_a_notification_only_for_a_new_or_changed_drifted_set() -> None:
    one = fingerprint([DriftedResource("x.a", UPDATED, ("content",))])
    two = fingerprint([DriftedResource("x.a", UPDATED, ("content",)), DriftedResource("x.b", DELETED)])
    assert notify_drift(None, one)  # new
    assert not notify_drift(one, one)  # the same again
    assert notify_drift(one, two)  # changed
    assert not notify_drift(two, None)  # no drift now: nothing to say


def test_busy_and_failed_workspaces_are_skipped_with_the_reason() -> None:
    assert skip_reason("net", [], None) is None
    assert skip_reason("net", [], TaskFacts(4, "plan_and_apply", "applied")) is None
    busy = skip_reason("net", [TaskFacts(7, "plan_and_apply", "apply_pending"), TaskFacts(9, "plan", "running")],
                       TaskFacts(9, "plan", "running"))
    assert busy is not None and busy.startswith("workspace net is busy: task 7 (plan_and_apply) is apply_pending")
    failed = skip_reason("net", [], TaskFacts(5, "plan_and_apply", "failed"))
    assert failed is not None and "last task 5 (plan_and_apply) failed" in failed
    assert "\n" not in busy + failed  # one line each


def test_drift_in_the_plan_json_and_review_is_masked_where_terraform_marks_it_sensitive() -> None:
    plan = {"resource_drift": [
        _drift("x.a", ["update"], {"password": "old-secret", "n": 1}, {"password": "new-secret", "n": 2},
               before_sensitive={"password": True}, after_sensitive={"password": True})]}
    assert "secret" not in repr(redact_plan(plan))  # tasks plan --json
    (change,) = resource_drift(plan)  # tasks plan
    assert change.address == "x.a" and change.action == "update"
    assert change.changes == ("n: 1 -> 2", "password: (sensitive value) changed")


def test_a_drift_check_sends_only_what_it_found_and_its_failure() -> None:
    assert [e for e in Event if sent_for("drift_check", e)] == [Event.FAILED, Event.DRIFT_DETECTED]
    assert all(sent_for("plan", e) and sent_for("plan_and_apply", e) for e in Event)
