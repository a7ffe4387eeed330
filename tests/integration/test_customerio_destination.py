"""The Customer.io destination through the real engine, against the Customer.io emulator on
127.0.0.1: per-entity errors of a 207, people deleted in mirror mode, people identified by email,
objects and arrays as attributes, events with Unix timestamps, and `check`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from ebbtide.config.workspace import load_workspace
from ebbtide.destinations.customerio import PLUGIN, CustomerIOConfig, check
from ebbtide.errors import ConfigErrors, DestinationError, ErrorClass
from ebbtide.ports import AdapterContext
from ebbtide.services.credentials import check_credentials
from ebbtide.services.sync import SyncService
from ebbtide.values import FailureStatus, RunRecord, RunStatus
from tests.emulators.customerio import ENVIRONMENT_ID, SITE_ID, CustomerIOEmulator

API_KEY = "cio-track-not-a-real-key-5512"


@pytest.fixture
def customerio() -> Iterator[CustomerIOEmulator]:
    with CustomerIOEmulator(credential=API_KEY) as running:
        assert isinstance(running, CustomerIOEmulator)
        yield running


class Workspace:
    """A DuckDB warehouse and ebbtide.yml syncing one model to the Customer.io emulator."""

    def __init__(self, root: Path, customerio: CustomerIOEmulator) -> None:
        self.root, self.customerio = root, customerio
        self.services: list[SyncService] = []

    def sql(self, *statements: str) -> None:
        with duckdb.connect(str(self.root / "warehouse.duckdb")) as con:
            for statement in statements:
                con.execute(statement)

    def configure(
        self,
        *,
        key: str,
        select: str,
        action: str,
        fields: dict[str, Any],
        mode: str = "mirror",
        **settings: Any,
    ) -> None:
        doc = {
            "sources": {"warehouse": {"type": "duckdb", "path": "warehouse.duckdb"}},
            "models": {"rows": {"source": "warehouse", "primary_key": key, "sql": select}},
            "destinations": {
                "cio": {
                    "type": "customerio",
                    "site_id": "${CIO_SITE_ID}",
                    "api_key": "${CIO_API_KEY}",
                    "base_url": self.customerio.url,
                    "concurrency": 1,
                    **settings,
                }
            },
            "mappings": {
                "rows": {
                    "model": "rows",
                    "destination": "cio",
                    "action": action,
                    "mode": mode,
                    "fields": fields,
                }
            },
        }
        (self.root / "ebbtide.yml").write_text(yaml.safe_dump(doc, sort_keys=False))

    def run(self) -> RunRecord:
        service = SyncService(load_workspace(self.root))
        self.services.append(service)
        return service.run("rows")

    def failed(self) -> dict[str, Any]:
        book = self.services[-1].state.pending_failures
        return {r.key: r for r in book.listed("rows", [FailureStatus.PENDING], 1000)}

    def close(self) -> None:
        for service in self.services:
            service.state.dispose()


@pytest.fixture
def workspace(
    tmp_path: Path, customerio: CustomerIOEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Workspace]:
    monkeypatch.setenv("CIO_SITE_ID", SITE_ID)
    monkeypatch.setenv("CIO_API_KEY", API_KEY)
    kit = Workspace(tmp_path, customerio)
    yield kit
    kit.close()


def people(workspace: Workspace, rows: int = 10, **settings: Any) -> None:
    workspace.sql(
        "CREATE TABLE people AS SELECT 'u' || i AS id, 'u' || i || '@example.com' AS email,"
        f" 'free' AS plan, '' AS bio FROM range(1, {rows + 1}) t(i)"
    )
    workspace.configure(
        key="id",
        select="select id, email, plan, bio from people",
        action="identify_people",
        fields={"email": "email", "plan": "plan", "bio": "bio"},
        **settings,
    )


def test_entities_refused_in_a_207_fail_alone_with_customerios_message(
    workspace: Workspace, customerio: CustomerIOEmulator
) -> None:
    people(workspace, batch_size=4)
    workspace.sql("UPDATE people SET bio = repeat('b', 1001) WHERE id = 'u3'")
    customerio.reject_values = {"u7@example.com"}
    run = workspace.run()
    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    assert run.loaded_new == 8 and run.failed == 2
    failed = workspace.failed()
    assert set(failed) == {'"u3"', '"u7"'}
    assert failed['"u3"'].error_class == ErrorClass.VALIDATION
    assert "cannot be longer than 1000 bytes" in failed['"u3"'].message
    assert failed['"u3"'].code == "invalid" and failed['"u3"'].http_status == 207
    assert failed['"u7"'].error_class == ErrorClass.VALIDATION
    assert set(customerio.people) == {f"u{i}" for i in range(1, 11)} - {"u3", "u7"}
    first = customerio.requests_to("/api/v2/batch")[0].json()["batch"][0]
    assert first == {
        "type": "person",
        "action": "identify",
        "identifiers": {"id": "u1"},
        "attributes": {"email": "u1@example.com", "plan": "free", "bio": ""},
    }


def test_mirror_deletes_the_people_of_deleted_rows(
    workspace: Workspace, customerio: CustomerIOEmulator
) -> None:
    people(workspace)
    assert workspace.run().status is RunStatus.SUCCESS
    workspace.sql("DELETE FROM people WHERE id IN ('u2', 'u9')")
    workspace.sql("UPDATE people SET plan = 'pro' WHERE id = 'u1'")
    run = workspace.run()
    assert run.status is RunStatus.SUCCESS, run.error
    assert run.loaded_deleted == 2 and run.loaded_updated == 1
    assert set(customerio.people) == {f"u{i}" for i in range(1, 11)} - {"u2", "u9"}
    assert customerio.people["u1"]["plan"] == "pro"
    sent = customerio.requests_to("/api/v2/batch")[-1].json()["batch"]
    deletes = [e for e in sent if e["action"] == "delete"]
    assert sorted(e["identifiers"]["id"] for e in deletes) == ["u2", "u9"]
    assert all("attributes" not in e for e in deletes)


def test_people_keyed_by_email_are_identified_and_deleted_by_email(
    workspace: Workspace, customerio: CustomerIOEmulator
) -> None:
    workspace.sql(
        "CREATE TABLE people AS SELECT * FROM (VALUES ('a@example.com', 'Ann'),"
        " ('b@example.com', 'Bob')) t(email, first_name)"
    )
    workspace.configure(
        key="email",
        select="select email, first_name from people",
        action="identify_people",
        fields={"first_name": "first_name"},
        identifier="email",
    )
    assert workspace.run().status is RunStatus.SUCCESS
    assert customerio.people == {
        "a@example.com": {"first_name": "Ann"},
        "b@example.com": {"first_name": "Bob"},
    }
    workspace.sql("DELETE FROM people WHERE email = 'b@example.com'")
    assert workspace.run().loaded_deleted == 1
    assert set(customerio.people) == {"a@example.com"}
    last = customerio.requests_to("/api/v2/batch")[-1].json()["batch"]
    assert last == [
        {"type": "person", "action": "delete", "identifiers": {"email": "b@example.com"}}
    ]


def test_objects_and_arrays_are_attributes_end_to_end(
    workspace: Workspace, customerio: CustomerIOEmulator
) -> None:
    workspace.sql(
        "CREATE TABLE people AS SELECT 'u1' AS id,"
        " {'city': 'Lyon', 'geo': {'lat': 45.76, 'lon': 4.84}} AS address,"
        " [{'sku': 'A-1', 'qty': 2, 'note': 'gift'}, {'sku': 'B-2', 'qty': 1, 'note': NULL}]"
        " AS orders"
    )
    workspace.configure(
        key="id",
        select="select id, address, orders from people",
        action="identify_people",
        fields={
            "address": {"object": "address"},
            "orders": {"array": "orders", "properties": {"sku": "sku", "quantity": "qty"}},
            "city": "address.city",
        },
    )
    run = workspace.run()
    assert run.status is RunStatus.SUCCESS, run.error
    assert customerio.people["u1"] == {
        "address": {"city": "Lyon", "geo": {"lat": 45.76, "lon": 4.84}},
        "orders": [{"sku": "A-1", "quantity": 2}, {"sku": "B-2", "quantity": 1}],
        "city": "Lyon",
    }


def test_events_carry_their_person_name_attributes_and_unix_timestamp(
    workspace: Workspace, customerio: CustomerIOEmulator
) -> None:
    workspace.sql(
        "CREATE TABLE orders AS SELECT * FROM (VALUES"
        " (1, 'u1', NULL, 'order_placed', TIMESTAMPTZ '2026-03-01 12:00:00+00', 30.5),"
        " (2, NULL, 'b@example.com', 'order_placed', TIMESTAMPTZ '2026-03-02 08:30:00+00', 12),"
        " (3, 'u3', NULL, NULL, TIMESTAMPTZ '2026-03-03 00:00:00+00', 1))"
        " t(order_id, user_id, email, event, placed_at, total)"
    )
    workspace.configure(
        key="order_id",
        select="select *, {'total': total, 'items': [{'sku': 'A-1', 'qty': 1}]} AS details"
        " from orders",
        action="track_events",
        mode="insert",
        fields={
            "id": "user_id",
            "email": "email",
            "name": "event",
            "timestamp": "placed_at",
            "attributes": {"object": "details"},
        },
    )
    run = workspace.run()
    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    failed = workspace.failed()
    assert set(failed) == {"3"}
    assert failed["3"].error_class == ErrorClass.MAPPING and "name" in failed["3"].message
    events = sorted(customerio.events, key=lambda e: e["timestamp"])
    assert events == [
        {
            "type": "person",
            "action": "event",
            "identifiers": {"id": "u1"},
            "name": "order_placed",
            "attributes": {"total": 30.5, "items": [{"sku": "A-1", "qty": 1}]},
            "timestamp": int(datetime(2026, 3, 1, 12, tzinfo=UTC).timestamp()),
        },
        {
            "type": "person",
            "action": "event",
            "identifiers": {"email": "b@example.com"},
            "name": "order_placed",
            "attributes": {"total": 12, "items": [{"sku": "A-1", "qty": 1}]},
            "timestamp": int(datetime(2026, 3, 2, 8, 30, tzinfo=UTC).timestamp()),
        },
    ]


def test_events_cannot_be_synced_in_a_mode_that_updates_or_deletes(
    workspace: Workspace,
) -> None:
    workspace.sql("CREATE TABLE orders AS SELECT 1 AS order_id, 'u1' AS user_id, 'x' AS event")
    workspace.configure(
        key="order_id",
        select="select order_id, user_id, event from orders",
        action="track_events",
        mode="mirror",
        fields={"id": "user_id", "name": "event"},
    )
    with pytest.raises(ConfigErrors, match="mirror"):
        load_workspace(workspace.root)


def test_check_names_the_region_and_refuses_bad_credentials(
    workspace: Workspace, customerio: CustomerIOEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = CustomerIOConfig(
        type="customerio", site_id=SITE_ID, api_key=API_KEY, base_url=customerio.url
    )
    assert PLUGIN.check is check
    found = asyncio.run(check(config, AdapterContext(workspace.root)))
    assert found == f"region us, workspace {ENVIRONMENT_ID}"

    bad = config.model_copy(update={"api_key": "cio-wrong-0000"})
    with pytest.raises(DestinationError) as refused:
        asyncio.run(check(bad, AdapterContext(workspace.root)))
    assert refused.value.error_class is ErrorClass.AUTH
    assert "Unauthorized" in refused.value.message

    people(workspace)
    monkeypatch.setenv("CIO_API_KEY", "cio-wrong-0000")
    (result,) = check_credentials(load_workspace(workspace.root))
    assert result.ok is False and result.error_class == "auth"
    assert "cio-wrong-0000" not in result.message


def test_limits_are_customerios() -> None:
    config = CustomerIOConfig(type="customerio", site_id="s", api_key="k")
    assert config.rate_limit is not None and config.rate_limit.requests == 100
    assert config.rate_limit.per_s == 1
    assert config.max_request_bytes == 450_000 and config.max_record_bytes == 32_000
    with pytest.raises(ValueError, match="max_request_bytes"):
        CustomerIOConfig(type="customerio", site_id="s", api_key="k", max_request_bytes=600_000)
