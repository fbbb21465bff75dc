"""`drift check` exit codes (issue 12, SPEC C3): 0 no drift, 2 drift found, 1 a check failed."""

from __future__ import annotations

from iacctl.cli.drift import exit_code


def test_exit_codes_of_drift_check() -> None:
    assert exit_code(["no_drift"], single=True) == 0
    assert exit_code(["drifted"], single=True) == 2
    assert exit_code(["failed"], single=True) == 1
    assert exit_code(["skipped"], single=True) == 5  # nothing was checked: refused
    assert exit_code(["no_drift", "skipped", "no_drift"], single=False) == 0  # skips are said, not errors
    assert exit_code(["no_drift", "drifted", "skipped"], single=False) == 2
    assert exit_code(["drifted", "failed"], single=False) == 1  # an error is never hidden by drift
    assert exit_code([], single=False) == 0
