"""What the user hands a command that is not a name: URLs of services iacctl calls, and files
holding a secret (HMAC keys, tokens). One reading for run tasks and notification destinations,
so both refuse the same bad input with the same kind of line (SPEC X4)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from iacctl.errors import UsageError

# A key or token is a few dozen bytes; a bigger file is the wrong file, not a key.
MAX_SECRET_BYTES = 4096


def check_url(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"invalid {what} {url!r}: use an absolute http:// or https:// URL")
    return url


def read_secret_file(path: str, what: str) -> bytes:
    """The secret in the file at `path`, surrounding whitespace removed; it is never echoed."""
    p = Path(path).expanduser()
    try:
        if p.stat().st_size > MAX_SECRET_BYTES:
            raise UsageError(f"{what} file {path} is over {MAX_SECRET_BYTES} bytes")
        data = p.read_bytes()
    except IsADirectoryError:
        raise UsageError(f"cannot read {what} file {path}: it is a directory") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} file {path}: {exc.strerror}") from None
    secret = data.strip()
    if not secret:
        raise UsageError(f"{what} file {path} is empty")
    return secret
