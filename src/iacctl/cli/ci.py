"""What a CI job shows its reviewers (issue 24 item 3): the Markdown review appended to GitHub
Actions' job summary on its own, and GitLab's Terraform report on request.

Neither ever changes a task's outcome or a command's exit code: a file that cannot be written
gives one warning line on stderr and the command goes on (a job summary is a courtesy; the task
is the record). Both are readable by everyone who can read the pipeline: nothing secret goes in
(X2); the review they are made from is masked already."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from iacctl.cli.markdown import applied_markdown, ended_markdown, review_markdown
from iacctl.cli.render import write
from iacctl.errors import IacctlError

if TYPE_CHECKING:
    from iacctl.domain.review import Review
    from iacctl.services.app import App

# GitHub Actions' own limit for one step's summary is 1 MiB; a review stays far below it.
SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
SWITCH_ENV = "IACCTL_CI_SUMMARY"


def _warn(text: str) -> None:
    import sys

    write(sys.stderr, f"iacctl: warning: {text}\n")


def summary_file() -> str | None:
    """The job summary file to append to, or None (not GitHub Actions, or IACCTL_CI_SUMMARY=off)."""
    path = os.environ.get(SUMMARY_ENV)
    if not path or os.environ.get(SWITCH_ENV, "").strip().lower() in ("off", "0", "false", "no"):
        return None
    return path


def _append(path: str, text: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as out:
            out.write(text + "\n")
    except OSError as exc:
        _warn(f"the job summary was not written to {path}: {exc.strerror or exc}; the task is not affected")


def _summarize(app: App, task_id: int | None, face: Callable[[Review], str]) -> None:
    path = summary_file()
    if path is None or task_id is None:
        return
    from iacctl.services import tasks

    try:
        review = tasks.review(app, task_id, need_plan=False)
    except IacctlError as exc:  # a store that says no: the command has said so already
        _warn(f"no job summary for task {task_id}: {exc}")
        return
    _append(path, face(review))


def summarize_plan(app: App, task_id: int | None) -> None:
    """`plan`: the whole review (or why there is none), as a pull request comment would show it."""
    _summarize(app, task_id, review_markdown)


def summarize_apply(app: App, task_id: int | None, state_version: int | None) -> None:
    """`confirm-apply`: what was applied (or the review again, when it was re-planned or failed)."""
    def face(review: Review) -> str:
        if review.status == "applied":
            return applied_markdown(review, state_version)
        return review_markdown(review)
    _summarize(app, task_id, face)


def summarize_cancel(app: App, task_id: int | None) -> None:
    _summarize(app, task_id, ended_markdown)


def write_report(app: App, task_id: int, path: str) -> None:
    """GitLab's Terraform report of the task's saved plan: {"create": n, "update": n, "delete": n}."""
    from iacctl.domain.plans import gitlab_report
    from iacctl.services import tasks

    try:
        report = gitlab_report(tasks.plan_json(app, task_id))
    except IacctlError as exc:
        _warn(f"no report written to {path}: {exc}")
        return
    try:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(report, out)
            out.write("\n")
    except OSError as exc:
        _warn(f"the report was not written to {path}: {exc.strerror or exc}; the task is not affected")
