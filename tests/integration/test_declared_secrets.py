"""A destination's declared secret settings are masked even when written literally in
ebbtide.yml, and an `auth` failure's recommended action names the setting to fix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ebbtide.services.history import History
from ebbtide.values import RunStatus
from tests.conformance.case import CREDENTIAL_VARIABLE
from tests.conformance.test_destinations import Sync
from tests.emulators.webhook import CASE, WebhookEmulator

LITERAL = "literal-token-written-in-the-file-3391"


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Sync, WebhookEmulator]]:
    monkeypatch.setenv(CREDENTIAL_VARIABLE, "unused")
    with WebhookEmulator(credential=LITERAL) as emulator:
        sync = Sync(tmp_path, CASE, emulator)
        sync.configure(
            headers={"Authorization": f"Bearer {LITERAL}", "X-Source": "ebbtide-conformance"}
        )
        yield sync, emulator
        sync.close()


def test_a_literal_credential_is_masked_where_the_destination_echoes_it(
    kit: tuple[Sync, WebhookEmulator],
) -> None:
    sync, emulator = kit
    emulator.fail_next(
        400, {"error": f"bad request, token {LITERAL}, X-Source ebbtide-conformance"}, times=1000
    )
    run = sync.run()
    assert run.status is RunStatus.FAILED
    failures = sync.services[-1].state.failures(run.id, limit=100)
    texts = [run.error or ""] + [f.message for f in failures]
    assert failures and not [t for t in texts if LITERAL in t]
    # Only credentials are secrets: a plain header's value stays readable.
    assert any("ebbtide-conformance" in t for t in texts)


def test_an_auth_failure_names_the_declared_credential_setting(
    kit: tuple[Sync, WebhookEmulator],
) -> None:
    sync, emulator = kit
    emulator.credential = "rotated-by-the-vendor"
    run = sync.run()
    assert run.status is RunStatus.FAILED
    service = sync.services[-1]
    [group] = History(service.workspace, service.state).error_groups(run.id)
    assert "`destinations.vendor.headers`" in group.recommended_action
