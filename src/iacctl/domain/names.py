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


def check_name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(
            f"invalid {kind} name {name!r}: use letters, digits, '.', '_' or '-' "
            "(at most 90, starting with a letter or digit)"
        )
    return name


def check_variable_name(name: str, *, env: bool) -> str:
    if not (_ENV_VAR if env else _TF_VAR).match(name):
        what = "environment variable" if env else "Terraform variable"
        raise UsageError(f"invalid {what} name {name!r}")
    return name


def did_you_mean(name: str, known: Sequence[str]) -> str:
    """'; did you mean 'net'?' for a close known name, else ''."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
