"""Property-based API testing: schemathesis generates requests from the app's OpenAPI schema
(valid and invalid ones) against the live server; no request may get a 5xx, and every status
code must be one the schema documents. Bounded: `max_examples` per operation and mode.

Random model names only ever reach the 404 path, so half the generated requests get the served
model's name, which lets them reach validation and generation."""

from __future__ import annotations

import collections
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error, status_code_conformance  # noqa: E402


@pytest.fixture(scope="module")
def api_schema(server: str) -> Any:
    return schemathesis.openapi.from_url(server + "/openapi.json")


@pytest.mark.slow
def test_no_server_errors(api_schema: Any) -> None:
    ops = [r.ok() for r in api_schema.get_all_operations()]
    assert {op.path for op in ops} >= {"/v1/chat/completions", "/v1/completions", "/v1/models"}
    statuses: collections.Counter[tuple[str, int]] = collections.Counter()
    for op in ops:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode), served=st.booleans())
            @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
            def check(case: Any, served: bool) -> None:
                if served and isinstance(case.body, dict) and "model" in case.body:
                    case.body["model"] = "tiny"
                if served and case.path_parameters and "model" in case.path_parameters:
                    case.path_parameters["model"] = "tiny"
                response = case.call_and_validate(
                    checks=[not_a_server_error, status_code_conformance], timeout=60
                )
                statuses[case.operation.path, response.status_code] += 1

            try:
                check()
            except Unsatisfiable:  # a GET without parameters has no invalid form
                assert mode == GenerationMode.NEGATIVE
    # The run reached generation, not only the error paths.
    assert statuses["/v1/completions", 200] and statuses["/v1/chat/completions", 200], statuses
