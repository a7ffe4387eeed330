"""The Amplitude destination through the real engine (DuckDB warehouse, ebbtide.yml,
`SyncService.run`) against the Amplitude emulator on 127.0.0.1: a 400 naming invalid events (the
others sent again and loaded), 413 halving, throttling, insert_id, and identify."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from ebbtide.config.workspace import load_workspace
from ebbtide.destinations import DESTINATIONS
from ebbtide.errors import ErrorClass
from ebbtide.services.replay import ReplayService
from ebbtide.services.sync import SyncService
from ebbtide.values import FailureStatus, RunStatus
from tests.emulators.amplitude import AmplitudeEmulator

KEY = "amp-key-not-a-real-secret-7301"
ROWS = 30
EVENT_FIELDS: dict[str, Any] = {
    "user_id": "user_id",
    "event_type": {"value": "Plan Synced"},
    "time": "signed_up",
    "event_properties": {
        "object": "details",
        "properties": {"email": "email", "orders": "orders"},
    },
    "user_properties": {"object": "details", "properties": {"plan": "plan"}},
}
SQL = (
    "select id, 'user-' || id AS user_id, email, plan, signed_up,"
    " {'source': 'warehouse'} AS details,"
    " [{'sku': 'A-' || id, 'qty': 1}, {'sku': 'B', 'qty': 2}] AS orders from users"
)


class Kit:
    """A workspace syncing `users` (id, email, plan, signed_up) to Amplitude."""

    def __init__(self, root: Path, emulator: AmplitudeEmulator) -> None:
        self.root, self.emulator = root, emulator
        self.services: list[SyncService] = []
        self.sql(
            "CREATE TABLE users AS SELECT i::BIGINT AS id, 'user' || i || '@example.com' AS email,"
            " CASE WHEN i % 3 = 0 THEN 'pro' ELSE 'free' END AS plan,"
            " TIMESTAMP '2026-01-01 00:00:00' + i * INTERVAL 1 MINUTE AS signed_up"
            f" FROM range(1, {ROWS + 1}) t(i)"
        )

    def sql(self, *statements: str) -> None:
        with duckdb.connect(str(self.root / "warehouse.duckdb")) as con:
            for statement in statements:
                con.execute(statement)

    def configure(
        self,
        fields: dict[str, Any] = EVENT_FIELDS,
        *,
        action: str = "track_events",
        mode: str = "upsert",
        **destination: Any,
    ) -> None:
        doc = {
            "sources": {"warehouse": {"type": "duckdb", "path": "warehouse.duckdb"}},
            "models": {"users": {"source": "warehouse", "primary_key": "id", "sql": SQL}},
            "destinations": {
                "amplitude": {
                    "type": "amplitude",
                    "base_url": self.emulator.url,
                    "api_key": "${AMPLITUDE_KEY}",
                    "batch_size": 10,
                    "concurrency": 1,
                    **destination,
                }
            },
            "mappings": {
                "users": {
                    "model": "users",
                    "destination": "amplitude",
                    "action": action,
                    "mode": mode,
                    "fields": fields,
                }
            },
        }
        (self.root / "ebbtide.yml").write_text(yaml.safe_dump(doc, sort_keys=False))

    def service(self) -> SyncService:
        service = SyncService(load_workspace(self.root))
        self.services.append(service)
        return service

    def run(self) -> Any:
        return self.service().run("users")

    def failed(self) -> dict[str, Any]:
        book = self.services[-1].state.pending_failures
        return {r.key: r for r in book.listed("users", [FailureStatus.PENDING], 1000)}

    def close(self) -> None:
        for service in self.services:
            service.state.dispose()


@pytest.fixture
def emulator() -> Iterator[AmplitudeEmulator]:
    with AmplitudeEmulator(credential=KEY) as running:
        yield running  # type: ignore[misc]


@pytest.fixture
def kit(
    tmp_path: Path, emulator: AmplitudeEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Kit]:
    monkeypatch.setenv("AMPLITUDE_KEY", KEY)
    made = Kit(tmp_path, emulator)
    made.configure()
    yield made
    made.close()


def sent_ids(emulator: AmplitudeEmulator) -> list[list[str]]:
    """Per /2/httpapi request, the insert_id of each event, in order."""
    return [
        [e["insert_id"] for e in s.json()["events"]] for s in emulator.requests_to("/2/httpapi")
    ]


def by_user(emulator: AmplitudeEmulator) -> dict[str, dict[str, Any]]:
    return {e["user_id"]: e for e in emulator.events.values()}


def test_events_arrive_with_time_properties_and_an_array_of_objects(
    kit: Kit, emulator: AmplitudeEmulator
) -> None:
    run = kit.run()
    assert run.status is RunStatus.SUCCESS, run.error
    event = by_user(emulator)["user-7"]
    assert event["event_type"] == "Plan Synced"
    assert event["time"] == 1_767_225_600_000 + 7 * 60_000
    assert event["event_properties"] == {
        "email": "user7@example.com",
        "orders": [{"sku": "A-7", "qty": 1}, {"sku": "B", "qty": 2}],
    }
    assert event["user_properties"] == {"plan": "free"}
    assert len(emulator.events) == ROWS


def test_a_400_naming_invalid_events_fails_them_and_loads_the_others_resent(
    kit: Kit, emulator: AmplitudeEmulator
) -> None:
    emulator.reject_values = {"user4@example.com", "user17@example.com"}
    run = kit.run()
    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    assert run.loaded_new == ROWS - 2
    failed = kit.failed()
    assert set(failed) == {"4", "17"}
    assert failed["4"].error_class == ErrorClass.VALIDATION
    assert "event_properties is invalid" in failed["4"].message
    assert set(by_user(emulator)) == {f"user-{i}" for i in range(1, ROWS + 1)} - {
        "user-4",
        "user-17",
    }
    # Each batch with an invalid event went twice: the second time without it.
    ids = sent_ids(emulator)
    assert len(ids) == ROWS // 10 + 2
    resends = [(a, b) for a, b in zip(ids, ids[1:], strict=False) if set(b) < set(a)]
    assert len(resends) == 2 and all(len(a) - len(b) == 1 for a, b in resends)


def test_a_missing_field_named_by_index_fails_that_event_alone(
    kit: Kit, emulator: AmplitudeEmulator
) -> None:
    emulator.fail_next(
        400,
        {
            "code": 400,
            "error": "Request missing required field",
            "events_with_missing_fields": {"event_type": [2]},
            "events_with_invalid_fields": {"time": [5]},
        },
    )
    run = kit.run()
    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    first = emulator.requests_to("/2/httpapi")[0].json()["events"]
    refused = {first[2]["user_id"].removeprefix("user-"), first[5]["user_id"].removeprefix("user-")}
    failed = kit.failed()
    assert set(failed) == refused
    messages = sorted(f.message for f in failed.values())
    assert any("event_type is missing" in m for m in messages)
    assert any("time is invalid" in m for m in messages)
    assert len(emulator.events) == ROWS - 2 and run.loaded_new == ROWS - 2


def test_a_413_halves_the_batch_to_the_event_too_large(
    kit: Kit, emulator: AmplitudeEmulator
) -> None:
    emulator.request_bytes = 6_000  # a batch of ten of these events fits, not one of 7,000 bytes
    kit.sql("UPDATE users SET email = repeat('x', 7000) || '@example.com' WHERE id = 13")
    run = kit.run()
    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    failed = kit.failed()
    assert set(failed) == {"13"}
    assert failed["13"].error_class == ErrorClass.PAYLOAD_TOO_LARGE
    assert len(emulator.events) == ROWS - 1 and run.loaded_new == ROWS - 1
    requests = emulator.requests_to("/2/httpapi")
    refused = [s for s in requests if len(s.body) > 6_000]
    assert refused and len(refused[0].json()["events"]) == 10  # the whole batch, then halves
    assert len(requests) > ROWS // 10 + 1


def test_throttled_users_are_retried_as_rate_limited(kit: Kit, emulator: AmplitudeEmulator) -> None:
    throttled = {
        "code": 429,
        "error": "Too many requests for some devices and users",
        "eps_threshold": 1000,
        "throttled_users": {"user-1": 1001},
        "throttled_events": [0],
        "exceeded_daily_quota_users": {"user-2": 500_001},
    }
    emulator.fail_next(429, throttled)
    run = kit.run()
    assert run.status is RunStatus.SUCCESS, run.error
    assert len(emulator.events) == ROWS
    ids = sent_ids(emulator)
    assert ids[0] == ids[1]  # the same events again, with the same insert_ids


def test_insert_ids_repeat_on_a_resend_and_change_on_a_replay(
    kit: Kit, emulator: AmplitudeEmulator
) -> None:
    emulator.answer_lost = 1
    service = kit.service()
    run = service.run("users")
    assert run.status is RunStatus.SUCCESS, run.error
    ids = sent_ids(emulator)
    assert ids[0] == ids[1]
    assert emulator.ingested == ROWS + 10 and len(emulator.events) == ROWS  # deduplicated
    replays = ReplayService(service)
    assert replays.replay(replays.plan(run.id)).status is RunStatus.SUCCESS
    assert len(emulator.events) == 2 * ROWS  # a replay is meant to be ingested again


def test_short_ids_are_refused_before_sending_unless_min_id_length_allows_them(
    kit: Kit, emulator: AmplitudeEmulator
) -> None:
    kit.configure({**EVENT_FIELDS, "user_id": "id"})
    run = kit.run()
    assert run.status is RunStatus.FAILED
    failed = kit.failed()
    assert len(failed) == ROWS and failed["3"].error_class == ErrorClass.MAPPING
    assert "min_id_length" in failed["3"].message
    assert emulator.requests_to("/2/httpapi") == []

    kit.configure({**EVENT_FIELDS, "user_id": "id"}, min_id_length=1)
    again = kit.run()
    assert again.status is RunStatus.SUCCESS, again.error
    assert {s.json()["options"]["min_id_length"] for s in emulator.requests_to("/2/httpapi")} == {1}


def test_identify_sets_user_properties(kit: Kit, emulator: AmplitudeEmulator) -> None:
    kit.configure(
        {
            "user_id": "user_id",
            "country": {"value": "France"},
            "user_properties": {"object": "details", "properties": {"plan": "plan"}},
        },
        action="identify",
    )
    run = kit.run()
    assert run.status is RunStatus.SUCCESS, run.error
    assert emulator.users["user-3"]["plan"] == "pro"
    assert emulator.users["user-3"]["country"] == "France"
    assert len(emulator.users) == ROWS


def test_a_wrong_api_key_stops_the_run_as_auth(
    kit: Kit, emulator: AmplitudeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMPLITUDE_KEY", "wrong-key-0042")
    run = kit.run()
    assert run.status is RunStatus.FAILED
    assert "auth" in (run.error or "").lower() or "api_key" in (run.error or "")
    assert "wrong-key-0042" not in (run.error or "")
    assert len(emulator.requests_to("/2/httpapi")) == 1 and not emulator.events


def test_amplitude_has_no_credentials_check() -> None:
    assert DESTINATIONS.get("amplitude").check is None
