"""Settings read from the environment (config.py): the heartbeat timeout every machine of a team
judges another machine's runner by (issue 18 item 3)."""

from __future__ import annotations

import pytest

from iacctl import config
from iacctl.errors import UsageError


def test_heartbeat_timeout_defaults_to_two_minutes_and_is_settable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IACCTL_HEARTBEAT_TIMEOUT", raising=False)
    assert config.heartbeat_timeout() == 120.0
    assert config.heartbeat_interval() == 5.0
    monkeypatch.setenv("IACCTL_HEARTBEAT_TIMEOUT", "8")
    assert config.heartbeat_timeout() == 8.0
    # The heartbeat is beaten well under the timeout: a late beat is not a dead runner.
    assert config.heartbeat_interval() == 2.0


@pytest.mark.parametrize("raw", ["soon", "0", "1", "-5", "100000"])
def test_heartbeat_timeout_must_be_a_number_of_seconds(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("IACCTL_HEARTBEAT_TIMEOUT", raw)
    with pytest.raises(UsageError, match="IACCTL_HEARTBEAT_TIMEOUT must be a number of seconds"):
        config.heartbeat_timeout()
