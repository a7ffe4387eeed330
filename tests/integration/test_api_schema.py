"""Schemathesis against the API's own OpenAPI document: requests generated from it, with a
write token, never get a 500 (every refusal is a 4xx that says why), and every answer has the
shape the document declares."""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error, response_schema_conformance

from tests.integration.api_kit import Api

pytestmark = pytest.mark.xdist_group("schemathesis")  # one worker: hypothesis is CPU-bound


SETTINGS = hypothesis.settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,  # the same requests on every run: a failure is reproducible, never flaky
    database=None,
)


def test_no_generated_request_gets_a_server_error(api: Api) -> None:
    api.service.run("users_mirror")  # a run, a journal and a snapshot to be found
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", api.client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    for operation in operations:
        if operation.path.endswith("/events"):
            continue  # a stream that lasts while a run does: covered by test_api_actions

        @SETTINGS
        @hypothesis.given(case=operation.as_strategy())
        def answered(case: schemathesis.Case) -> None:
            case.call_and_validate(
                headers=dict(api.write), checks=[not_a_server_error, response_schema_conformance]
            )

        answered()
