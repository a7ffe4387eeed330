"""The Segment destination through the real engine, against the Segment emulator on 127.0.0.1.

Each test builds a workspace (a DuckDB warehouse file, ebbtide.yml with the write key from
`${SEGMENT_WRITE_KEY}`) and runs `SyncService.run`, `ReplayService` and `ResetService` as the
CLI does. No mocks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import yaml

from ebbtide.config.models import SyncMode
from ebbtide.config.workspace import load_workspace
from ebbtide.destinations import DESTINATIONS
from ebbtide.destinations.segment import EVENT_LIMIT, SegmentConfig, events_of
from ebbtide.errors import ConfigErrors, DestinationError, EbbtideError, ErrorClass
from ebbtide.ports import (
    HASH_COLUMN,
    KEY_COLUMN,
    OP_COLUMN,
    RECORD_COLUMN,
    AdapterContext,
    OutboundBatch,
)
from ebbtide.services.replay import ReplayService
from ebbtide.services.reset import ResetService
from ebbtide.services.sync import SyncService
from ebbtide.values import FailureStatus, RunRecord, RunStatus
from tests.emulators.segment import REQUEST_LIMIT, SegmentEmulator

WRITE_KEY = "wk-segment-not-a-real-key-5521"
ROWS = 12
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")

# Users with a STRUCT profile (an object) and a LIST of STRUCT orders (an array of objects).
USERS = f"""
CREATE TABLE users AS SELECT
    i::BIGINT AS id,
    'user' || i || '@example.com' AS email,
    'User ' || i AS name,
    CASE WHEN i % 3 = 0 THEN 'pro' ELSE 'free' END AS plan,
    'org-' || (i % 2) AS company_id,
    TIMESTAMPTZ '2024-05-01 12:00:00+00' + i * INTERVAL 1 HOUR AS signed_up_at,
    {{'email': 'user' || i || '@example.com', 'plan': CASE WHEN i % 3 = 0 THEN 'pro'
      ELSE 'free' END, 'address': {{'city': 'City ' || i, 'zip': '0' || i}}}} AS profile,
    [{{'sku': 'sku-' || i, 'qty': i}}, {{'sku': 'extra', 'qty': 1}}] AS orders,
    (i * 2.25)::DECIMAL(10, 2) AS revenue
FROM range(1, {ROWS + 1}) t(i)
"""

MAPPINGS: dict[str, dict[str, Any]] = {
    "identify_users": {
        "action": "identify",
        "fields": {
            "userId": "id",
            "traits": {"object": "profile"},
            "timestamp": "signed_up_at",
        },
    },
    "track_signups": {
        "action": "track",
        "mode": "insert",
        "fields": {
            "userId": "id",
            "event": {"value": "Signed Up"},
            "properties": {
                "object": "profile",
                "properties": {
                    "plan": "plan",
                    "city": "address.city",
                    "orders": {"column": "orders"},
                    "revenue": {"column": "revenue"},
                },
            },
            "timestamp": "signed_up_at",
        },
    },
    "group_companies": {
        "action": "group",
        "fields": {
            "userId": "id",
            "groupId": "company_id",
            "traits": {"object": "profile", "properties": {"plan": "plan"}},
        },
    },
}


class Workspace:
    """A warehouse, ebbtide.yml and the services over them, against one emulator."""

    def __init__(self, root: Path, emulator: SegmentEmulator) -> None:
        self.root, self.emulator = root, emulator
        self.services: list[SyncService] = []
        self.sql(USERS)
        self.configure()

    def sql(self, *statements: str) -> None:
        with duckdb.connect(str(self.root / "warehouse.duckdb")) as con:
            for statement in statements:
                con.execute(statement)

    def configure(
        self, mappings: dict[str, dict[str, Any]] | None = None, **destination: Any
    ) -> None:
        doc = {
            "sources": {"warehouse": {"type": "duckdb", "path": "warehouse.duckdb"}},
            "models": {
                "users": {"source": "warehouse", "primary_key": "id", "sql": "select * from users"}
            },
            "destinations": {
                "segment": {
                    "type": "segment",
                    "write_key": "${SEGMENT_WRITE_KEY}",
                    "base_url": self.emulator.url,
                    **destination,
                }
            },
            "mappings": {
                name: {"model": "users", "destination": "segment", **spec}
                for name, spec in (mappings or MAPPINGS).items()
            },
        }
        (self.root / "ebbtide.yml").write_text(yaml.safe_dump(doc, sort_keys=False))

    def service(self) -> SyncService:
        service = SyncService(load_workspace(self.root))
        self.services.append(service)
        return service

    def run(self, name: str) -> RunRecord:
        return self.service().run(name)

    def failed(self, name: str) -> dict[str, Any]:
        book = self.services[-1].state.pending_failures
        return {r.key: r for r in book.listed(name, [FailureStatus.PENDING], 1000)}

    def close(self) -> None:
        for service in self.services:
            service.state.dispose()


@pytest.fixture
def emulator() -> Iterator[SegmentEmulator]:
    with SegmentEmulator(credential=WRITE_KEY) as running:
        assert isinstance(running, SegmentEmulator)
        yield running


@pytest.fixture
def workspace(
    tmp_path: Path, emulator: SegmentEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Workspace]:
    monkeypatch.setenv("SEGMENT_WRITE_KEY", WRITE_KEY)
    made = Workspace(tmp_path, emulator)
    yield made
    made.close()


def batches(emulator: SegmentEmulator) -> list[list[dict[str, Any]]]:
    return [s.json()["batch"] for s in emulator.requests_to("/v1/batch")]


def by_user(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["userId"]: e for e in events}


# -- payloads ---------------------------------------------------------------------------------


def test_identify_sends_segment_identify_events_in_a_batch_with_basic_auth(
    workspace: Workspace, emulator: SegmentEmulator
) -> None:
    run = workspace.run("identify_users")
    assert run.status is RunStatus.SUCCESS, run.error
    assert run.loaded_new == ROWS

    request = emulator.requests_to("/v1/batch")[0]
    expected = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert request.headers["Content-Type"] == "application/json"
    assert set(request.json()) == {"batch"}

    event = by_user(emulator.of_type("identify"))["7"]
    assert event["type"] == "identify"
    assert event["userId"] == "7"  # a BIGINT key sent as the string Segment's spec asks for
    assert event["traits"] == {
        "email": "user7@example.com",
        "plan": "free",
        "address": {"city": "City 7", "zip": "07"},
    }
    assert event["timestamp"] == "2024-05-01T19:00:00.000000Z"
    assert ISO_UTC.fullmatch(event["timestamp"])
    assert event["context"]["library"]["name"] == "ebbtide"
    assert event["messageId"].startswith("ebbtide-") and len(event["messageId"]) < 100
    assert "anonymousId" not in event and "event" not in event
    assert len(emulator.events) == ROWS and not emulator.dropped and not emulator.duplicates
    assert emulator.profiles()["3"]["plan"] == "pro"


def test_track_and_group_events_carry_an_object_and_an_array_end_to_end(
    workspace: Workspace, emulator: SegmentEmulator
) -> None:
    for name in ("track_signups", "group_companies"):
        run = workspace.run(name)
        assert run.status is RunStatus.SUCCESS, run.error
        assert run.loaded_new == ROWS

    track = by_user(emulator.of_type("track"))["4"]
    assert (track["type"], track["event"]) == ("track", "Signed Up")
    assert track["properties"] == {
        "plan": "free",
        "city": "City 4",
        "orders": [{"sku": "sku-4", "qty": 4}, {"sku": "extra", "qty": 1}],
        "revenue": 9.0,
    }
    raw = next(s.body for s in emulator.requests_to("/v1/batch") if b'"sku-4"' in s.body)
    assert b'"revenue":9.00' in raw  # every digit of the decimal, as the model has it
    assert ISO_UTC.fullmatch(track["timestamp"])
    assert track["context"]["library"]["name"] == "ebbtide"

    group = by_user(emulator.of_type("group"))["3"]
    assert (group["type"], group["groupId"]) == ("group", "org-1")
    assert group["traits"] == {"plan": "pro"}
    assert "timestamp" not in group  # not mapped: Segment stamps it on arrival

    # An insert-mode track sends a row once: a changed row is no new event.
    workspace.sql("UPDATE users SET plan = 'enterprise' WHERE id = 4")
    again = workspace.run("track_signups")
    assert (again.status, again.loaded_new, again.loaded_updated) == (RunStatus.SUCCESS, 0, 0)
    assert len(emulator.of_type("track")) == ROWS


def test_a_mirror_mapping_is_refused_before_anything_is_sent(
    workspace: Workspace, emulator: SegmentEmulator
) -> None:
    workspace.configure({"mirror": {**MAPPINGS["identify_users"], "mode": "mirror"}})
    with pytest.raises(EbbtideError, match="does not support mode mirror"):
        workspace.run("mirror")
    assert emulator.requests_to("/v1/batch") == []


# -- checked before sending --------------------------------------------------------------------


def test_events_segment_would_drop_fail_alone_as_mapping_naming_the_field_and_are_not_sent(
    workspace: Workspace, emulator: SegmentEmulator
) -> None:
    workspace.sql(
        "ALTER TABLE users ADD COLUMN anon VARCHAR",
        "UPDATE users SET anon = 'anon-' || id WHERE id = 5",
        "ALTER TABLE users ADD COLUMN uid VARCHAR",
        "UPDATE users SET uid = CAST(id AS VARCHAR) WHERE id NOT IN (2, 5)",
        "UPDATE users SET company_id = NULL WHERE id = 3",
        "UPDATE users SET name = NULL WHERE id = 4",
    )
    workspace.configure(
        {
            "identify": {"action": "identify", "fields": {"userId": "uid", "anonymousId": "anon"}},
            "track": {"action": "track", "fields": {"userId": "id", "event": "name"}},
            "group": {"action": "group", "fields": {"userId": "id", "groupId": "company_id"}},
        }
    )
    expected = {"identify": ("2", "userId"), "track": ("4", "event"), "group": ("3", "groupId")}
    for name, (key, field) in expected.items():
        run = workspace.run(name)
        assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
        failed = workspace.failed(name)
        assert set(failed) == {key}
        assert failed[key].error_class == ErrorClass.MAPPING
        assert field in failed[key].message
    # Row 5 has no userId but an anonymousId: that is enough.
    assert by_anonymous(emulator)["anon-5"]["type"] == "identify"
    sent = [e for batch in batches(emulator) for e in batch]
    assert len(sent) == 3 * (ROWS - 1)
    identified = [e for e in sent if e["type"] == "identify"]
    assert "2" not in {e.get("userId") for e in identified}
    assert all(e.get("userId") or e.get("anonymousId") for e in identified)
    assert not [e for e in sent if e["type"] == "track" and e["userId"] == "4"]
    assert not [e for e in sent if e["type"] == "group" and e["userId"] == "3"]
    assert not emulator.dropped


def by_anonymous(emulator: SegmentEmulator) -> dict[str, dict[str, Any]]:
    return {e["anonymousId"]: e for e in emulator.events.values() if "anonymousId" in e}


def test_a_track_mapping_without_event_is_refused_at_validation(
    workspace: Workspace, emulator: SegmentEmulator
) -> None:
    workspace.configure({"track": {"action": "track", "fields": {"userId": "id"}}})
    with pytest.raises(EbbtideError, match="requires field.*event"):
        workspace.run("track")
    assert emulator.requests_to("/v1/batch") == []


# -- messageId ---------------------------------------------------------------------------------


def test_message_ids_repeat_for_a_lost_answer_and_change_for_a_replay_or_a_reset(
    workspace: Workspace, emulator: SegmentEmulator
) -> None:
    workspace.configure({"identify_users": MAPPINGS["identify_users"]}, batch_size=100)
    # Segment takes the batch but its answer never arrives (a timeout, a crash): the sync
    # fails, and the records stay unacknowledged.
    emulator.lose_answers = 1000
    lost = workspace.run("identify_users")
    assert lost.status is RunStatus.FAILED and lost.loaded_new == 0
    assert len(emulator.events) == ROWS  # Segment has them all once…
    first = emulator.message_ids()
    assert len(first) > ROWS and len(set(first)) == ROWS  # …its retries in the run were dropped

    emulator.lose_answers = 0
    resent = workspace.run("identify_users")
    assert resent.status is RunStatus.SUCCESS and resent.loaded_new == ROWS
    second = emulator.message_ids()[len(first) :]
    assert set(second) == set(first)  # the same ids: Segment drops the resend
    assert len(emulator.events) == ROWS

    service = workspace.service()
    replays = ReplayService(service)
    replayed = replays.replay(replays.plan(resent.id))
    assert replayed.status is RunStatus.SUCCESS
    third = emulator.message_ids()[len(first) + len(second) :]
    assert len(third) == ROWS and not set(third) & set(first)  # new ids: Segment keeps them
    assert len(emulator.events) == 2 * ROWS

    ResetService(workspace.service()).reset("identify_users")
    after_reset = workspace.run("identify_users")
    assert after_reset.status is RunStatus.SUCCESS and after_reset.loaded_new == ROWS
    fourth = emulator.message_ids()[len(first) + len(second) + len(third) :]
    assert len(fourth) == ROWS and not set(fourth) & (set(first) | set(third))
    assert len(emulator.events) == 3 * ROWS

    # A changed row is a new version: a new id, even with the same epoch.
    workspace.sql("UPDATE users SET profile = {'email': 'new', 'plan': 'x', 'address': NULL}")
    changed = workspace.run("identify_users")
    assert changed.loaded_updated == ROWS
    assert len(emulator.events) == 4 * ROWS


# -- limits ------------------------------------------------------------------------------------


def test_an_event_over_32_kb_fails_alone_as_payload_too_large(
    workspace: Workspace, emulator: SegmentEmulator
) -> None:
    workspace.sql("UPDATE users SET name = repeat('x', 40000) WHERE id = 6")
    workspace.configure({"track": {"action": "track", "fields": {"userId": "id", "event": "name"}}})
    run = workspace.run("track")
    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    failed = workspace.failed("track")
    assert set(failed) == {"6"}
    assert failed["6"].error_class == ErrorClass.PAYLOAD_TOO_LARGE
    assert len(emulator.events) == ROWS - 1
    assert not [s for s in emulator.requests_to("/v1/batch") if b"x" * 1000 in s.body]


def test_an_event_the_envelope_takes_past_32_kb_is_refused_before_sending() -> None:
    """The destination's own net under max_record_bytes: a record under 32 KB whose event (with
    its type, messageId and context) is over is refused by itself, and the rest is sent."""
    data = {"userId": "1", "event": "Big", "properties": {"text": "y" * (EVENT_LIMIT - 110)}}
    records = [
        {"op": "added", "key": 1, "data": data},
        {"op": "added", "key": 2, "data": {"userId": "2", "event": "Small"}},
    ]
    batch = OutboundBatch(
        run_id=1,
        number=1,
        mapping="track",
        action="track",
        mode=SyncMode.UPSERT,
        records=pa.RecordBatch.from_pydict(
            {
                OP_COLUMN: ["added", "added"],
                KEY_COLUMN: ["1", "2"],
                RECORD_COLUMN: [json.dumps(r, separators=(",", ":")) for r in records],
                HASH_COLUMN: pa.array([11, 22], pa.uint64()),
            }
        ),
    )
    assert len(batch.records.column(RECORD_COLUMN)[0].as_py()) <= EVENT_LIMIT
    events, rejected = events_of(batch)
    assert [json.loads(e)["userId"] for e in events] == ["2"]
    assert [(r.key, r.error_class) for r in rejected] == [("1", ErrorClass.PAYLOAD_TOO_LARGE)]
    assert f"{EVENT_LIMIT:,}" in rejected[0].message


def test_requests_stay_under_500_kb_when_the_events_outgrow_the_records(
    workspace: Workspace, emulator: SegmentEmulator
) -> None:
    # 2,500 small records fit max_request_bytes (450,000) in one batch, but their events,
    # each with a type, a messageId and a context, pass Segment's 500 KB.
    workspace.sql(
        "CREATE OR REPLACE TABLE users AS SELECT i::BIGINT AS id, repeat('n', 120) AS name"
        " FROM range(1, 2501) t(i)"
    )
    workspace.configure(
        {"track": {"action": "track", "fields": {"userId": "id", "event": "name"}}},
        batch_size=2500,
        concurrency=1,
    )
    run = workspace.run("track")
    assert run.status is RunStatus.SUCCESS, run.error
    assert run.loaded_new == 2500 and len(emulator.events) == 2500
    requests = emulator.requests_to("/v1/batch")
    assert len(requests) >= 2
    assert max(len(s.body) for s in requests) <= REQUEST_LIMIT
    assert max(len(s.json()["batch"]) for s in requests) <= 2500


def test_limits_above_segments_are_refused_in_the_workspace(workspace: Workspace) -> None:
    for setting, value in (
        ("batch_size", 2501),
        ("max_request_bytes", 500_000),
        ("max_record_bytes", 32_000),
    ):
        workspace.configure(**{setting: value})
        with pytest.raises(ConfigErrors, match=setting):
            load_workspace(workspace.root)
    defaults = SegmentConfig(type="segment", write_key="k")
    assert (defaults.batch_size, defaults.max_request_bytes) == (100, 450_000)
    assert "write_key" not in repr(defaults)  # the key is never part of a repr


# -- check ---------------------------------------------------------------------------------


def test_check_accepts_the_write_key_and_refuses_a_wrong_one_as_auth(
    tmp_path: Path, emulator: SegmentEmulator
) -> None:
    plugin = DESTINATIONS.get("segment")
    assert plugin.check is not None
    good = SegmentConfig(type="segment", write_key=WRITE_KEY, base_url=emulator.url)
    said = asyncio.run(plugin.check(good, AdapterContext(tmp_path)))
    assert said.startswith("write key accepted by 127.0.0.1")
    assert WRITE_KEY not in said
    assert emulator.requests_to("/v1/batch")[-1].json() == {"batch": []}
    assert emulator.events == {}

    wrong = SegmentConfig(type="segment", write_key="wrong-key", base_url=emulator.url)
    with pytest.raises(DestinationError) as refused:
        asyncio.run(plugin.check(wrong, AdapterContext(tmp_path)))
    assert refused.value.error_class is ErrorClass.AUTH
