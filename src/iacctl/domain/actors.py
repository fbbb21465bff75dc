"""Who did what (issue 9): the person or CI job behind a command, read from what the caller's
environment says. Pure: the caller passes the environment, the local user and the host.

HCP Terraform, Spacelift and Atlantis show who queued a run and who approved it; in CI the
identity that matters is the CI system's (the person who pushed, the job's run), not the runner
machine's user.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from iacctl.errors import UsageError

MESSAGE_MAX = 500


@dataclass(frozen=True)
class Actor:
    user: str  # the local user running iacctl
    host: str
    identity: str | None = None  # who the CI system (or IACCTL_ACTOR) says acts
    ci: str | None = None  # "GitHub Actions", "GitLab CI"
    run: str | None = None  # the CI run or job (a URL when the CI system gives one)
    message: str | None = None  # --message

    def display(self) -> str:
        local = f"{self.user}@{self.host}"
        if self.identity is None:
            return local
        via = f" via {self.ci}" if self.ci else ""
        run = f", {self.run}" if self.run else ""
        return f"{self.identity}{via} ({local}{run})"

    def with_message(self, message: str | None) -> Actor:
        return Actor(self.user, self.host, self.identity, self.ci, self.run, check_message(message))

    def said(self) -> str:
        """'alice@vm' or 'alice@vm: "ship it"', for history reasons."""
        return self.display() + (f": {json.dumps(self.message, ensure_ascii=False)}" if self.message else "")

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)


def actor_view(stored: str | None) -> dict[str, Any] | None:
    """The stored actor as `tasks show --json` gives it: its fields plus `display`."""
    if not stored:
        return None
    fields = json.loads(stored)
    actor = Actor(**{k: fields.get(k) for k in Actor.__dataclass_fields__})
    return {**asdict(actor), "display": actor.display()}


def actor_from(environ: Mapping[str, str], user: str, host: str) -> Actor:
    """IACCTL_ACTOR (any wrapper or CI system) wins; then GitHub Actions and GitLab CI, from
    the variables they set for every job; else the local user and host alone."""
    named = (environ.get("IACCTL_ACTOR") or "").strip()
    if named:
        return Actor(user, host, identity=_one_line(named))
    if environ.get("GITHUB_ACTIONS") == "true":
        run = None
        if environ.get("GITHUB_REPOSITORY") and environ.get("GITHUB_RUN_ID"):
            server = environ.get("GITHUB_SERVER_URL") or "https://github.com"
            run = f"{server}/{environ['GITHUB_REPOSITORY']}/actions/runs/{environ['GITHUB_RUN_ID']}"
        who = environ.get("GITHUB_TRIGGERING_ACTOR") or environ.get("GITHUB_ACTOR") or "unknown"
        return Actor(user, host, identity=_one_line(who), ci="GitHub Actions", run=run)
    if environ.get("GITLAB_CI") == "true":
        who = environ.get("GITLAB_USER_LOGIN") or environ.get("GITLAB_USER_NAME") or "unknown"
        run = environ.get("CI_JOB_URL") or (f"job {environ['CI_JOB_ID']}" if environ.get("CI_JOB_ID") else None)
        return Actor(user, host, identity=_one_line(who), ci="GitLab CI", run=run)
    return Actor(user, host)


def check_message(message: str | None) -> str | None:
    """X4: a --message is one line of at most 500 characters."""
    if message is None:
        return None
    text = message.strip()
    if not text:
        raise UsageError("--message is empty")
    if any(c in text for c in "\r\n") or any(ord(c) < 32 and c != "\t" for c in text):
        raise UsageError("--message must be one line of text")
    if len(text) > MESSAGE_MAX:
        raise UsageError(f"--message is longer than {MESSAGE_MAX} characters")
    return text


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]
