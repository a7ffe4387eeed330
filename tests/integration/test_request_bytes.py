"""`max_request_bytes`: a batch goes out in as many requests as the destination's per-request
byte limit takes, each acknowledged on its own; a record larger than the limit goes alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ebbtide.values import RunStatus
from tests.conformance.case import CREDENTIAL_VARIABLE
from tests.conformance.test_destinations import CREDENTIAL, Sync
from tests.emulators.base import Seen
from tests.emulators.webhook import CASE, WebhookEmulator

LIMIT = 2_000


@pytest.fixture
def sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Sync, WebhookEmulator]]:
    monkeypatch.setenv(CREDENTIAL_VARIABLE, CREDENTIAL)
    with WebhookEmulator(credential=CREDENTIAL) as emulator:
        kit = Sync(tmp_path, CASE, emulator)
        kit.configure(batch_size=40, max_request_bytes=LIMIT)
        yield kit, emulator
        kit.close()


def record_bytes(seen: Seen) -> int:
    """The records' JSON in a request, as the engine measures it (compact)."""
    return sum(len(json.dumps(r, separators=(",", ":"))) for r in seen.json()["records"])


def test_a_batch_is_sent_in_requests_within_the_byte_limit(
    sync: tuple[Sync, WebhookEmulator],
) -> None:
    kit, emulator = sync
    run = kit.run()
    assert run.status is RunStatus.SUCCESS, run.error
    assert run.loaded_new == 40
    requests = emulator.requests_to("/ingest")
    assert len(requests) > 1  # one batch of 40 records, several requests
    assert all(len(s.json()["records"]) < 40 for s in requests)
    assert all(record_bytes(s) <= LIMIT for s in requests)
    keys = [s.headers["Idempotency-Key"] for s in requests]
    assert len(keys) == len(set(keys))  # each request is acknowledged, and retried, on its own
    assert len(CASE.held(emulator)) == 40


def test_a_record_over_the_request_limit_goes_alone(sync: tuple[Sync, WebhookEmulator]) -> None:
    kit, emulator = sync
    kit.sql(f"UPDATE users SET name = repeat('y', {LIMIT * 2}) WHERE id = 5")
    run = kit.run()
    assert run.status is RunStatus.SUCCESS, run.error  # the webhook takes it: only the limit split
    alone = [s for s in emulator.requests_to("/ingest") if record_bytes(s) > LIMIT]
    assert [[r["key"] for r in s.json()["records"]] for s in alone] == [[5]]
