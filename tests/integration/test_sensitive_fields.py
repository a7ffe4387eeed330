"""Configured sensitive fields never reach a stored payload; unknown ones are a config error."""

from __future__ import annotations

import json

import pytest

from ebbtide.demo.receiver import Receiver
from ebbtide.errors import ConfigErrors
from tests.integration.workspace_kit import Kit, mapping


def test_sensitive_fields_are_masked_in_stored_failure_payloads(
    kit: Kit, receiver: Receiver
) -> None:
    service = kit.build(
        receiver.url, rows=20, mappings={"users": mapping("upsert", sensitive=["email"])}
    )
    receiver.reject(3, code="BAD", message="rejected")
    run = service.run("users")
    [failure] = service.state.failures(run.id)
    payload = json.loads(failure.payload or "{}")
    assert payload["data"]["email"] == "***"
    assert payload["key"] == 3
    assert "@" not in (failure.payload or "")
    # What was sent is untouched: masking applies to what ebbtide stores and shows.
    sent = next(r for r in receiver.records if r["key"] == 3)
    assert "@" in sent["data"]["email"]
    assert payload["data"]["plan"] == sent["data"]["plan"]  # other fields are kept


def test_a_sensitive_field_that_is_not_mapped_is_a_config_error(kit: Kit) -> None:
    with pytest.raises(ConfigErrors, match="sensitive field.*'emial'.*did you mean 'email'"):
        kit.build("http://127.0.0.1:9/x", rows=1, mappings={"users": mapping(sensitive=["emial"])})
