"""Which values are masked in what iacctl shows and logs (SPEC X2), as pure rules: a workspace's
sensitive values, the ones it holds now and every one it held before (issue 24 item 4). No I/O:
the store keeps the former values encrypted and gives them to these rules decrypted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# X2: shorter values are not masked: masking "ab" or "1" in every line would hide unrelated text
# all over a log and a plan, and a value that short is no secret to speak of.
MIN_MASKED_LENGTH = 3

# X2: a former value is kept as long as its workspace, up to this many per variable (a secret
# rotated every day for almost three years); past it the oldest go first. The cap keeps what each
# task decrypts and masks bounded; a dropped value is only ever in plans saved before the newest
# FORMER_VALUES_KEPT rotations (logs are masked when they are written).
FORMER_VALUES_KEPT = 1000


def maskable(values: Iterable[str]) -> list[str]:
    """The values to hide, each once and longest first, so that a value containing another is
    hidden whole; values shorter than MIN_MASKED_LENGTH are left out."""
    return sorted({v for v in values if len(v) >= MIN_MASKED_LENGTH}, key=lambda v: (-len(v), v))


def mask_text(text: str, values: Sequence[str], mask: str) -> str:
    """`text` with every one of `values` (as `maskable` gives them) replaced by `mask`."""
    for value in values:
        if value in text:
            text = text.replace(value, mask)
    return text


def is_former_secret(old_sensitive: bool, old_value: str, new_value: str | None, new_sensitive: bool) -> bool:
    """Whether a variable's old value must be remembered as a former secret when it is set to
    `new_value` (None: unset). Only a sensitive value is a secret: a plain value replaced by a
    sensitive one never was. A sensitive value set again as it was is still current; the same
    value made plain is remembered, as it was given as a secret."""
    if not old_sensitive:
        return False
    return not (new_sensitive and new_value == old_value)
