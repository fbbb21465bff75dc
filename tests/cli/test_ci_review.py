"""Issue 24, end to end through the installed command: the README's GitHub Actions workflow and
GitLab CI jobs run as printed, with the variables those CI systems set, on a PostgreSQL store
as a team's runners share it; the review posted as a comment, the job summary, GitLab's report,
the approval pinned to the plan the reviewer saw, and nothing secret in any of them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from markdown_it import MarkdownIt

from tests.cli.test_markdown import tables
from tests.conftest import Env

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PASSWORD = "Pw-Secret-9137"
ROTATED = "Pw-Rotated-2468"
PR = "7"


def readme_block(first_line: str) -> dict[str, Any]:
    """The README's YAML block that starts with `first_line` (a comment naming its file)."""
    readme = (REPO / "README.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, flags=re.S) if b.startswith(first_line + "\n")]
    assert len(blocks) == 1, f"README.md has {len(blocks)} yaml blocks starting {first_line!r}"
    doc = yaml.safe_load(blocks[0])
    assert isinstance(doc, dict)
    return doc


class CI:
    """One CI system's jobs run as it runs them: each script in bash with errexit and pipefail,
    in a checkout, with the job's variables (expressions resolved as the CI would) and the
    installed iacctl on PATH. A fake `gh` records the comments it is asked to post."""

    def __init__(self, env: Env, root: Path, system: dict[str, str]) -> None:
        self.env = env
        self.root = root
        self.system = system
        self.checkout = root / "checkout"
        self.checkout.mkdir(parents=True, exist_ok=True)
        fake = root / "fake-bin"
        fake.mkdir(exist_ok=True)
        (fake / "gh").write_text(
            f"#!{sys.executable}\n"
            "import json, os, sys\n"
            "args = sys.argv[1:]\n"
            "body = open(args[args.index('--body-file') + 1]).read() if '--body-file' in args else None\n"
            "with open(os.environ['FAKE_GH_LOG'], 'a') as log:\n"
            "    log.write(json.dumps({'args': args, 'body': body}) + '\\n')\n")
        (fake / "gh").chmod(0o755)
        self.gh_log = root / "gh.log"
        self.path = f"{fake}:{BIN}:{os.environ['PATH']}"

    def comments(self) -> list[dict[str, Any]]:
        if not self.gh_log.exists():
            return []
        return [json.loads(line) for line in self.gh_log.read_text().splitlines()]

    def run(self, script: str, job_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in self.env.vars.items() if k not in ("IACCTL_DB", "IACCTL_DATABASE_URL")}
        env.update(self.system)
        env.update(job_env)
        env.update({"PATH": self.path, "FAKE_GH_LOG": str(self.gh_log), "CI": "true"})
        return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                              capture_output=True, text=True, env=env, cwd=self.checkout, timeout=300)


def resolve(value: str, known: dict[str, str]) -> str:
    """GitHub Actions' `${{ expr }}`: every expression the README uses must be one we know."""
    def one(m: re.Match[str]) -> str:
        expr = m.group(1).strip()
        assert expr in known, f"the README's workflow uses ${{{{ {expr} }}}}, which this test does not know"
        return known[expr]
    return re.sub(r"\$\{\{(.*?)\}\}", one, str(value))


def github_job(ci: CI, job: dict[str, Any], known: dict[str, str], summary: Path) -> tuple[int, str, dict[str, str]]:
    """Runs the job's `run` steps (installing iacctl aside: the test runs the installed one);
    returns the last exit code, everything printed, and what the steps wrote to GITHUB_OUTPUT."""
    outputs = ci.root / f"output-{time.monotonic_ns()}"
    outputs.touch()
    job_env = {k: resolve(v, known) for k, v in (job.get("env") or {}).items()}
    job_env.update({"GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(outputs)})
    printed = ""
    code = 0
    for step in job["steps"]:
        script = step.get("run")
        if script is None or script.startswith("pipx install"):
            continue
        r = ci.run(resolve(script, known), job_env)
        printed += r.stdout + r.stderr
        code = r.returncode
        if code != 0:
            break
    written = dict(line.split("=", 1) for line in outputs.read_text().splitlines() if "=" in line)
    return code, printed, written


def github_system(root: Path) -> dict[str, str]:
    return {"GITHUB_ACTIONS": "true", "GITHUB_ACTOR": "alice", "GITHUB_TRIGGERING_ACTOR": "alice",
            "GITHUB_REPOSITORY": "acme/infra", "GITHUB_RUN_ID": "4242", "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_EVENT_NAME": "pull_request", "GITHUB_WORKSPACE": str(root / "checkout"),
            "RUNNER_TEMP": str(root)}


def team_workspace(env: Env, root: Path) -> None:
    """The workspace as a team has it before the pull request: applied once, a sensitive value."""
    config = env.config("pull_request", into="checkout")
    env.ok("workspace", "create", "network", "--dir", str(config))
    env.ok("workspace", "var", "set", "network", "password", PASSWORD, "--sensitive")
    env.ok("plan", "network", "-q", code=2)
    env.ok("confirm-apply", "1", "-q")
    # The pull request: a bigger size (an update and a replacement), no extra (a destroy).
    env.ok("workspace", "var", "set", "network", "size", "large")
    env.ok("workspace", "var", "set", "network", "extra", "false", "--hcl")


def secret_free(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text and ROTATED not in text


def test_the_readme_workflow_posts_the_review_fills_the_summary_and_applies_the_approved_plan(pg_env: Env) -> None:
    env = pg_env
    team_workspace(env, env.root)
    # The pull request also rotates the password: a sensitive output changes, Terraform marks the
    # attribute that holds it, and `terraform_data` copies the former value unmarked into `output`.
    env.ok("workspace", "var", "set", "network", "password", ROTATED, "--sensitive")
    workflow = readme_block("# .github/workflows/terraform.yml")
    ci = CI(env, env.root, github_system(env.root))
    key = (env.root / "config" / "secret.key").read_text().strip()
    known = {"secrets.IACCTL_DATABASE_URL": env.vars["IACCTL_DATABASE_URL"], "secrets.IACCTL_SECRET_KEY": key,
             "github.token": "ghs_test", "github.event.pull_request.number": PR}

    summary = env.root / "plan-summary.md"
    code, printed, outputs = github_job(ci, workflow["jobs"]["plan"], known, summary)
    assert code == 0, printed
    task = int(outputs["task"])
    view = env.task(task)
    assert view["status"] == "apply_pending"
    assert outputs["plan_hash"] == view["plan_hash"]

    # The comment is the review, posted (or updated) on the pull request.
    [comment] = ci.comments()
    assert comment["args"][:2] == ["pr", "comment"] and comment["args"][2] == PR
    assert "--edit-last" in comment["args"]
    body = comment["body"]
    assert body == env.ok("tasks", "plan", str(task), "--format", "markdown").out
    assert body.startswith("<!-- iacctl workspace=network -->\n")
    [table] = tables(MarkdownIt("commonmark").enable("table").parse(body))
    assert [(row[0], row[1]) for row in table[1:]] == [
        ("⚠️ destroy", "terraform_data.extra[0]"), ("⚠️ replace", "terraform_data.db"),
        ("update in place", "terraform_data.app"), ("update in place", "terraform_data.secret")]
    assert table[4][2] == "input: (sensitive value) changed\noutput: \"pw-(sensitive value)\" -> (known after apply)"
    assert f"iacctl confirm-apply {task} --plan-hash {view['plan_hash']}" in body
    assert 'alice via GitHub Actions' in body and "pull request #7" in body
    assert "Plan: 1 to add, 2 to change, 2 to destroy." in body  # Terraform's own text, folded
    # The job summary holds the same review, written by `plan` itself.
    assert summary.read_text().strip() == body.strip()

    # The apply job, approved: it applies exactly the plan the reviewer saw.
    known.update({"needs.plan.outputs.task": outputs["task"], "needs.plan.outputs.plan_hash": outputs["plan_hash"]})
    applied_summary = env.root / "apply-summary.md"
    code, printed, _ = github_job(ci, workflow["jobs"]["apply"], known, applied_summary)
    assert code == 0, printed
    view = env.task(task)
    assert view["status"] == "applied"
    assert view["confirmed_by"]["ci"] == "GitHub Actions" and view["confirmed_by"]["message"] == "approved in run 4242"
    applied = applied_summary.read_text()
    assert "task " + str(task) + ": applied" in applied
    assert ("**Applied:** 0 to add, 2 to change, 1 to destroy, 1 to replace; 2 output change(s); "
            f"state version {view['state_version']}.") in applied
    secret_free(body, summary.read_text(), applied, printed,
                env.ok("tasks", "plan", str(task), "--json").out, env.ok("tasks", "logs", str(task)).out)


def test_an_approval_applies_only_the_plan_it_approved(env: Env) -> None:
    team_workspace(env, env.root)
    env.ok("plan", "network", "-q", code=2)
    approved = env.task(2)["plan_hash"]
    review = env.ok("tasks", "plan", "2", "--format", "markdown").out
    assert f"--plan-hash {approved}" in review
    assert env.ok("tasks", "plan", "2", "--format", "json").out == env.ok("tasks", "plan", "2", "--json").out
    r = env.run("tasks", "plan", "2", "--format", "yaml")
    assert r.code == 64 and r.err.strip() == "iacctl: unknown --format 'yaml': one of text, markdown, json"
    time.sleep(2.1)  # a plan file made in another second: a new hash even for the same changes
    # The plan context is lost before the apply: confirm-apply plans again (exit 4).
    slot = env.work_root / "local" / "local" / f"slot-{env.task(2)['slot']}"
    assert slot.is_dir()
    subprocess.run(["rm", "-rf", str(slot)], check=True)
    env.ok("confirm-apply", "2", "-q", "--plan-hash", approved, code=4)
    replanned = env.task(2)["plan_hash"]
    assert replanned != approved
    before = env.task(2)

    # The reviewer approved the old plan: it is refused, in one line naming both and the way on.
    r = env.run("confirm-apply", "2", "-q", "--plan-hash", approved[:16])
    assert r.code == 5, r.err
    [line] = r.err.splitlines()
    assert replanned in line and approved[:16] in line and "iacctl tasks plan 2" in line
    after = env.task(2)
    assert (after["status"], after["plan_hash"], after["history"]) == ("apply_pending", replanned, before["history"])
    # Not a plan hash at all: bad usage, nothing touched.
    r = env.run("confirm-apply", "2", "--plan-hash", "xyz")
    assert r.code == 64 and len(r.err.splitlines()) == 1
    # The new plan, reviewed and approved by its own hash, is applied.
    env.ok("confirm-apply", "2", "-q", "--plan-hash", replanned)
    assert env.task(2)["status"] == "applied"


def test_the_readme_gitlab_jobs_fill_the_merge_request_widget_and_apply_the_planned_task(env: Env) -> None:
    team_workspace(env, env.root)
    pipeline = readme_block("# .gitlab-ci.yml")
    system = {"GITLAB_CI": "true", "GITLAB_USER_LOGIN": "bob", "CI_JOB_ID": "99",
              "CI_PIPELINE_URL": "https://gitlab.example.com/acme/infra/-/pipelines/5",
              "IACCTL_DB": str(env.db_path)}
    ci = CI(env, env.root, system)
    for name in ("plan", "apply"):
        job = pipeline[name]
        r = ci.run("\n".join(job["script"]), {})
        assert r.returncode == 0, r.stdout + r.stderr
        if name == "plan":
            report_path = ci.checkout / job["artifacts"]["reports"]["terraform"]
            report = json.loads(report_path.read_text())
            plan = env.ok("tasks", "plan", "2", "--json").json()
            # As GitLab's own template counts Terraform's plan JSON (a replacement is a create and a delete).
            actions = [a for rc in plan["resource_changes"] for a in rc["change"]["actions"]]
            assert report == {k: actions.count(k) for k in ("create", "update", "delete")} == \
                {"create": 1, "update": 1, "delete": 2}
            secret_free(report_path.read_text(), r.stdout, r.stderr)
    view = env.task(2)
    assert view["status"] == "applied"
    assert view["confirmed_by"]["ci"] == "GitLab CI" and view["confirmed_by"]["identity"] == "bob"


def test_the_job_summary_never_changes_the_outcome(env: Env) -> None:
    team_workspace(env, env.root)
    gh = github_system(env.root)
    # Switched off: nothing written.
    summary = env.root / "summary.md"
    env.ok("plan", "network", "-q", code=2,
           extra_env={**gh, "GITHUB_STEP_SUMMARY": str(summary), "IACCTL_CI_SUMMARY": "off"})
    assert not summary.exists()
    # A summary that cannot be written (a directory): one warning line, the same exit code.
    r = env.run("cancel", "2", "-m", "wrong size", extra_env={**gh, "GITHUB_STEP_SUMMARY": str(env.root)})
    assert r.code == 0
    assert env.task(2)["status"] == "cancelled"
    warnings = [line for line in r.err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "job summary was not written" in warnings[0]
    # A cancel's summary says who cancelled and why; a failed plan's, what failed and where.
    env.ok("plan", "network", "-q", code=2, extra_env={**gh, "GITHUB_STEP_SUMMARY": str(summary)})
    env.ok("cancel", "3", "-m", "not today", extra_env={**gh, "GITHUB_STEP_SUMMARY": str(summary)})
    text = summary.read_text()
    assert "task 3: cancelled" in text and "Cancelled by" in text
    (env.root / "checkout" / "broken.tf").write_text('resource "terraform_data" "x" {\n  input =\n}\n')
    report = env.root / "report.json"
    r = env.run("plan", "network", "-q", "--report-file", str(report),
                extra_env={**gh, "GITHUB_STEP_SUMMARY": str(summary)})
    assert r.code == 1
    assert not report.exists() and "no report written" in r.err
    failed = summary.read_text().split("<!-- iacctl workspace=network -->")[-1]
    assert "task 4: failed at stage" in failed and "Invalid expression" in failed
    secret_free(text, failed, r.err)
