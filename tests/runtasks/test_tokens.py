"""Run-task tokens (SPEC R3, X3): JWT HS256 with result, task, workspace and stage claims,
expiring at min(timeout, 24 h), signed with a key derived from the installation's key."""

from __future__ import annotations

import os
import time

import jwt
import pytest

from iacctl.crypto import Cipher
from iacctl.runtasks import tokens

CIPHER = Cipher(os.urandom(32))


def _token(result_id: int = 5, ttl: float = 600) -> str:
    return tokens.issue(CIPHER, result_id=result_id, task_id=9, workspace_id=2, stage="pre_apply", ttl_s=ttl)


def test_claims_bind_result_task_workspace_and_stage() -> None:
    token = _token()
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = tokens.check(CIPHER, token, "5")
    assert (claims.result_id, claims.task_id, claims.workspace_id, claims.stage) == (5, 9, 2, "pre_apply")
    assert abs(claims.expires_at - (time.time() + 600)) < 5


def test_ttl_is_the_timeout_at_most_24h() -> None:
    assert tokens.ttl_for(120) == 120 and tokens.ttl_for(3 * 86400) == 86400


def test_other_result_is_forbidden_and_bad_tokens_invalid() -> None:
    with pytest.raises(tokens.TokenForbidden):
        tokens.check(CIPHER, _token(5), "6")
    for bad in (None, "", "x", _token(ttl=-30), tokens.issue(Cipher(os.urandom(32)), result_id=5, task_id=9,
                                                                 workspace_id=2, stage="pre_apply", ttl_s=60)):
        with pytest.raises(tokens.TokenInvalid):
            tokens.check(CIPHER, bad, "5")


def test_each_result_gets_a_fresh_token() -> None:
    assert _token() != _token()
