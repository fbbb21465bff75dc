"""Terraform's own reason for failing (issue 9): the first `Error:` diagnostic of its output and
the first lines of its detail, so a failed task says why without opening the log. Pure: works
on lines already redacted (X2), with or without colours and the box Terraform draws."""

from __future__ import annotations

import re
from collections.abc import Sequence

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_BOX = ("╷", "╵", "│", "├", "─")
# Where the error is (Terraform's source snippet), not why: left out of the reason.
_SOURCE = re.compile(r"^\s*(with \S+,|on .* line \d+.*:|\d+: .*|\(source code not available\)|├.*|"
                     r"Call to function.*)$")
DETAIL_LINES = 3
_PREAMBLE = "Error: Terraform encountered problems during initiali"


def plain(text: str) -> str:
    """A line without colour codes."""
    return _ANSI.sub("", text)


def _unboxed(text: str) -> str:
    line = plain(text).rstrip()
    if line.startswith("│"):
        return line[1:].lstrip(" ")
    if line.strip() in ("╷", "╵"):
        return ""
    return line


def terraform_diagnostic(lines: Sequence[str]) -> str | None:
    """'Error: SUMMARY: DETAIL ...' of the first error, or None when there is none."""
    cleaned = [_unboxed(line) for line in lines]
    # `terraform init` puts a general error before the real ones ("... described below").
    errors = [i for i, line in enumerate(cleaned)
              if line.startswith("Error: ") and not line.startswith(_PREAMBLE)]
    if not errors:
        return None
    first = errors[0]
    summary = cleaned[first].strip()
    detail: list[str] = []
    for line in cleaned[first + 1:]:
        text = line.strip()
        if text.startswith(("Error: ", "Warning: ")) or text.startswith(_BOX[1]):
            break
        if not text or _SOURCE.match(text):
            continue
        detail.append(text)
        if len(detail) == DETAIL_LINES:
            break
    message = summary + (": " + " ".join(detail) if detail else "")
    if len(message) > 600:
        message = message[:597] + "..."
    more = len(errors) - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return message
