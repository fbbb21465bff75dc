"""Issue 9, end to end with the installed command: review the plan before confirming, who did
what, why a task failed, when each stage ran, what Terraform sees of the caller's environment,
deleting what you made, a terminal that reads well, completion that knows your things."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.background import Background, spawn, wait_log
from tests.conftest import Env
from tests.terminal import run_on_a_terminal

REPO = Path(__file__).resolve().parents[2]
TOKEN = "tok-Secret-4711"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def review_workspace(env: Env, name: str = "app") -> None:
    env.workspace(name, "review")
    env.ok("workspace", "var", "set", name, "token", TOKEN, "--sensitive")


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- 1, 2: the plan, reviewable; confirm-apply restates it -----------------------------------------


def test_the_plan_is_reviewed_as_a_table_and_json_then_restated_by_confirm_apply(env: Env) -> None:
    review_workspace(env)
    env.ok("plan", "app", "-q", code=2)
    env.ok("confirm-apply", "1", "-q")
    env.ok("workspace", "var", "set", "app", "size", "large")
    planned = env.ok("plan", "app", code=2)
    assert "review it with: iacctl tasks plan 2" in planned.out

    review = env.ok("tasks", "plan", "2").out
    rows = {line.split()[0]: line for line in review.splitlines() if line.startswith("terraform_data.")}
    assert set(rows) == {"terraform_data.app", "terraform_data.db"}
    assert rows["terraform_data.app"].split()[1] == "update"
    assert 'input: "app-small" -> "app-large"' in rows["terraform_data.app"]
    assert rows["terraform_data.db"].split()[1] == "replace"
    assert '["large"] (forces replacement)' in rows["terraform_data.db"]
    assert "0 to add, 1 to change, 0 to destroy, 1 to replace" in review
    # The summary and Terraform's own Plan line never contradict each other: it is said how.
    terraform_line = next(line for line in env.ok("tasks", "logs", "2").out.splitlines() if line.startswith("Plan:"))
    assert terraform_line == "Plan: 1 to add, 1 to change, 1 to destroy."
    assert f"Terraform counts each replacement as one add and one destroy: {terraform_line}" in review

    doc = json.loads(env.ok("tasks", "plan", "2", "--json").out)
    assert {"format_version", "terraform_version", "resource_changes", "planned_values"} <= doc.keys()
    assert [rc["change"]["actions"] for rc in doc["resource_changes"] if rc["address"] == "terraform_data.db"] == [
        ["delete", "create"]]
    assert TOKEN not in json.dumps(doc) and TOKEN not in review
    assert doc["variables"]["token"]["value"] == "(sensitive value)"

    # confirm-apply restates what it applies on stderr; --json keeps stdout one document.
    task = env.task(2)
    applied = env.ok("confirm-apply", "2", "--json", "-q")
    assert json.loads(applied.out)["status"] == "applied"
    restated = next(line for line in applied.err.splitlines() if "about to apply" in line)
    assert restated.startswith(f"iacctl: about to apply task 2 of workspace app: plan {task['plan_hash'][:16]}, "
                               "0 to add, 1 to change, 0 to destroy, 1 to replace")
    assert re.search(r"planned \d+s ago", restated)
    assert "Plan: 1 to add, 1 to change, 1 to destroy." in restated

    # The work directory is gone; the stored plan is still there to review.
    assert not any(env.work_root.glob("local/local/slot-*/tfplan"))
    assert rows["terraform_data.app"] in env.ok("tasks", "plan", "2").out
    assert re.search(r"^terraform_data\.secret +create", env.ok("tasks", "plan", "1").out, flags=re.M)


# -- 3: who and why ---------------------------------------------------------------------------------


GITHUB = {"GITHUB_ACTIONS": "true", "GITHUB_ACTOR": "octocat", "GITHUB_REPOSITORY": "org/infra",
          "GITHUB_RUN_ID": "4242", "GITHUB_SERVER_URL": "https://github.com"}


def test_every_task_records_who_created_confirmed_or_cancelled_it(env: Env) -> None:
    env.workspace("net")
    env.ok("plan", "net", "-q", "--message", "resize the net", extra_env=GITHUB, code=2)
    env.ok("confirm-apply", "1", "-q", "-m", "ship it", extra_env={"IACCTL_ACTOR": "alice"})
    view = env.task(1)
    created, confirmed = view["created_by"], view["confirmed_by"]
    assert (created["identity"], created["ci"], created["run"], created["message"]) == (
        "octocat", "GitHub Actions", "https://github.com/org/infra/actions/runs/4242", "resize the net")
    assert (confirmed["identity"], confirmed["message"]) == ("alice", "ship it")
    assert view["cancelled_by"] is None
    reasons = [h["reason"] for h in view["history"] if h["kind"] == "status"]
    assert reasons[0] == (f"plan_and_apply queued for workspace net by {created['display']}: "
                          '"resize the net"')
    assert f'confirmed by {confirmed["display"]}: "ship it"' in reasons
    shown = env.ok("tasks", "show", "1").out
    assert f'  created by: {created["display"]}: "resize the net"' in shown
    assert f'  confirmed by: alice ({confirmed["user"]}@{confirmed["host"]}): "ship it"' in shown

    env.ok("workspace", "var", "set", "net", "region", "eu-west-2")
    env.ok("plan", "net", "-q", extra_env={"GITLAB_CI": "true", "GITLAB_USER_LOGIN": "bob",
                                           "CI_JOB_URL": "https://gitlab.example/infra/-/jobs/7"}, code=2)
    env.ok("cancel", "2")
    view = env.task(2)
    assert view["created_by"]["display"].startswith("bob via GitLab CI (")
    assert view["created_by"]["run"] == "https://gitlab.example/infra/-/jobs/7"
    cancelled = view["cancelled_by"]
    assert cancelled["identity"] is None and cancelled["display"] == f"{cancelled['user']}@{cancelled['host']}"
    assert f"cancelled by {cancelled['display']}" in [h["reason"] for h in view["history"]]
    assert f"  cancelled by: {cancelled['display']}" in env.ok("tasks", "show", "2").out


# -- 4, 6: failures say why; Terraform sees only the workspace ----------------------------------------


def test_a_callers_tf_var_does_not_reach_terraform_and_the_failure_says_why(env: Env) -> None:
    src = env.root / "src-novar"
    src.mkdir()
    (src / "main.tf").write_text('variable "must" {\n  type = string\n}\n\nresource "terraform_data" "x" {\n'
                                 "  input = var.must\n}\n")
    env.ok("workspace", "create", "novar", "--dir", str(src))

    r = env.run("plan", "novar", "-q", extra_env={"TF_VAR_must": "x", "TF_CLI_ARGS": "-var=must=y"})

    assert r.code == 1
    assert one_line(r.err) == (
        "iacctl: task 1 failed at stage planning: terraform plan failed (exit 1): Error: No value for required "
        'variable: The root module input variable "must" is not set, and has no default value. Use a -var or '
        "-var-file command line argument to provide a value for this variable.; full log: iacctl tasks logs 1")
    assert env.task(1)["error"].startswith("terraform plan failed (exit 1): Error: No value for required variable")
    # What the workspace says reaches Terraform.
    env.ok("workspace", "var", "set", "novar", "must", "from-the-workspace")
    env.ok("plan", "novar", "-q", extra_env={"TF_VAR_must": "x"}, code=2)
    assert 'input: null -> "from-the-workspace"' not in env.ok("tasks", "plan", "2").out  # a create: no diff
    assert json.loads(env.ok("tasks", "plan", "2", "--json").out)["variables"]["must"]["value"] == "from-the-workspace"


def test_a_failed_apply_carries_terraforms_error_with_secrets_masked(env: Env) -> None:
    review_workspace(env)
    env.ok("workspace", "var", "set", "app", "fail", "true")
    env.ok("plan", "app", "-q", code=2)

    r = env.run("confirm-apply", "1", "-q")

    assert r.code == 1
    restated, line = r.err.splitlines()  # what it was about to apply, then why it failed
    assert restated.startswith("iacctl: about to apply task 1 of workspace app: plan ")
    assert line.startswith("iacctl: task 1 failed at stage applying: terraform apply failed (exit 1): "
                           "Error: local-exec provisioner error")
    assert "the token is (sensitive value)" in line and TOKEN not in line
    assert line.endswith("; full log: iacctl tasks logs 1")
    assert TOKEN not in env.ok("tasks", "show", "1", "--json").out


def test_terraform_sees_the_workspace_and_the_allowlist_only(env: Env) -> None:
    review_workspace(env)
    probe = env.root / "probe.env"
    env.ok("workspace", "var", "set", "app", "probe", str(probe))
    env.ok("workspace", "var", "set", "app", "MY_SETTING", "from-the-workspace", "--env")
    caller = {"TF_VAR_size": "huge", "TF_CLI_ARGS_plan": "-destroy", "TF_CLI_ARGS": "-lock=false",
              "TF_WORKSPACE": "elsewhere", "HTTPS_PROXY": "http://proxy.example:3128", "AWS_PROFILE": "prod"}
    env.ok("plan", "app", "-q", extra_env=caller, code=2)
    env.ok("confirm-apply", "1", "-q", extra_env=caller)

    seen = dict(line.split("=", 1) for line in probe.read_text().splitlines() if "=" in line)
    assert seen["HTTPS_PROXY"] == "http://proxy.example:3128"
    assert seen["MY_SETTING"] == "from-the-workspace"
    assert seen["TF_VAR_token"] == TOKEN  # the workspace's own variables do reach it
    for name in ("TF_VAR_size", "TF_CLI_ARGS_plan", "TF_CLI_ARGS", "TF_WORKSPACE", "AWS_PROFILE"):
        assert name not in seen, name
    assert re.search(r"^terraform_data\.app +create", env.ok("tasks", "plan", "1").out, flags=re.M)  # not -destroy


# -- 5: time is visible ------------------------------------------------------------------------------


def test_stages_have_start_and_duration_and_logs_have_timestamps_and_follow(
        env: Env, processes: list[Background]) -> None:
    env.workspace("slow", "slow_apply")
    env.ok("workspace", "var", "set", "slow", "sleep", "4")
    env.ok("plan", "slow", "-q", code=2)
    stages = env.task(1)["stages"]
    assert [s["stage"] for s in stages] == ["fetching", "init", "planning", "saving_plan"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", s["started_at"]) for s in stages)
    assert all(s["duration_s"] >= 0 and s["running"] is False for s in stages)
    assert re.search(r"^    planning +\S+Z  \d+\.\ds$", env.ok("tasks", "show", "1").out, flags=re.M)
    stamped = env.ok("tasks", "logs", "1", "--timestamps").out.splitlines()
    assert stamped and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", line) for line in stamped)

    apply = spawn(env, processes, "confirm-apply", "1")
    wait_log(env, 1, "Provisioning with 'local-exec'")
    follow = spawn(env, processes, "tasks", "logs", "--follow", "1")
    assert follow.wait(timeout=60) == 0  # the task's exit code: applied
    assert apply.wait(timeout=60) == 0
    followed = "\n".join(follow.out)
    assert followed.index("Provisioning with 'local-exec'") < followed.index("Apply complete!")
    running = [s for s in env.task(1)["stages"] if s["stage"] == "applying"]
    assert len(running) == 1 and running[0]["duration_s"] >= 3

    # A plan followed from another terminal: exit 2 when it waits for confirmation (C3).
    env.ok("workspace", "var", "set", "slow", "marker", "second")
    env.ok("plan", "slow", "--no-wait")
    follow = spawn(env, processes, "tasks", "logs", "-f", "2")
    assert follow.wait(timeout=60) == 2
    assert any(line.startswith("Plan: ") for line in follow.out)


# -- 7: delete what you made --------------------------------------------------------------------------


def _rows(db: Path) -> dict[str, int]:
    con = sqlite3.connect(db)
    try:
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
                for t in ("workspaces", "tasks", "task_events", "task_logs", "plan_artifacts", "state_versions",
                          "config_snapshots", "variables", "task_results", "workspace_run_tasks")}
    finally:
        con.close()


def test_workspace_delete_is_refused_while_it_matters_and_leaves_nothing_behind(env: Env) -> None:
    env.workspace("net")
    env.workspace("web")
    env.ok("workspace", "var", "set", "net", "region", "eu-west-3")
    env.ok("plan", "web", "-q", code=2)
    env.ok("confirm-apply", "1", "-q")
    env.ok("plan", "net", "-q", code=2)
    env.ok("plan", "net", "--no-wait")  # task 3 waits for task 2's turn
    before = _rows(env.db_path)

    r = env.run("workspace", "delete", "net")
    assert (r.code, one_line(r.err)) == (5, "iacctl: workspace net has tasks that are not over: 2 (apply_pending), "
                                            "3 (pending); cancel them first (iacctl cancel 2)")
    env.ok("cancel", "3")
    env.ok("confirm-apply", "2", "-q")
    r = env.run("workspace", "delete", "net")
    assert r.code == 5 and "workspace net has state versions" in r.err
    assert _rows(env.db_path)["tasks"] == before["tasks"]

    assert env.ok("workspace", "delete", "net", "--force").out == "workspace net deleted (2 task(s) with it)\n"
    after = _rows(env.db_path)
    assert after["workspaces"] == 1 and after["tasks"] == 1 and after["state_versions"] == 1
    assert after["variables"] == 0 and after["plan_artifacts"] == 1  # web's
    con = sqlite3.connect(env.db_path)
    try:
        orphans = [con.execute(sql).fetchone()[0] for sql in (
            "SELECT count(*) FROM task_events WHERE task_id NOT IN (SELECT id FROM tasks)",
            "SELECT count(*) FROM task_logs WHERE task_id NOT IN (SELECT id FROM tasks)",
            "SELECT count(*) FROM config_snapshots WHERE workspace_id NOT IN (SELECT id FROM workspaces)",
            "SELECT count(*) FROM slots WHERE task_id IS NOT NULL")]
    finally:
        con.close()
    assert orphans == [0, 0, 0, 0]
    assert not [p for p in env.work_root.glob("local/local/slot-*") if any(p.iterdir())]
    assert env.run("workspace", "show", "net").code == 64
    assert env.ok("tasks", "show", "1", "--json").json()["status"] == "applied"  # web's task stays


def test_pool_delete_waits_for_its_workspaces_and_pods(env: Env, fake_kube: Any) -> None:
    from tests.kube import NS, api_pods, kube_pool

    kube_pool(env, fake_kube, "--min-pods", "1", "--scale-down-delay", "1s")
    assert env.run("pool", "set", "k8s-prod", "--context", "staging").code == 64
    env.ok("workspace", "create", "net", "--dir", str(env.config("simple")), "--pool", "k8s-prod")
    r = env.run("pool", "delete", "k8s-prod")
    assert (r.code, one_line(r.err)) == (5, "iacctl: pool k8s-prod is used by workspace(s) net; move or delete "
                                            "them first")
    env.ok("workspace", "delete", "net")
    env.ok("pods", "reconcile", "--pool", "k8s-prod")
    assert len(api_pods(fake_kube)) == 1
    r = env.run("pool", "delete", "k8s-prod")
    assert r.code == 5 and "pool k8s-prod still has 1 pod(s)" in r.err

    env.ok("pool", "set", "k8s-prod", "--min-pods", "0")
    deadline = time.monotonic() + 30
    while api_pods(fake_kube):
        assert time.monotonic() < deadline, "the idle pod was never scaled down"
        env.ok("pods", "reconcile", "--pool", "k8s-prod")
        time.sleep(0.5)
    env.ok("pool", "delete", "k8s-prod")
    assert [p["name"] for p in env.ok("pool", "list", "--json").json()] == ["local"]
    assert fake_kube.pods(NS) == []


# -- 8: refuse what is wrong; options where users put them -----------------------------------------------


def test_version_alone_and_global_options_after_the_command(env: Env) -> None:
    r = env.ok("--version")
    assert r.out.startswith("iacctl ") and r.err == ""
    env.workspace("net")
    elsewhere = Env(root=env.root, vars={k: v for k, v in env.vars.items() if k != "IACCTL_DB"})
    listed = elsewhere.ok("workspace", "list", "--db", str(env.db_path), "--json").json()
    assert [w["name"] for w in listed] == ["net"]
    assert elsewhere.ok("--json", "workspace", "show", "net", "--db", str(env.db_path)).json()["name"] == "net"
    r = env.run("workspace", "show", "nope", "--verbose")
    assert r.code == 64 and "Traceback" in r.err  # --verbose after the command works too


# -- 9: a terminal that reads well ------------------------------------------------------------------------


def test_on_a_terminal_terraform_keeps_its_colours_and_lines_and_tables_fit(env: Env) -> None:
    review_workspace(env)
    long_size = "x" * 150
    env.ok("workspace", "var", "set", "app", "size", long_size)

    code, text = run_on_a_terminal(env, "plan", "app", columns=80)

    assert code == 2
    assert "\x1b[32m+\x1b[0m" in text  # Terraform's green "+" of a create
    assert "\x1b[33m" not in text  # iacctl's own notes are not styled as warnings
    assert f'"app-{long_size}"' in text  # not hard-wrapped at 80 columns
    stored = env.ok("tasks", "logs", "1").out
    assert "\x1b[" not in stored and f'"app-{long_size}"' in stored
    env.ok("plan", "app", "--plan-only", "-q", code=2)
    code, table = run_on_a_terminal(env, "tasks", "list", columns=80)
    assert code == 0
    lines = [ANSI.sub("", line) for line in table.replace("\r", "").splitlines() if line.strip()]
    assert lines[0].split() == ["ID", "WORKSPACE", "KIND", "STATUS", "CHANGES", "CREATED"]
    assert len(lines) == 3 and all(len(line) <= 80 for line in lines), lines
    assert "plan+apply" in lines[1] and "apply_pending" in lines[1]


# -- 10: completion knows your things ------------------------------------------------------------------------


def test_bash_completion_offers_workspaces_task_ids_and_statuses(env: Env) -> None:
    env.workspace("net")
    env.workspace("web")
    env.ok("plan", "net", "-q", code=2)
    env.ok("plan", "web", "--plan-only", "-q", code=2)
    vars = {**env.vars, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.vars['PATH']}"}

    def complete(*words: str) -> list[str]:
        script = (f"source {REPO / 'completions' / 'iacctl.bash'}\n"
                  f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
                  "_iacctl; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, env=vars,
                             cwd=env.root).stdout
        return [line for line in out.splitlines() if line]

    assert complete("iacctl", "plan", "") == ["net", "web"]
    assert complete("iacctl", "workspace", "var", "set", "w") == ["web"]
    assert complete("iacctl", "tasks", "list", "-w", "") == ["net", "web"]
    assert complete("iacctl", "confirm-apply", "") == ["1"]  # only the task waiting for confirmation
    assert sorted(complete("iacctl", "tasks", "show", "")) == ["1", "2"]
    assert complete("iacctl", "tasks", "list", "--status", "app") == ["apply_pending", "applied",
                                                                      "applied_state_error"]
    described = env.ok("complete", "task").out.splitlines()
    assert described == ["2\tplanned_and_finished (plan of web)", "1\tapply_pending (plan_and_apply of net)"]
