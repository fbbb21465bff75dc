"""Sending run-task requests (SPEC R1, R2, R5). httpx errors are translated here into
DeliveryError: a request that cannot be delivered, or is answered with anything but 200, is a
`webhook_error` (O4), never "nothing was delivered, so everything passed" (C3)."""

from __future__ import annotations

from iacctl.domain.durations import format_duration
from iacctl.runtasks.protocol import SIGNATURE_HEADER

SEND_TIMEOUT_S = 30.0


class DeliveryError(Exception):
    """The run task's service could not be reached or did not answer 200."""


def deliver(url: str, body: bytes, signature: str, *, timeout_s: float = SEND_TIMEOUT_S) -> None:
    import httpx

    headers = {
        "Content-Type": "application/json",
        "User-Agent": "iacctl-run-tasks",
        SIGNATURE_HEADER: signature,  # R2: present and empty when the run task has no key
    }
    try:
        # No redirects: a POST turned into a GET by a 302 would be lost without a word.
        response = httpx.post(url, content=body, headers=headers, timeout=timeout_s, follow_redirects=False)
    except httpx.TimeoutException:
        raise DeliveryError(f"{url} did not answer within {format_duration(timeout_s)}") from None
    except httpx.HTTPError as exc:
        raise DeliveryError(f"cannot reach {url}: {type(exc).__name__}: {exc}".rstrip(": ")) from None
    if response.status_code != 200:
        raise DeliveryError(f"{url} answered HTTP {response.status_code}, not 200")
