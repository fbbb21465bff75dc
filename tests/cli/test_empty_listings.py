"""Issue 21 item 3: a filter that matches nothing says so, with the filter; an empty store says
how the listing gets filled."""

from __future__ import annotations

from tests.conftest import Env


def test_no_match_is_not_empty_and_empty_says_how_it_fills(env: Env) -> None:
    def said(*args: str) -> str:
        return env.ok(*args).out.strip()

    assert said("tasks", "list") == "no tasks yet: iacctl plan WORKSPACE starts one"
    assert said("inventory", "list") == ("the inventory is empty: it is filled after each apply "
                                         "(iacctl confirm-apply)")
    assert said("outbox", "list").startswith("the outbox is empty: notifications, run triggers and inventory")
    assert said("notify", "deliveries").startswith("no deliveries yet:")
    assert said("notify", "list").startswith("no notification destinations: iacctl notify create")
    assert said("workspace", "list") == "no workspaces yet: iacctl workspace create NAME --dir DIR"

    env.workspace("net")
    assert said("tasks", "list", "-w", "net", "--status", "failed") == "no tasks match --workspace net --status failed"
    assert said("inventory", "list", "--type", "nosuchtype") == "no resources match --type nosuchtype"
    assert said("inventory", "list", "net") == "no resources match workspace net"
    assert said("outbox", "list", "--status", "pending") == "no outbox entries match --status pending"
    assert said("notify", "deliveries", "--failed") == "no deliveries match --failed"
    assert said("workspace", "var", "list", "net") == ("workspace net has no variables: "
                                                       "iacctl workspace var set net KEY VALUE")
