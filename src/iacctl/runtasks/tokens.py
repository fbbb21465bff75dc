"""Run-task access tokens (SPEC R3, R4, X3): a fresh JWT (HS256) per task result, bound to the
result, task, workspace and stage, expiring at min(timeout, 24 h).

The signing key is derived from the installation's secret key (crypto.Cipher.derive): every
process on the same store signs and checks alike, and the key is never stored or printed.
Checking a token here proves it was issued by this installation for this result; the server
also compares it with the stored (encrypted) copy, which is cleared after the final callback.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from iacctl.crypto import Cipher

ALGORITHM = "HS256"
MAX_TTL_S = 24 * 3600.0
ISSUER = "iacctl"
_KEY_LABEL = "run-task-tokens"


class TokenInvalid(Exception):
    """No token, a malformed or expired one, or one this installation did not sign (401)."""


class TokenForbidden(Exception):
    """A valid token, but of another task result (403)."""


@dataclass(frozen=True)
class TokenClaims:
    result_id: int
    task_id: int
    workspace_id: int
    stage: str
    expires_at: float


def ttl_for(timeout_s: float) -> float:
    """R3: a token lives as long as its result may be waited for, at most 24 h."""
    return min(timeout_s, MAX_TTL_S)


def issue(cipher: Cipher, *, result_id: int, task_id: int, workspace_id: int, stage: str,
          ttl_s: float) -> str:
    import jwt

    t = time.time()
    claims = {
        "iss": ISSUER,
        "sub": f"task-result:{result_id}",
        "jti": uuid.uuid4().hex,
        "iat": int(t),
        "nbf": int(t) - 5,
        "exp": int(t + ttl_s) + 1,
        "result_id": str(result_id),
        "task_id": task_id,
        "workspace_id": f"ws-{workspace_id}",
        "stage": stage,
    }
    return jwt.encode(claims, cipher.derive(_KEY_LABEL), algorithm=ALGORITHM)


def check(cipher: Cipher, token: str | None, result_id: str) -> TokenClaims:
    """R4: the claims of a token valid for the task result `result_id`. TokenInvalid for none,
    malformed, expired or foreign tokens; TokenForbidden for another result's token."""
    import jwt

    if not token:
        raise TokenInvalid("no access token")
    try:
        # The signature check inside PyJWT is hmac.compare_digest (X3: constant time).
        claims = jwt.decode(
            token, cipher.derive(_KEY_LABEL), algorithms=[ALGORITHM], issuer=ISSUER,
            options={"require": ["exp", "iat", "iss", "sub"]},
        )
        claimed = str(claims["result_id"])
        parsed = TokenClaims(
            result_id=int(claimed), task_id=int(claims["task_id"]),
            workspace_id=int(str(claims["workspace_id"]).removeprefix("ws-")), stage=str(claims["stage"]),
            expires_at=float(claims["exp"]),
        )
    except jwt.ExpiredSignatureError:
        raise TokenInvalid("the access token has expired") from None
    except (jwt.InvalidTokenError, KeyError, TypeError, ValueError):
        raise TokenInvalid("the access token is not valid") from None
    if claimed != result_id:
        raise TokenForbidden("the access token belongs to another task result")
    return parsed
