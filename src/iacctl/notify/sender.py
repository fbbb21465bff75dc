"""One delivery attempt: a POST of exact bytes, and what came back (SPEC F1, F3).

httpx is used here only. Errors are described without the URL: a Slack webhook URL is a
secret (X2), and the delivery log keeps every attempt's error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

CONNECT_TIMEOUT_S = 5.0
TOTAL_TIMEOUT_S = 15.0
EXCERPT_BYTES = 1024  # the delivery log keeps the first 1 KB of an answer
USER_AGENT = "iacctl-notifications"


@dataclass(frozen=True)
class Attempt:
    http_status: int | None  # None: no answer (connection error, timeout)
    duration_s: float
    error: str | None = None
    excerpt: str | None = None
    retry_after: str | None = None  # the Retry-After header as sent


def post(url: str, body: bytes, headers: dict[str, str], *, total_timeout_s: float = TOTAL_TIMEOUT_S) -> Attempt:
    import httpx

    started = time.monotonic()
    deadline = started + total_timeout_s
    timeout = httpx.Timeout(total_timeout_s, connect=min(CONNECT_TIMEOUT_S, total_timeout_s))
    sent = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
    try:
        # No redirects: a POST turned into a GET by a 302 is lost without a word; a moved
        # receiver is a permanent failure that names itself.
        with httpx.Client(timeout=timeout, follow_redirects=False) as client, \
                client.stream("POST", url, content=body, headers=sent) as response:
            chunks = bytearray()
            for chunk in response.iter_bytes():
                chunks += chunk
                if len(chunks) >= EXCERPT_BYTES:
                    break  # the rest is not kept, so not waited for
                if time.monotonic() > deadline:
                    break
            excerpt = bytes(chunks[:EXCERPT_BYTES]).decode("utf-8", "replace")
            error = None
            if not 200 <= response.status_code < 300:
                error = f"HTTP {response.status_code}"
                if 300 <= response.status_code < 400:
                    error += " (a redirect; iacctl does not follow it: update the URL)"
            return Attempt(response.status_code, time.monotonic() - started, error, excerpt or None,
                           response.headers.get("retry-after"))
    except httpx.ConnectTimeout:
        error = f"no connection within {CONNECT_TIMEOUT_S:g} s"
    except httpx.TimeoutException:
        error = f"no answer within {total_timeout_s:g} s"
    except httpx.ConnectError as exc:
        error = f"cannot connect: {_reason(exc)}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {_reason(exc)}"
    return Attempt(None, time.monotonic() - started, error)


def _reason(exc: Exception) -> str:
    """The cause without the URL (httpx puts the URL in some messages)."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "Temporary failure in name resolution",
                   "No route to host", "Network is unreachable", "Connection reset by peer",
                   "certificate verify failed", "Server disconnected"):
        if marker.lower() in text.lower():
            return marker.lower()
    return type(exc).__name__
