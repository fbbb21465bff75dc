"""What a variable value may be (SPEC E9, X4; issue 21): checked at `var set`, so that a value
Terraform cannot be given never reaches the store.

Values reach Terraform as environment variables (TF_VAR_name=value, or the name itself for
`--env`). Linux limits one environment string to 128 KiB (MAX_ARG_STRLEN) and all of them,
with the arguments, to a quarter of the stack limit (2 MiB by default): a bigger value makes
every plan fail with "Argument list too long". The limits below keep well inside both.
"""

from __future__ import annotations

from collections.abc import Iterable

from iacctl.domain.names import shown_name
from iacctl.errors import UsageError

VALUE_MAX_BYTES = 64 * 1024  # one value
WORKSPACE_MAX_BYTES = 1024 * 1024  # all of a workspace's variables together


def _kib(n: int) -> str:
    return f"{n // 1024} KiB" if n % 1024 == 0 else f"{n} bytes"


def check_value(key: str, value: str, *, sensitive: bool, allow_empty: bool,
                others: Iterable[int] = ()) -> None:
    """Refuse a value over VALUE_MAX_BYTES (UTF-8), one that would take the workspace's values
    over WORKSPACE_MAX_BYTES (`others`: the sizes of its other variables), and an empty
    sensitive value unless `allow_empty` (an empty secret is nearly always a mistake: an unset
    shell variable, a file read from /dev/null)."""
    size = len(value.encode("utf-8"))
    if size > VALUE_MAX_BYTES:
        raise UsageError(f"the value of variable {shown_name(key)} is {size} bytes; the limit is "
                         f"{_kib(VALUE_MAX_BYTES)} (values reach Terraform as environment variables)")
    total = size + sum(others)
    if total > WORKSPACE_MAX_BYTES:
        raise UsageError(f"variable {shown_name(key)} would take the workspace's variables to {total} bytes; "
                         f"the limit is {_kib(WORKSPACE_MAX_BYTES)} for all of them together")
    if sensitive and not value and not allow_empty:
        raise UsageError(f"the value of sensitive variable {shown_name(key)} is empty; "
                         "if that is what you mean, add --allow-empty")


def hcl_probes(value: str) -> tuple[str, str]:
    """Two small HCL files whose syntax is valid only when `value` is one HCL expression: as an
    attribute's value (nothing may come before it) and inside parentheses (nothing may come
    after it). A parser of HCL syntax (terraform fmt) reads them; see runtimes.local."""
    return f"value = {value}\n", f"value = (\n{value}\n)\n"
