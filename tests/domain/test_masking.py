"""SPEC X2, issue 24 item 4: the pure rules of what is masked, and when a variable's old value
becomes a former secret."""

from __future__ import annotations

from iacctl.domain.masking import MIN_MASKED_LENGTH, is_former_secret, mask_text, maskable
from iacctl.domain.plans import SENSITIVE, redact_plan


def test_values_are_masked_once_each_longest_first_and_short_ones_never() -> None:
    values = maskable(["secret", "secret-two", "ab", "", "secret", "xyz"])
    assert values == ["secret-two", "secret", "xyz"]
    assert MIN_MASKED_LENGTH == 3
    # A value that contains another is hidden whole, not half.
    assert mask_text("was secret-two, is secret; ab", values, "***") == "was ***, is ***; ab"


def test_the_plan_and_the_log_mask_by_the_same_rule() -> None:
    doc = {"resource_changes": [{"change": {"before": {"output": "secret-one"}, "after": {"output": "ab"}}}]}
    masked = redact_plan(doc, ["secret-one", "ab"])
    assert masked["resource_changes"][0]["change"] == {"before": {"output": SENSITIVE}, "after": {"output": "ab"}}


def test_only_a_sensitive_value_that_goes_becomes_a_former_secret() -> None:
    # Replaced by another value, sensitive or not, or unset (None): remembered.
    assert is_former_secret(True, "one", "two", True)
    assert is_former_secret(True, "one", "two", False)
    assert is_former_secret(True, "one", None, False)
    # Made plain with the same value: it was given as a secret, so it stays masked.
    assert is_former_secret(True, "one", "one", False)
    # Set again as it was: still the current value, nothing former.
    assert not is_former_secret(True, "one", "one", True)
    # A plain value was never a secret, whatever replaces it.
    assert not is_former_secret(False, "plain", "secret", True)
    assert not is_former_secret(False, "plain", None, False)
