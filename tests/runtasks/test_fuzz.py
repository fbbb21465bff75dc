"""The callback API fuzzed from its own OpenAPI document (SPEC R4, X3, X4): schemathesis
generates valid and invalid requests for every operation of the document the real server serves, sent once as
generated and once on a real result with its valid token (so that the bodies are what is
fuzzed); no answer is a 5xx, and every answer is one the API documents."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.runtasks.conftest import CallbackApi

DOCUMENTED = {200, 401, 403, 404, 409, 413, 422}


def test_no_5xx_from_generated_requests(callback_api: CallbackApi) -> None:
    api = callback_api
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 3
    seen: set[int] = set()
    for operation, mode in [(op, mode) for op in operations for mode in schemathesis.GenerationMode]:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            response = case.call(base_url=api.url)
            assert response.status_code < 500, response.text
            assert response.status_code in DOCUMENTED, response.text
            seen.add(response.status_code)
            rid, token = api.result()
            case.path_parameters = {**(case.path_parameters or {}), "result_id": str(rid)}
            response = case.call(base_url=api.url, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code < 500, response.text
            assert response.status_code in DOCUMENTED, response.text
            seen.add(response.status_code)

        check()
    # The fuzzing reached past the token check: accepted, refused and invalid bodies all came up.
    assert {200, 401, 422} <= seen, seen
