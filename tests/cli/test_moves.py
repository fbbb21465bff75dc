"""Issue 19 item 7: a plan that only moves resources (moved blocks) says so."""

from __future__ import annotations

from tests.conftest import Env


def test_a_plan_of_one_move_says_no_changes_1_move(env: Env) -> None:
    src = env.workspace("net")
    env.ok("plan", "net", "-q", code=2)
    env.ok("confirm-apply", "1", "-q")
    main = src / "main.tf"
    text = main.read_text().replace('resource "terraform_data" "net"', 'resource "terraform_data" "network"')
    text = text.replace("terraform_data.net.output", "terraform_data.network.output")
    main.write_text(text + '\nmoved {\n  from = terraform_data.net\n  to   = terraform_data.network\n}\n')
    r = env.run("plan", "net", "-q")
    assert r.code == 2, r.err
    assert "task 2: plan has changes (no changes; 1 move); review it with: iacctl tasks plan 2" in r.out
    task = env.task(2)
    assert task["moves"] == 1 and task["changes"]["add"] == 0
