"""Issue 21 item 4: the pure rules for variable values and names shown in messages."""

from __future__ import annotations

import pytest

from iacctl.domain.names import did_you_mean, quoted, shown_name
from iacctl.domain.variables import VALUE_MAX_BYTES, WORKSPACE_MAX_BYTES, check_value, hcl_probes
from iacctl.errors import UsageError


def test_value_limits_count_utf8_bytes_and_the_workspace_total() -> None:
    check_value("a", "x" * VALUE_MAX_BYTES, sensitive=False, allow_empty=False)
    with pytest.raises(UsageError, match="the limit is 64 KiB"):
        check_value("a", "é" * (VALUE_MAX_BYTES // 2 + 1), sensitive=False, allow_empty=False)
    with pytest.raises(UsageError, match="1024 KiB for all of them"):
        check_value("a", "x" * 1000, sensitive=False, allow_empty=False, others=[WORKSPACE_MAX_BYTES - 999])


def test_an_empty_secret_needs_allow_empty_but_an_empty_plain_value_does_not() -> None:
    check_value("a", "", sensitive=False, allow_empty=False)
    check_value("a", "", sensitive=True, allow_empty=True)
    with pytest.raises(UsageError, match="--allow-empty"):
        check_value("a", "", sensitive=True, allow_empty=False)


def test_long_names_are_shortened_and_case_slips_are_named() -> None:
    assert shown_name("net") == "net" and quoted("net") == "'net'"
    assert quoted("n" * 5000) == f"'{'n' * 40}'... (5000 characters)"
    assert did_you_mean("NET", ["net", "web"]) == "; did you mean 'net'?"
    assert did_you_mean("x" * 5000, ["net"]) == ""


def test_hcl_probes_fence_the_value_on_both_sides() -> None:
    assert hcl_probes("[1]") == ("value = [1]\n", "value = (\n[1]\n)\n")

