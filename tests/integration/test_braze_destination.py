"""The Braze destination through the real engine (DuckDB warehouse, ebbtide.yml,
`SyncService.run`) against the Braze emulator on 127.0.0.1: per-array error indexes, deletes,
the rate-limit reset header, objects and arrays of objects, and the credentials check."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from ebbtide.config.workspace import load_workspace
from ebbtide.destinations import DESTINATIONS
from ebbtide.errors import DestinationError, ErrorClass
from ebbtide.ports import AdapterContext
from ebbtide.services.sync import SyncService
from ebbtide.values import FailureStatus, RunStatus
from tests.emulators.braze import BrazeEmulator

KEY = "braze-key-not-a-real-secret-3190"
ROWS = 30


class Kit:
    """A workspace syncing `users` (id, email, name, plan) to Braze."""

    def __init__(self, root: Path, emulator: BrazeEmulator) -> None:
        self.root, self.emulator = root, emulator
        self.services: list[SyncService] = []
        self.sql(
            "CREATE TABLE users AS SELECT i::BIGINT AS id, 'user' || i || '@example.com' AS email,"
            " 'User ' || i AS name, CASE WHEN i % 3 = 0 THEN 'pro' ELSE 'free' END AS plan,"
            " TIMESTAMP '2026-01-01 00:00:00' + i * INTERVAL 1 MINUTE AS signed_up"
            f" FROM range(1, {ROWS + 1}) t(i)"
        )

    def sql(self, *statements: str) -> None:
        with duckdb.connect(str(self.root / "warehouse.duckdb")) as con:
            for statement in statements:
                con.execute(statement)

    def configure(
        self,
        fields: dict[str, Any],
        *,
        action: str = "track_attributes",
        mode: str = "mirror",
        sql: str = "select * from users",
        **destination: Any,
    ) -> None:
        doc = {
            "sources": {"warehouse": {"type": "duckdb", "path": "warehouse.duckdb"}},
            "models": {"users": {"source": "warehouse", "primary_key": "id", "sql": sql}},
            "destinations": {
                "braze": {
                    "type": "braze",
                    "base_url": self.emulator.url,
                    "api_key": "${BRAZE_KEY}",
                    "batch_size": 10,
                    "concurrency": 2,
                    **destination,
                }
            },
            "mappings": {
                "users": {
                    "model": "users",
                    "destination": "braze",
                    "action": action,
                    "mode": mode,
                    "fields": fields,
                }
            },
        }
        (self.root / "ebbtide.yml").write_text(yaml.safe_dump(doc, sort_keys=False))

    def run(self) -> Any:
        service = SyncService(load_workspace(self.root))
        self.services.append(service)
        return service.run("users")

    def failed(self) -> dict[str, Any]:
        book = self.services[-1].state.pending_failures
        return {r.key: r for r in book.listed("users", [FailureStatus.PENDING], 1000)}

    def close(self) -> None:
        for service in self.services:
            service.state.dispose()


@pytest.fixture
def emulator() -> Iterator[BrazeEmulator]:
    with BrazeEmulator(credential=KEY) as running:
        yield running  # type: ignore[misc]


@pytest.fixture
def kit(tmp_path: Path, emulator: BrazeEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kit]:
    monkeypatch.setenv("BRAZE_KEY", KEY)
    made = Kit(tmp_path, emulator)
    made.configure({"external_id": "id", "email": "email", "first_name": "name"})
    yield made
    made.close()


def test_an_error_at_an_index_of_attributes_refuses_exactly_that_record(
    kit: Kit, emulator: BrazeEmulator
) -> None:
    kit.configure({"external_id": "id", "email": "email"}, batch_size=10, concurrency=1)
    # The first request's answer names index 3 of attributes, and an index of another array.
    errors = [
        {"type": "'email' is not valid", "input_array": "attributes", "index": 3},
        {"type": "'price' is not valid", "input_array": "purchases", "index": 0},
    ]
    emulator.fail_next(201, {"message": "success", "errors": errors})
    run = kit.run()
    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    first = emulator.requests_to("/users/track")[0].json()["attributes"]
    refused = str(first[3]["external_id"])
    failed = kit.failed()
    assert set(failed) == {refused}
    assert failed[refused].error_class == ErrorClass.VALIDATION
    assert failed[refused].message == "'email' is not valid"
    assert run.loaded_new == ROWS - 1


def test_events_refused_by_index_fail_alone_and_the_others_are_tracked(
    kit: Kit, emulator: BrazeEmulator
) -> None:
    kit.configure(
        {
            "external_id": "id",
            "name": {"value": "Signed Up"},
            "time": "signed_up",
            "properties": {"object": "props", "properties": {"plan": "plan", "email": "email"}},
        },
        action="track_events",
        mode="insert",
        sql="select *, {'source': 'warehouse'} AS props from users",
    )
    emulator.reject_values = {"user5@example.com", "user6@example.com"}
    run = kit.run()
    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    assert set(kit.failed()) == {"5", "6"}
    tracked = {e["external_id"]: e for e in emulator.events}
    assert len(tracked) == ROWS - 2 and "5" not in tracked
    assert tracked["7"]["name"] == "Signed Up"
    assert tracked["7"]["time"] == "2026-01-01T00:07:00+00:00"
    assert tracked["7"]["properties"] == {"plan": "free", "email": "user7@example.com"}


def test_a_request_whose_every_object_is_invalid_refuses_each_record_alone(
    kit: Kit, emulator: BrazeEmulator
) -> None:
    emulator.reject_values = {f"user{i}@example.com" for i in range(1, ROWS + 1)}
    run = kit.run()
    assert run.status is RunStatus.FAILED
    failed = kit.failed()
    assert len(failed) == ROWS
    assert {f.error_class for f in failed.values()} == {ErrorClass.VALIDATION}
    # Each 400 named every object: no batch was halved to find them.
    assert len(emulator.requests_to("/users/track")) == ROWS // 10


def test_deleted_rows_delete_the_users_fifty_ids_a_request(
    kit: Kit, emulator: BrazeEmulator
) -> None:
    kit.sql(
        "INSERT INTO users SELECT i, 'user' || i || '@example.com', 'User ' || i, 'free',"
        f" TIMESTAMP '2026-01-01' FROM range({ROWS + 1}, 151) t(i)"
    )
    kit.configure({"external_id": "id", "email": "email"}, batch_size=75)
    assert kit.run().status is RunStatus.SUCCESS
    assert len(emulator.users) == 150

    kit.sql("DELETE FROM users WHERE id > 90")
    run = kit.run()
    assert run.status is RunStatus.SUCCESS, run.error
    assert run.loaded_deleted == 60
    assert sorted(emulator.users, key=int) == [str(i) for i in range(1, 91)]
    sizes = [len(s.json()["external_ids"]) for s in emulator.requests_to("/users/delete")]
    assert sum(sizes) == 60 and max(sizes) <= 50


def test_mirror_mode_refuses_an_external_id_that_is_not_the_key(
    kit: Kit, emulator: BrazeEmulator
) -> None:
    kit.configure({"external_id": "email", "email": "email"})
    run = kit.run()
    assert run.status is RunStatus.FAILED
    failed = kit.failed()
    assert len(failed) == ROWS
    assert {f.error_class for f in failed.values()} == {ErrorClass.MAPPING}
    assert "primary key" in failed["1"].message
    assert emulator.requests_to("/users/track") == []


def test_a_spent_allowance_pauses_until_the_reset_header(kit: Kit, emulator: BrazeEmulator) -> None:
    emulator.rate_limit = (2, 1.5)  # X-RateLimit-Remaining reaches 0 every second request
    kit.configure({"external_id": "id", "email": "email"}, concurrency=1, rate_limit=None)
    started = time.time()
    run = kit.run()
    assert run.status is RunStatus.SUCCESS, run.error
    assert emulator.over_limit == 0  # never sent past the allowance: no 429
    arrivals = [s.at for s in emulator.requests_to("/users/track")]
    assert len(arrivals) == 3
    # The third request waited for the reset the second answer announced.
    assert arrivals[2] - arrivals[0] >= 1.5
    assert time.time() - started < 10


def test_a_429_waits_for_the_reset_header(kit: Kit, emulator: BrazeEmulator) -> None:
    kit.configure({"external_id": "id", "email": "email"}, concurrency=1)
    wall, monotonic = time.time(), time.monotonic()
    reset = int(wall) + 2  # a Unix time, as Braze sends it
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}
    emulator.fail_next(429, {"message": "API rate limit reached"}, headers)
    run = kit.run()
    assert run.status is RunStatus.SUCCESS, run.error
    assert len(emulator.users) == ROWS
    requests = emulator.requests_to("/users/track")
    assert len(requests) == ROWS // 10 + 1
    retried_at = wall + (requests[1].at - monotonic)
    assert retried_at >= reset - 0.05  # nothing was sent before the reset


def test_an_object_with_an_array_of_objects_becomes_nested_custom_attributes(
    kit: Kit, emulator: BrazeEmulator
) -> None:
    kit.configure(
        {
            "external_id": "id",
            "email": "email",
            "custom_attributes": {
                "object": "profile",
                "properties": {"tier": "tier", "plan": "plan", "orders": "orders"},
            },
        },
        sql="select id, email, plan, {'tier': 'gold', 'since': 2020} AS profile,"
        " [{'sku': 'A-' || id, 'qty': 1}, {'sku': 'B', 'qty': 2}] AS orders from users",
    )
    run = kit.run()
    assert run.status is RunStatus.SUCCESS, run.error
    user = emulator.users["4"]
    assert user["email"] == "user4@example.com"
    assert user["tier"] == "gold" and user["plan"] == "free"
    assert user["orders"] == [{"sku": "A-4", "qty": 1}, {"sku": "B", "qty": 2}]
    assert "custom_attributes" not in user


def _check(url: str, key: str) -> str:
    plugin = DESTINATIONS.get("braze")
    config = plugin.config.model_validate({"type": "braze", "base_url": url, "api_key": key})
    assert plugin.check is not None
    return asyncio.run(plugin.check(config, AdapterContext(Path("."))))


def test_check_accepts_the_key_and_refuses_a_wrong_one(emulator: BrazeEmulator) -> None:
    assert "accepted" in _check(emulator.url, KEY)
    with pytest.raises(DestinationError) as refused:
        _check(emulator.url, "wrong-key")
    assert refused.value.error_class is ErrorClass.AUTH
    assert KEY not in str(refused.value) and "wrong-key" not in str(refused.value)
    assert json.loads(emulator.requests_to("/users/track")[0].body) == {"attributes": []}
