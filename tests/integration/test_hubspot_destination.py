"""The HubSpot destination through the real engine, against the HubSpot emulator on 127.0.0.1:
207 per-input errors, deletes archived through a batch read, companies by domain, HubSpot's
rate-limit headers and its daily limit, objects and arrays as JSON text, and `check`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from ebbtide.config.workspace import load_workspace
from ebbtide.destinations.hubspot import PLUGIN, HubSpotConfig, check
from ebbtide.errors import DestinationError, ErrorClass
from ebbtide.ports import AdapterContext
from ebbtide.services.credentials import check_credentials
from ebbtide.services.sync import SyncService
from ebbtide.values import FailureStatus, RunRecord, RunStatus
from tests.emulators.hubspot import HubSpotEmulator

TOKEN = "pat-na1-not-a-real-token-7731"


@pytest.fixture
def hubspot() -> Iterator[HubSpotEmulator]:
    with HubSpotEmulator(credential=TOKEN) as running:
        assert isinstance(running, HubSpotEmulator)
        yield running


class Workspace:
    """A DuckDB warehouse and ebbtide.yml syncing one model to the HubSpot emulator."""

    def __init__(self, root: Path, hubspot: HubSpotEmulator) -> None:
        self.root, self.hubspot = root, hubspot
        self.services: list[SyncService] = []

    def sql(self, *statements: str) -> None:
        with duckdb.connect(str(self.root / "warehouse.duckdb")) as con:
            for statement in statements:
                con.execute(statement)

    def configure(
        self, *, key: str, select: str, action: str, fields: dict[str, Any], **settings: Any
    ) -> None:
        doc = {
            "sources": {"warehouse": {"type": "duckdb", "path": "warehouse.duckdb"}},
            "models": {"rows": {"source": "warehouse", "primary_key": key, "sql": select}},
            "destinations": {
                "crm": {
                    "type": "hubspot",
                    "token": "${HUBSPOT_TOKEN}",
                    "base_url": self.hubspot.url,
                    "concurrency": 1,
                    **settings,
                }
            },
            "mappings": {
                "rows": {
                    "model": "rows",
                    "destination": "crm",
                    "action": action,
                    "mode": "mirror",
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
    tmp_path: Path, hubspot: HubSpotEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Workspace]:
    monkeypatch.setenv("HUBSPOT_TOKEN", TOKEN)
    kit = Workspace(tmp_path, hubspot)
    yield kit
    kit.close()


def contacts(workspace: Workspace, rows: int = 12, **settings: Any) -> None:
    workspace.sql(
        "CREATE TABLE people AS SELECT 'p' || i || '@example.com' AS email, 'Person ' || i AS"
        f" firstname, i AS score FROM range(1, {rows + 1}) t(i)"
    )
    workspace.configure(
        key="email",
        select="select email, firstname, score from people",
        action="upsert_contacts",
        fields={"email": "email", "firstname": "firstname", "score": "score"},
        **settings,
    )


def test_a_207_refuses_only_the_inputs_it_names_each_with_hubspots_error(
    workspace: Workspace, hubspot: HubSpotEmulator
) -> None:
    contacts(workspace, batch_size=5)
    hubspot.reject_values = {"Person 3", "Person 8"}
    run = workspace.run()
    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    assert run.loaded_new == 10 and run.failed == 2
    failed = workspace.failed()
    assert set(failed) == {'"p3@example.com"', '"p8@example.com"'}
    for record in failed.values():
        assert record.error_class == ErrorClass.VALIDATION
        assert record.code == "VALIDATION_ERROR"
        assert "Property values were not valid" in record.message
    held = hubspot.by("contacts", "email")
    assert set(held) == {f"p{i}@example.com" for i in range(1, 13)} - {
        "p3@example.com",
        "p8@example.com",
    }
    assert held["p1@example.com"]["firstname"] == "Person 1"
    assert held["p1@example.com"]["score"] == "1"  # property values are text
    upserts = hubspot.requests_to("/crm/v3/objects/contacts/batch/upsert")
    assert upserts[0].json()["inputs"][0] == {
        "idProperty": "email",
        "id": "p1@example.com",
        "properties": {"email": "p1@example.com", "firstname": "Person 1", "score": "1"},
    }


def test_deleted_rows_are_archived_by_the_id_a_batch_read_finds(
    workspace: Workspace, hubspot: HubSpotEmulator
) -> None:
    contacts(workspace)
    assert workspace.run().status is RunStatus.SUCCESS
    gone_at_hubspot = hubspot.by("contacts", "email")["p5@example.com"]["hs_object_id"]
    hubspot.held["contacts"].pop(gone_at_hubspot)  # someone archived it in HubSpot already
    doomed = hubspot.by("contacts", "email")["p4@example.com"]["hs_object_id"]

    workspace.sql("DELETE FROM people WHERE email IN ('p4@example.com', 'p5@example.com')")
    run = workspace.run()
    assert run.status is RunStatus.SUCCESS, run.error
    assert run.loaded_deleted == 2  # one not found at HubSpot is deleted all the same
    assert set(hubspot.by("contacts", "email")) == {
        f"p{i}@example.com" for i in range(1, 13) if i not in (4, 5)
    }
    (read,) = hubspot.requests_to("/crm/v3/objects/contacts/batch/read")
    assert read.json()["idProperty"] == "email"
    assert sorted(i["id"] for i in read.json()["inputs"]) == ["p4@example.com", "p5@example.com"]
    (archive,) = hubspot.requests_to("/crm/v3/objects/contacts/batch/archive")
    assert archive.json() == {"inputs": [{"id": doomed}]}


def test_an_email_hubspot_keeps_in_lower_case_is_still_archived_by_its_key(
    workspace: Workspace, hubspot: HubSpotEmulator
) -> None:
    workspace.sql(
        "CREATE TABLE people AS SELECT * FROM (VALUES ('Ann.Lee@Example.com', 'Ann'),"
        " ('bob@example.com', 'Bob')) t(email, firstname)"
    )
    workspace.configure(
        key="email",
        select="select email, upper(email) as email_as_typed, firstname from people",
        action="upsert_contacts",
        # The same address in another case is the same contact for HubSpot: no conflict.
        fields={"email": "email_as_typed", "firstname": "firstname"},
    )
    assert workspace.run().status is RunStatus.SUCCESS
    assert set(hubspot.by("contacts", "email")) == {"ann.lee@example.com", "bob@example.com"}

    workspace.sql("DELETE FROM people WHERE firstname = 'Ann'")
    run = workspace.run()
    assert run.status is RunStatus.SUCCESS, run.error
    assert run.loaded_deleted == 1
    assert set(hubspot.by("contacts", "email")) == {"bob@example.com"}  # really archived


def test_companies_are_upserted_and_archived_by_domain(
    workspace: Workspace, hubspot: HubSpotEmulator
) -> None:
    workspace.sql(
        "CREATE TABLE companies AS SELECT * FROM (VALUES ('acme.com', 'Acme', 120),"
        " ('globex.com', 'Globex', 4000), ('initech.com', 'Initech', 35)) t(domain, name, size)"
    )
    workspace.configure(
        key="domain",
        select="select domain, name, size from companies",
        action="upsert_companies",
        fields={"name": "name", "numberofemployees": "size"},
    )
    assert workspace.run().status is RunStatus.SUCCESS
    held = hubspot.by("companies", "domain")
    assert {d: c["name"] for d, c in held.items()} == {
        "acme.com": "Acme",
        "globex.com": "Globex",
        "initech.com": "Initech",
    }
    (upsert,) = hubspot.requests_to("/crm/v3/objects/companies/batch/upsert")
    assert {i["idProperty"] for i in upsert.json()["inputs"]} == {"domain"}
    assert hubspot.held["contacts"] == {}

    workspace.sql("UPDATE companies SET name = 'Acme Corp' WHERE domain = 'acme.com'")
    workspace.sql("DELETE FROM companies WHERE domain = 'initech.com'")
    run = workspace.run()
    assert run.status is RunStatus.SUCCESS, run.error
    assert run.loaded_updated == 1 and run.loaded_deleted == 1
    held = hubspot.by("companies", "domain")
    assert set(held) == {"acme.com", "globex.com"} and held["acme.com"]["name"] == "Acme Corp"
    assert len(hubspot.held["companies"]) == 2  # updated in place, not created again


def test_a_field_that_contradicts_the_unique_key_fails_as_mapping_and_is_not_sent(
    workspace: Workspace, hubspot: HubSpotEmulator
) -> None:
    workspace.sql(
        "CREATE TABLE people AS SELECT * FROM (VALUES ('a@example.com', 'a@example.com'),"
        " ('b@example.com', 'other@example.com')) t(id, email)"
    )
    workspace.configure(
        key="id",
        select="select id, email from people",
        action="upsert_contacts",
        fields={"email": "email"},
    )
    run = workspace.run()
    assert run.status is RunStatus.PARTIAL_SUCCESS
    failed = workspace.failed()
    assert set(failed) == {'"b@example.com"'}
    assert failed['"b@example.com"'].error_class == ErrorClass.MAPPING
    assert "email" in failed['"b@example.com"'].message
    sent = [i["id"] for s in hubspot.seen if s.method == "POST" for i in s.json()["inputs"]]
    assert sent == ["a@example.com"]


def test_an_allowance_spent_in_the_headers_pauses_the_destination(
    workspace: Workspace, hubspot: HubSpotEmulator
) -> None:
    contacts(workspace, rows=9, batch_size=3)
    # The first answer says the 10-second window is used up, and comes back in 1.5 s.
    hubspot.next_headers = [
        {"X-HubSpot-RateLimit-Remaining": "0", "X-HubSpot-RateLimit-Interval-Milliseconds": "1500"}
    ]
    run = workspace.run()
    assert run.status is RunStatus.SUCCESS, run.error
    first, second, third = hubspot.requests_to("/crm/v3/objects/contacts/batch/upsert")
    assert second.at - first.at >= 1.4  # waited for the window to come back
    assert third.at - second.at < 1.0  # and no longer than the headers asked
    assert hubspot.over_limit == 0


def test_a_spent_daily_limit_fails_the_rest_of_the_run_at_once_and_says_so(
    workspace: Workspace, hubspot: HubSpotEmulator
) -> None:
    contacts(workspace, rows=30, batch_size=5)
    hubspot.daily_remaining = 2  # two requests left today
    run = workspace.run()
    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    assert run.loaded_new == 10
    assert "daily" in (run.error or "").lower()
    failed = workspace.failed()
    assert failed and {r.error_class for r in failed.values()} == {ErrorClass.RATE_LIMITED}
    assert all("daily API limit is spent" in r.message for r in failed.values())
    # The 429 DAILY answer is not retried: the run asked no more of HubSpot after it.
    assert len(hubspot.requests_to("/crm/v3/objects/contacts/batch/upsert")) == 3

    hubspot.daily_remaining = None  # a new day: the next sync sends the rest
    again = workspace.run()
    assert again.status is RunStatus.SUCCESS, again.error
    assert len(hubspot.by("contacts", "email")) == 30


def test_objects_and_arrays_are_sent_as_json_text_end_to_end(
    workspace: Workspace, hubspot: HubSpotEmulator
) -> None:
    workspace.sql(
        "CREATE TABLE people AS SELECT 'p1@example.com' AS email,"
        " {'city': 'Lyon', 'zip': '69001'} AS address,"
        " [{'sku': 'A-1', 'qty': 2, 'price': 9.50::DECIMAL(6,2)}, {'sku': 'B-2', 'qty': 1,"
        " 'price': 120.00::DECIMAL(6,2)}] AS orders"
    )
    workspace.configure(
        key="email",
        select="select email, address, orders from people",
        action="upsert_contacts",
        fields={
            "email": "email",
            "address_json": {"object": "address"},
            "orders_json": {"array": "orders", "properties": {"sku": "sku", "qty": "qty"}},
            "last_order": {"array": "orders"},
        },
    )
    run = workspace.run()
    assert run.status is RunStatus.SUCCESS, run.error
    contact = hubspot.by("contacts", "email")["p1@example.com"]
    assert json.loads(contact["address_json"]) == {"city": "Lyon", "zip": "69001"}
    assert json.loads(contact["orders_json"]) == [
        {"sku": "A-1", "qty": 2},
        {"sku": "B-2", "qty": 1},
    ]
    assert json.loads(contact["last_order"]) == [
        {"sku": "A-1", "qty": 2, "price": 9.5},
        {"sku": "B-2", "qty": 1, "price": 120},
    ]


def test_check_names_the_portal_and_refuses_a_bad_token(
    workspace: Workspace, hubspot: HubSpotEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = HubSpotConfig(type="hubspot", token=TOKEN, base_url=hubspot.url)
    assert PLUGIN.check is check
    found = asyncio.run(check(config, AdapterContext(workspace.root)))
    assert found == "portal 62515 (STANDARD, US/Eastern)"

    bad = config.model_copy(update={"token": "pat-na1-wrong-0000"})
    with pytest.raises(DestinationError) as refused:
        asyncio.run(check(bad, AdapterContext(workspace.root)))
    assert refused.value.error_class is ErrorClass.AUTH

    contacts(workspace)
    monkeypatch.setenv("HUBSPOT_TOKEN", "pat-na1-wrong-0000")
    (result,) = check_credentials(load_workspace(workspace.root))
    assert result.ok is False and result.error_class == "auth"
    assert "destinations.crm.token" in result.message
    assert "pat-na1-wrong-0000" not in result.message


def test_the_tier_sets_the_default_burst_limit_and_batch_size_stays_within_100() -> None:
    free = HubSpotConfig(type="hubspot", token="t")
    assert free.rate_limit is not None and free.rate_limit.requests == 100
    assert free.rate_limit.per_s == 10
    pro = HubSpotConfig(type="hubspot", token="t", tier="professional")
    assert pro.rate_limit is not None and pro.rate_limit.requests == 190
    own = HubSpotConfig(type="hubspot", token="t", rate_limit={"requests": 5, "per": "1s"})
    assert own.rate_limit is not None and own.rate_limit.requests == 5
    with pytest.raises(ValueError, match="batch_size"):
        HubSpotConfig(type="hubspot", token="t", batch_size=101)
