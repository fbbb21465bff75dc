"""Inventory rules (SPEC F2), pure: what a state JSON holds, how a sync changes the inventory,
and that no attribute but `id` is read out of the state (X2)."""

from __future__ import annotations

import json

from iacctl.domain.inventory import diff, newer, resources_of_state

STATE = {
    "version": 4, "serial": 7, "lineage": "l-1",
    "resources": [
        {"mode": "managed", "type": "terraform_data", "name": "net",
         "provider": "provider[\"terraform.io/builtin/terraform\"]",
         "instances": [{"attributes": {"id": "abc", "input": "secret-ish", "output": "x"}}]},
        {"module": "module.db", "mode": "managed", "type": "aws_db_instance", "name": "main", "each": "list",
         "provider": "provider[\"registry.terraform.io/hashicorp/aws\"]",
         "instances": [{"index_key": 0, "attributes": {"id": "db-0", "password": "hunter2"}},
                       {"index_key": 1, "attributes": {"id": "db-1", "password": "hunter2"}}]},
        {"mode": "data", "type": "aws_region", "name": "here", "provider": "provider[\"x\"]", "each": "map",
         "instances": [{"index_key": "eu", "attributes": {"id": "eu-west-1"}}]},
        {"mode": "managed", "type": "random_password", "name": "pw", "provider": "provider[\"r\"]",
         "instances": [{"attributes": {"id": "the-password", "result": "the-password"},
                        "sensitive_attributes": [[{"type": "get_attr", "value": "id"}]]}]},
    ],
}


def test_every_instance_with_its_identity() -> None:
    got = {r.address: r for r in resources_of_state(STATE)}
    assert sorted(got) == ['data.aws_region.here["eu"]', "module.db.aws_db_instance.main[0]",
                           "module.db.aws_db_instance.main[1]", "random_password.pw", "terraform_data.net"]
    db1 = got["module.db.aws_db_instance.main[1]"]
    assert (db1.module, db1.mode, db1.type, db1.name, db1.index, db1.resource_id) == (
        "module.db", "managed", "aws_db_instance", "main", "1", "db-1")
    region = got['data.aws_region.here["eu"]']
    assert (region.mode, region.index, region.resource_id) == ("data", '"eu"', "eu-west-1")
    assert got["terraform_data.net"].provider == 'provider["terraform.io/builtin/terraform"]'


def test_no_attribute_but_id_and_no_sensitive_id_is_kept() -> None:
    kept = json.dumps([r.as_dict() for r in resources_of_state(STATE)])
    assert "hunter2" not in kept and "secret-ish" not in kept
    assert "the-password" not in kept  # Terraform marks that id sensitive
    assert {r.address: r.resource_id for r in resources_of_state(STATE)}["random_password.pw"] is None


def test_an_empty_state_has_no_resources() -> None:
    assert resources_of_state({"version": 4, "resources": []}) == []
    assert resources_of_state({}) == []


def test_diff_adds_keeps_and_removes() -> None:
    first = resources_of_state(STATE)
    change = diff([], first)
    assert len(change.added) == 5 and change.kept == [] and change.removed == []
    second = [r for r in first if r.type != "aws_db_instance"]
    change = diff([r.address for r in first], second)
    assert change.added == [] and len(change.kept) == 3
    assert change.removed == ["module.db.aws_db_instance.main[0]", "module.db.aws_db_instance.main[1]"]
    # A removed resource that comes back is added again.
    change = diff([r.address for r in second], first)
    assert [r.address for r in change.added] == ["module.db.aws_db_instance.main[0]",
                                                 "module.db.aws_db_instance.main[1]"]


def test_only_a_newer_serial_is_applied() -> None:
    assert newer(1, None)
    assert newer(5, 4)
    assert not newer(4, 4)
    assert not newer(3, 4)
