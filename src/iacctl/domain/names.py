"""What a valid name looks like (workspaces, variables, pools)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from iacctl.errors import UsageError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,89}$")
# Terraform variable names: an identifier; environment variables: a POSIX name.
_TF_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,127}$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
NAME_SHOWN_MAX = 40  # a name echoed in a message is cut to this many characters


def shown_name(name: str) -> str:
    """A name as a message shows it: whole when short, else its start and its length, so a
    5,000-character mistake is not echoed back whole (issue 21)."""
    if len(name) <= NAME_SHOWN_MAX:
        return name
    return f"{name[:NAME_SHOWN_MAX]}... ({len(name)} characters)"


def quoted(name: str) -> str:
    """'net', or the shortened name quoted the same way."""
    if len(name) <= NAME_SHOWN_MAX:
        return repr(name)
    return f"{name[:NAME_SHOWN_MAX]!r}... ({len(name)} characters)"


def check_name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(
            f"invalid {kind} name {quoted(name)}: use letters, digits, '.', '_' or '-' "
            "(at most 90, starting with a letter or digit)"
        )
    return name


def check_variable_name(name: str, *, env: bool) -> str:
    if not (_ENV_VAR if env else _TF_VAR).match(name):
        what = "environment variable" if env else "Terraform variable"
        raise UsageError(f"invalid {what} name {quoted(name)}")
    return name


def did_you_mean(name: str, known: Sequence[str]) -> str:
    """'; did you mean 'net'?' for a close known name, else ''."""
    if len(name) > 2 * NAME_SHOWN_MAX:
        return ""  # nothing is close to a name that long, and difflib would take its time
    lowered = {k.lower(): k for k in known}
    if name.lower() in lowered:
        return f"; did you mean {lowered[name.lower()]!r}?"  # names are unique regardless of case
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
