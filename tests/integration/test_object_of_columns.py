"""`{properties: {…}}` without `object:` builds an object from the model's columns (what
Segment's traits, HubSpot's properties and most vendor objects need from plain tables)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ebbtide.values import RunStatus
from tests.conformance.case import CREDENTIAL_VARIABLE
from tests.conformance.test_destinations import CREDENTIAL, Sync
from tests.emulators.webhook import CASE, WebhookEmulator

TRAITS = {
    "properties": {
        "email": "email",
        "plan": "plan",
        "score": {"column": "score"},
        "source": {"value": "warehouse"},
    }
}


@pytest.fixture
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookEmulator]:
    monkeypatch.setenv(CREDENTIAL_VARIABLE, CREDENTIAL)
    with WebhookEmulator(credential=CREDENTIAL) as running:
        yield running


def kit(root: Path, emulator: WebhookEmulator, fields: dict[str, object]) -> Sync:
    return Sync(root, replace(CASE, fields=fields), emulator)


def test_an_object_of_columns_is_sent_and_a_change_of_one_is_an_update(
    tmp_path: Path, emulator: WebhookEmulator
) -> None:
    sync = kit(tmp_path, emulator, {"email": "email", "traits": TRAITS})
    try:
        first = sync.run()
        assert first.status is RunStatus.SUCCESS, first.error
        assert emulator.held["3"]["traits"] == {
            "email": "user3@example.com",
            "plan": "pro",
            "score": 4.5,
            "source": "warehouse",
        }
        sync.sql("UPDATE users SET plan = 'team' WHERE id = 4")  # read only inside traits
        second = sync.run()
        assert second.updated == 1 and emulator.held["4"]["traits"]["plan"] == "team"
    finally:
        sync.close()


def test_a_property_naming_no_column_is_refused_naming_the_property(
    tmp_path: Path, emulator: WebhookEmulator
) -> None:
    sync = kit(tmp_path, emulator, {"traits": {"properties": {"tier": "plna"}}})
    try:
        run = sync.run()
        assert run.status is RunStatus.FAILED
        assert "property 'tier'" in (run.error or "") and "plna" in (run.error or ""), run.error
        assert not emulator.seen
    finally:
        sync.close()
