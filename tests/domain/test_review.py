"""Issue 9, pure rules: what a plan changes (resource by resource, counts beside Terraform's own
Plan line, sensitive values masked), Terraform's reason for failing, who acts, how long each
stage took, what Terraform sees of the caller's environment."""

from __future__ import annotations

from typing import Any

import pytest

from iacctl.domain.actors import actor_from, actor_view, check_message
from iacctl.domain.diagnostics import terraform_diagnostic
from iacctl.domain.environment import caller_environment
from iacctl.domain.names import did_you_mean
from iacctl.domain.plans import (
    SENSITIVE,
    ChangeCounts,
    count_changes,
    redact_plan,
    relation_to_terraform,
    resource_changes,
    terraform_plan_line,
)
from iacctl.domain.timeline import Event, stage_times
from iacctl.errors import UsageError


def _rc(address: str, actions: list[str], **change: Any) -> dict[str, Any]:
    return {"address": address, "change": {"actions": actions, **change}}


PLAN: dict[str, Any] = {
    "variables": {"token": {"value": "s3cr3t-token"}, "region": {"value": "eu"}},
    "configuration": {"root_module": {"variables": {"token": {"sensitive": True}, "region": {}}}},
    "resource_changes": [
        _rc("terraform_data.new", ["create"], before=None, after={"input": "a"}),
        _rc("terraform_data.web", ["update"], before={"input": "old", "id": "1", "password": "hunter2"},
            after={"input": "new", "id": "1", "password": "hunter3"}, after_unknown={"output": True},
            before_sensitive={"password": True}, after_sensitive={"password": True}),
        _rc("terraform_data.db", ["delete", "create"], before={"input": "x"}, after={"input": "y"},
            replace_paths=[["input"]]),
        _rc("terraform_data.gone", ["delete"], before={"input": "z"}, after=None),
        _rc("data.terraform_remote_state.r", ["read"]),
        _rc("terraform_data.same", ["no-op"], before={"input": "q"}, after={"input": "q"}),
    ],
    "output_changes": {"o": {"actions": ["update"], "before": "1", "after": "2"}},
    "planned_values": {"outputs": {"secret": {"sensitive": True, "value": "s3cr3t-token"}},
                       "root_module": {"resources": [{"values": {"password": "hunter3", "x": 1},
                                                      "sensitive_values": {"password": True}}]}},
}


def test_each_resource_change_has_its_action_and_what_changes() -> None:
    changes = {c.address: c for c in resource_changes(PLAN)}
    assert [(c.address, c.action) for c in resource_changes(PLAN)] == [
        ("terraform_data.new", "create"), ("terraform_data.web", "update"), ("terraform_data.db", "replace"),
        ("terraform_data.gone", "delete"), ("data.terraform_remote_state.r", "read")]
    assert changes["terraform_data.web"].changes == (
        'input: "old" -> "new"', "output: null -> (known after apply)", f"password: {SENSITIVE} changed")
    assert changes["terraform_data.db"].changes == ('input: "x" -> "y" (forces replacement)',)
    assert "hunter" not in repr(changes)


def test_replacements_count_once_and_the_relation_to_terraforms_plan_line_is_said() -> None:
    counts = count_changes(PLAN)
    assert counts == ChangeCounts(add=1, change=1, destroy=1, replace=1, outputs=1)
    # Terraform counts the replacement as an add and a destroy.
    assert terraform_plan_line(counts) == "Plan: 2 to add, 1 to change, 2 to destroy."
    assert "one add and one destroy" in (relation_to_terraform(counts) or "")
    assert relation_to_terraform(ChangeCounts(add=2)) is None


def test_the_plan_json_keeps_terraforms_shape_with_every_sensitive_value_masked() -> None:
    doc = redact_plan(PLAN, secrets=["hunter3"])
    text = repr(doc)
    assert "hunter2" not in text and "hunter3" not in text and "s3cr3t-token" not in text
    assert doc["variables"]["token"]["value"] == SENSITIVE
    assert doc["variables"]["region"]["value"] == "eu"
    assert doc["resource_changes"][1]["change"]["before"]["password"] == SENSITIVE
    assert doc["planned_values"]["root_module"]["resources"][0]["values"] == {"password": SENSITIVE, "x": 1}
    assert doc.keys() == PLAN.keys()
    assert PLAN["variables"]["token"]["value"] == "s3cr3t-token"  # the stored document is not changed


BOXED = [
    "\x1b[31m╷\x1b[0m\x1b[0m",
    "\x1b[31m│\x1b[0m \x1b[0m\x1b[1m\x1b[31mError: \x1b[0m\x1b[0m\x1b[1mNo value for required variable\x1b[0m",
    "\x1b[31m│\x1b[0m \x1b[0m",
    "\x1b[31m│\x1b[0m \x1b[0m\x1b[0m  on main.tf line 1:",
    '\x1b[31m│\x1b[0m \x1b[0m   1: \x1b[4mvariable "must"\x1b[0m {\x1b[0m',
    "\x1b[31m│\x1b[0m \x1b[0m",
    '\x1b[31m│\x1b[0m \x1b[0mThe root module input variable "must" is not set, and has no default value.',
    "\x1b[31m│\x1b[0m \x1b[0mUse a -var or -var-file command line argument to provide a value for this",
    "\x1b[31m│\x1b[0m \x1b[0mvariable.",
    "\x1b[31m╵\x1b[0m\x1b[0m",
]
PLAIN = ["Planning failed.", "", "Error: No value for required variable", "", "  on main.tf line 1:",
         '   1: variable "must" {', "",
         'The root module input variable "must" is not set, and has no default value.',
         "Use a -var or -var-file command line argument to provide a value for this", "variable.", "",
         "Error: Another one", "", "detail"]


@pytest.mark.parametrize("lines", [BOXED, PLAIN], ids=["colours-and-box", "no-color"])
def test_terraforms_first_error_and_its_detail_make_the_reason(lines: list[str]) -> None:
    reason = terraform_diagnostic(lines)
    assert reason is not None
    assert reason.startswith('Error: No value for required variable: The root module input variable "must" is not '
                             "set, and has no default value. Use a -var or -var-file command line argument")
    assert "main.tf line 1" not in reason
    assert reason.endswith("(and 1 more error)") == (lines is PLAIN)
    assert terraform_diagnostic(["Apply complete!"]) is None


def test_the_general_error_of_init_gives_way_to_the_real_one() -> None:
    lines = ["Error: Terraform encountered problems during initialisation, including problems",
             "with the configuration, described below.", "", "Error: Unclosed configuration block", "",
             '  on main.tf line 1, in resource "terraform_data" "oops":', '   1: resource "terraform_data" "oops" {',
             "", "There is no closing brace for this block before the end of the file."]
    assert terraform_diagnostic(lines) == ("Error: Unclosed configuration block: There is no closing brace for this "
                                           "block before the end of the file.")


def test_who_acts_comes_from_the_ci_system_or_iacctl_actor() -> None:
    assert actor_from({}, "alice", "vm").display() == "alice@vm"
    gh = actor_from({"GITHUB_ACTIONS": "true", "GITHUB_ACTOR": "octocat", "GITHUB_REPOSITORY": "org/infra",
                     "GITHUB_RUN_ID": "42", "GITHUB_SERVER_URL": "https://github.com"}, "runner", "gh-1")
    assert gh.display() == "octocat via GitHub Actions (runner@gh-1, https://github.com/org/infra/actions/runs/42)"
    gl = actor_from({"GITLAB_CI": "true", "GITLAB_USER_LOGIN": "bob", "CI_JOB_URL": "https://gl/j/7"}, "r", "h")
    assert (gl.identity, gl.ci, gl.run) == ("bob", "GitLab CI", "https://gl/j/7")
    named = actor_from({"IACCTL_ACTOR": "deploy-bot", "GITHUB_ACTIONS": "true"}, "r", "h")
    assert named.display() == "deploy-bot (r@h)"
    view = actor_view(named.with_message("ship it").to_json())
    assert view is not None and view["message"] == "ship it" and view["display"] == "deploy-bot (r@h)"
    with pytest.raises(UsageError):
        check_message("a\nb")


def test_a_stage_lasts_until_the_next_stage_or_status_change() -> None:
    events = [Event(0.0, "status", "running"), Event(1.0, "stage", "init"), Event(3.0, "note", None),
              Event(4.0, "stage", "planning"), Event(9.0, "status", "apply_pending"),
              Event(100.0, "status", "running"), Event(101.0, "stage", "applying")]
    times = stage_times(events, now=111.0, running=True)
    assert [(t.stage, t.seconds, t.running) for t in times] == [
        ("init", 3.0, False), ("planning", 5.0, False), ("applying", 10.0, True)]


def test_terraform_gets_the_allowlist_of_the_callers_environment_only() -> None:
    caller = {"PATH": "/bin", "HOME": "/h", "HTTPS_PROXY": "p", "SSL_CERT_FILE": "c", "LC_ALL": "C",
              "TF_PLUGIN_CACHE_DIR": "/cache", "TF_VAR_must": "x", "TF_CLI_ARGS": "-destroy",
              "TF_CLI_ARGS_plan": "-x", "TF_WORKSPACE": "prod", "AWS_SECRET_ACCESS_KEY": "k"}
    assert caller_environment(caller) == {"PATH": "/bin", "HOME": "/h", "HTTPS_PROXY": "p", "SSL_CERT_FILE": "c",
                                          "LC_ALL": "C", "TF_PLUGIN_CACHE_DIR": "/cache"}


def test_a_near_miss_gets_a_did_you_mean() -> None:
    assert did_you_mean("nett", ["net", "web"]) == "; did you mean 'net'?"
    assert did_you_mean("zzz", ["net", "web"]) == ""


def test_a_changed_sensitive_attribute_shows_as_changed_and_no_part_of_a_long_secret_shows() -> None:
    """Issue 24 item 4: compared as planned, shown masked; a secret longer than the shortened
    text is masked before it is cut, so no prefix of it is left."""
    long_secret = "s3cr3t-" + "x" * 60
    plan = {"resource_changes": [_rc(
        "terraform_data.secret", ["update"],
        before={"input": "pw-old", "output": f"pw-{long_secret}"}, after={"input": "pw-new"},
        after_unknown={"output": True}, before_sensitive={"input": True}, after_sensitive={"input": True})]}
    [change] = resource_changes(plan, [long_secret])
    assert change.changes == (f"input: {SENSITIVE} changed", f'output: "pw-{SENSITIVE}" -> (known after apply)')
