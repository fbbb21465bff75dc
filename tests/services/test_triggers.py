"""Run triggers end to end (SPEC F4, F1): the real `iacctl`, real Terraform, real SQLite (and
PostgreSQL where marked). An apply of a source workspace queues a plan of each follower, which
plans in the background and waits for confirmation; loops are refused when added; a workspace
reached twice while its triggered plan waits gets one task; `--only-if-changed` skips an apply
that changed nothing; a kill -9 between the apply and the queueing is made good by the sweep;
chains stop after 10 hops."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from iacctl.domain.triggers import MAX_HOPS
from tests.background import spawn
from tests.conftest import Env
from tests.fixtures.receivers import running_receiver


def _tasks_of(env: Env, workspace: str) -> list[dict[str, Any]]:
    return env.ok("tasks", "list", "--workspace", workspace, "--json").json()  # type: ignore[no-any-return]


def _wait_status(env: Env, workspace: str, status: str, count: int = 1, timeout: float = 90) -> list[dict[str, Any]]:
    """The workspace's tasks, once `count` of them have the status."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = _tasks_of(env, workspace)
        if len([t for t in tasks if t["status"] == status]) >= count:
            return tasks
        assert time.monotonic() < deadline, f"workspace {workspace} never had {count} {status} task(s): {tasks}"
        time.sleep(0.2)


def _triggered_by(env: Env, task_id: int) -> list[tuple[str, int]]:
    return [(s["workspace"], s["task"]) for s in env.task(task_id)["triggered_by"] or []]


def _notes(task: dict[str, Any]) -> list[str]:
    return [e["reason"] for e in task["history"] if e["kind"] == "note"]


def test_an_apply_queues_a_plan_of_the_follower_that_waits_for_confirmation(any_env: Env) -> None:
    env = any_env
    env.workspace("net")
    env.workspace("app")
    r = env.ok("workspace", "trigger", "add", "app", "--source", "net", "--json").json()
    assert (r["workspace"], r["source"], r["only_if_changed"], r["added"]) == ("app", "net", False, True)
    # workspace show says it both ways.
    assert env.ok("workspace", "show", "app", "--json").json()["triggers"] == {
        "follows": [{"workspace": "net", "only_if_changed": False}], "followed_by": []}
    assert "run triggers: its applies queue plans of app" in env.ok("workspace", "show", "net").out
    env.ok("plan", "net", "-q", code=2)
    started = time.monotonic()
    r = env.ok("confirm-apply", "1", "-q")
    assert time.monotonic() - started < 30  # the follower's plan does not hold up the command
    [app_task] = _wait_status(env, "app", "apply_pending")
    shown = env.task(app_task["id"])
    assert shown["triggered_by"] == [{"task": 1, "workspace": "net", "hop": 1}]
    assert shown["trigger_hops"] == 1
    assert shown["created_by"]["display"].startswith("run trigger of workspace net (")
    assert shown["created_by"]["run"] == "task 1"
    assert shown["confirmed_by"] is None  # never confirmed by itself
    assert "queued for workspace app by the run trigger of workspace net (task 1 applied)" in \
        shown["history"][0]["reason"]
    assert _notes(env.task(1)) == [f"run trigger: queued task {app_task['id']} in workspace app"]
    text = env.ok("tasks", "show", str(app_task["id"])).out
    assert "triggered by: workspace net (task 1)  (hop 1)" in text
    time.sleep(1)
    assert env.task(app_task["id"])["status"] == "apply_pending"  # it waits; nobody applies it
    [entry] = env.ok("outbox", "list", "--kind", "trigger", "--json").json()
    assert (entry["status"], entry["attempts"], entry["task"]) == ("delivered", 1, 1)
    env.ok("confirm-apply", str(app_task["id"]), "-q")
    assert env.ok("workspace", "trigger", "list", "app", "--json").json()[0]["source"] == "net"
    env.ok("workspace", "trigger", "remove", "app", "--source", "net")
    assert env.ok("workspace", "trigger", "list", "app", "--json").json() == []


def test_loops_of_one_two_and_three_are_refused_and_change_nothing(any_env: Env) -> None:
    env = any_env
    for name in ("a", "b", "c"):
        env.workspace(name)
    env.ok("workspace", "trigger", "add", "b", "--source", "a")
    env.ok("workspace", "trigger", "add", "c", "--source", "b")
    before = {n: env.ok("workspace", "trigger", "list", n, "--json").json() for n in ("a", "b", "c")}

    r = env.run("workspace", "trigger", "add", "a", "--source", "a")
    assert r.code == 64
    assert r.err.splitlines() == ["iacctl: workspace a cannot follow itself: its apply would queue its own plan, "
                                  "forever"]
    r = env.run("workspace", "trigger", "add", "a", "--source", "b")
    assert r.code == 5
    assert r.err.splitlines() == ["iacctl: workspace a cannot follow b: that would close a loop of run triggers "
                                  "(a -> b -> a), and each apply would queue the next plan forever"]
    r = env.run("workspace", "trigger", "add", "a", "--source", "c")
    assert r.code == 5 and "(a -> b -> c -> a)" in r.err and len(r.err.splitlines()) == 1
    after = {n: env.ok("workspace", "trigger", "list", n, "--json").json() for n in ("a", "b", "c")}
    assert after == before


def test_bad_input_unknown_workspace_and_a_21st_source(env: Env) -> None:
    env.workspace("app")
    r = env.run("workspace", "trigger", "add", "app", "--source", "nope")
    assert r.code == 64 and r.err.splitlines() == ["iacctl: unknown workspace 'nope'"]
    r = env.run("workspace", "trigger", "add", "nope", "--source", "app")
    assert r.code == 64
    r = env.run("workspace", "trigger", "list", "nope")
    assert r.code == 64
    r = env.run("workspace", "trigger", "remove", "app", "--source", "app")
    assert r.code == 64 and r.err.splitlines() == ["iacctl: workspace app does not follow app"]
    source_dir = env.config("simple", "src")
    for i in range(21):
        env.ok("workspace", "create", f"s{i:02}", "--dir", str(source_dir))
    for i in range(20):
        env.ok("workspace", "trigger", "add", "app", "--source", f"s{i:02}")
    # Adding one again is not a new source: it says so and changes nothing.
    again = env.ok("workspace", "trigger", "add", "app", "--source", "s00", "--json").json()
    assert again["added"] is False
    r = env.run("workspace", "trigger", "add", "app", "--source", "s20")
    assert r.code == 5
    assert r.err.splitlines() == ["iacctl: workspace app already follows 20 workspaces, the most it may (remove one "
                                  "with: iacctl workspace trigger remove app --source WORKSPACE)"]
    assert len(env.ok("workspace", "trigger", "list", "app", "--json").json()) == 20


def test_the_diamond_queues_one_plan_naming_both_sources(env: Env) -> None:
    for name in ("a", "b", "c", "d"):
        env.workspace(name)
    for follower, source in (("b", "a"), ("c", "a"), ("d", "b"), ("d", "c")):
        env.ok("workspace", "trigger", "add", follower, "--source", source)
    # d is held by an operator's lock: its triggered plan waits to start while b and c apply.
    env.ok("workspace", "lock", "d", "--reason", "maintenance")
    env.ok("plan", "a", "-q", code=2)
    env.ok("confirm-apply", "1", "-q")
    [b] = _wait_status(env, "b", "apply_pending")
    [c] = _wait_status(env, "c", "apply_pending")
    assert _triggered_by(env, b["id"]) == [("a", 1)] and _triggered_by(env, c["id"]) == [("a", 1)]
    env.ok("confirm-apply", str(b["id"]), "-q")
    env.ok("confirm-apply", str(c["id"]), "-q")
    [d] = _tasks_of(env, "d")
    assert d["status"] == "pending"
    shown = env.task(d["id"])
    assert shown["triggered_by"] == [{"task": b["id"], "workspace": "b", "hop": 2},
                                     {"task": c["id"], "workspace": "c", "hop": 2}]
    assert _notes(shown) == [f"also follows the apply of workspace c (task {c['id']}); it follows workspace b "
                             f"(task {b['id']}), workspace c (task {c['id']})"]
    assert _notes(env.task(c["id"])) == [f"run trigger: workspace d's triggered plan, task {d['id']}, not started "
                                         "yet, follows it too"]
    env.ok("workspace", "unlock", "d")
    env.ok("pods", "recover")  # the queue is kicked: the one plan of d runs
    _wait_status(env, "d", "apply_pending")
    assert len(_tasks_of(env, "d")) == 1


MOVED = """
resource "terraform_data" "renamed" {
  input = "net"
}

moved {
  from = terraform_data.net
  to   = terraform_data.renamed
}
"""


def test_only_if_changed_skips_an_apply_that_changed_no_resource_or_output(env: Env) -> None:
    src = env.root / "net-src"
    src.mkdir()
    (src / "main.tf").write_text('resource "terraform_data" "net" {\n  input = "net"\n}\n')
    env.ok("workspace", "create", "net", "--dir", str(src))
    env.workspace("app")
    env.ok("plan", "net", "-q", code=2)
    env.ok("confirm-apply", "1", "-q")
    env.ok("workspace", "trigger", "add", "app", "--source", "net", "--only-if-changed")

    # A moved block alone: Terraform has something to apply (the state's address), but no
    # resource and no output changes.
    (src / "main.tf").write_text(MOVED)
    env.ok("plan", "net", "-q", code=2)
    assert env.task(2)["changes"] == {"add": 0, "change": 0, "destroy": 0, "replace": 0, "outputs": 0}
    env.ok("confirm-apply", "2", "-q")
    assert env.task(2)["status"] == "applied"
    assert _tasks_of(env, "app") == []
    assert _notes(env.task(2)) == ["run trigger to workspace app skipped: it follows only applies that change "
                                   "resources or outputs, and this one changed none"]

    (src / "main.tf").write_text(MOVED.replace('input = "net"', 'input = "net-2"'))
    env.ok("plan", "net", "-q", code=2)
    env.ok("confirm-apply", "3", "-q")
    [app_task] = _wait_status(env, "app", "apply_pending")
    assert _triggered_by(env, app_task["id"]) == [("net", 3)]


def test_kill_9_after_the_apply_before_the_trigger_then_the_sweep_queues_it(env: Env, processes: list[Any]) -> None:
    env.workspace("net")
    env.workspace("app")
    env.workspace("web")
    env.ok("workspace", "trigger", "add", "app", "--source", "net")
    env.ok("workspace", "trigger", "add", "web", "--source", "net")
    env.ok("plan", "net", "-q", code=2)
    with running_receiver("hang_first") as receiver:
        env.ok("notify", "create", "ops", "--url", receiver.url, "--events", "applied", "--workspace", "net")
        # The command waits up to its budget for the `applied` notification, which never comes
        # back; its run triggers are handled after that wait. It is killed in the wait.
        env.vars["IACCTL_FOLLOW_UP_BUDGET"] = "60"
        confirm = spawn(env, processes, "confirm-apply", "1", "-q")
        del env.vars["IACCTL_FOLLOW_UP_BUDGET"]
        receiver.wait_for(1)  # the `applied` notification is out: the apply is committed
        assert env.task(1)["status"] == "applied"
        confirm.proc.kill()
        confirm.wait()
        receiver.release()
    [entry] = env.ok("outbox", "list", "--kind", "trigger", "--json").json()
    assert (entry["status"], entry["attempts"]) == ("pending", 0)
    assert _tasks_of(env, "app") == [] and _tasks_of(env, "web") == []
    # Meanwhile web is deleted. That command writes to the store, so at its end it also handles
    # the trigger entry that is due (issue 19 item 2: no cron, no sweep needed): web is gone by
    # then, which it says instead of failing.
    env.ok("workspace", "delete", "web")

    [app_task] = _wait_status(env, "app", "apply_pending")
    assert app_task["id"] == 2 and _triggered_by(env, 2) == [("net", 1)]
    assert _notes(env.task(1)) == ["run trigger: queued task 2 in workspace app",
                                   "run trigger: workspace web was deleted before its plan could be queued: nothing "
                                   "queued"]
    # Handled once: another sweep queues nothing more.
    assert [a for a in env.ok("pods", "recover", "--json").json() if a["action"] == "triggered"] == []
    assert len(_tasks_of(env, "app")) == 1


@pytest.mark.timeout(900)
def test_a_chain_of_triggers_stops_after_ten_hops_and_says_why(env: Env) -> None:
    names = [f"w{i:02}" for i in range(MAX_HOPS + 2)]
    source_dir = env.config("simple", "src")
    for name in names:
        env.ok("workspace", "create", name, "--dir", str(source_dir))
    for source, follower in itertools.pairwise(names):
        env.ok("workspace", "trigger", "add", follower, "--source", source)
    env.ok("plan", names[0], "-q", code=2)
    task_id = 1
    for hop in range(len(names) - 1):
        env.ok("confirm-apply", str(task_id), "-q")
        if hop == MAX_HOPS:
            break
        [nxt] = _wait_status(env, names[hop + 1], "apply_pending")
        assert env.task(nxt["id"])["trigger_hops"] == hop + 1
        task_id = nxt["id"]
    last = env.task(task_id)
    assert last["workspace"] == names[MAX_HOPS] and last["trigger_hops"] == MAX_HOPS
    assert _notes(last) == [f"run triggers of workspace {names[MAX_HOPS]} not followed after task {task_id}: the "
                            f"chain of triggered plans reached {MAX_HOPS} hops (this would be hop {MAX_HOPS + 1}); "
                            "a longer chain is taken for a mistake; queue the next plan by hand if it is meant"]
    time.sleep(1)
    assert _tasks_of(env, names[-1]) == []


def test_a_triggered_plan_plans_the_configuration_of_when_it_was_queued(env: Env) -> None:
    """Issue 18 item 1: the follower's plan is queued with its configuration as it is then (as HCP
    Terraform queues a triggered run), so an edit of the directory made while the plan waits for
    its turn is not what it plans, whichever machine runs it and whenever."""
    env.workspace("net")
    app_dir = env.workspace("app")
    env.ok("workspace", "trigger", "add", "app", "--source", "net")
    env.ok("plan", "app", "-q", code=2)  # task 1 holds app: the triggered plan will wait behind it
    env.ok("plan", "net", "-q", code=2)  # task 2
    env.ok("confirm-apply", "2", "-q")
    [queued] = [t for t in _tasks_of(env, "app") if t["id"] != 1]
    assert queued["status"] == "pending"
    (app_dir / "later.tf").write_text('resource "terraform_data" "added_later" {\n  input = "x"\n}\n')
    env.ok("cancel", "1")
    env.ok("pods", "recover")
    _wait_status(env, "app", "apply_pending")
    planned = env.ok("tasks", "plan", str(queued["id"]), "--json").json()
    assert {rc["address"] for rc in planned["resource_changes"]} == {"terraform_data.net", "terraform_data.db"}
