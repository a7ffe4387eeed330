"""The Salesforce destination through the real engine, against the Salesforce emulator on
127.0.0.1: sObject Collections' per-record results in order, Bulk API 2.0 jobs above the
threshold (failed results, a job failing midway, a job failing for the data), deletes by
external ID, REQUEST_LIMIT_EXCEEDED as a rate limit, objects and arrays as JSON text, the
OAuth flows, and `check`."""

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
from ebbtide.destinations.salesforce import PLUGIN, SalesforceConfig
from ebbtide.errors import ConfigErrors, DestinationError, ErrorClass
from ebbtide.ports import AdapterContext
from ebbtide.services.sync import SyncService
from ebbtide.values import FailureStatus, RunRecord, RunStatus
from tests.emulators.base import Seen
from tests.emulators.salesforce import SalesforceEmulator

TOKEN = "00Dxx0000001gPL!not-a-real-session-8812"
API = "/services/data/v62.0"
UPSERT_PATH = f"{API}/composite/sobjects/Contact/External_Id__c"
FIELDS = {"Email": "email", "LastName": "last_name", "Title": "title"}


@pytest.fixture
def salesforce() -> Iterator[SalesforceEmulator]:
    with SalesforceEmulator(credential=TOKEN) as running:
        assert isinstance(running, SalesforceEmulator)
        yield running


class Workspace:
    """A DuckDB warehouse (`people`) and ebbtide.yml syncing it to the emulator's Contacts."""

    def __init__(self, root: Path, salesforce: SalesforceEmulator) -> None:
        self.root, self.salesforce = root, salesforce
        self.services: list[SyncService] = []

    def sql(self, *statements: str) -> None:
        with duckdb.connect(str(self.root / "warehouse.duckdb")) as con:
            for statement in statements:
                con.execute(statement)

    def people(self, n: int) -> None:
        self.sql(
            "CREATE OR REPLACE TABLE people AS SELECT 'p' || i AS id,"
            " 'person' || i || '@example.com' AS email, 'Last' || i AS last_name,"
            " 'Title ' || i AS title FROM range(1, "
            f"{n + 1}) t(i)"
        )

    def configure(
        self,
        *,
        fields: dict[str, Any] | None = None,
        mode: str = "mirror",
        key: str | list[str] = "id",
        select: str = "select * from people",
        declared: list[dict[str, Any]] | None = None,
        **settings: Any,
    ) -> None:
        if declared is not None:
            settings["fields"] = declared
        destination = {
            "type": "salesforce",
            "instance_url": self.salesforce.url,
            "access_token": "${SF_TOKEN}",
            "object": "Contact",
            "external_id_field": "External_Id__c",
            "bulk_poll_s": 0.01,
            "request_limit_wait_s": 0.05,
            "concurrency": 1,
            **settings,
        }
        doc = {
            "sources": {"warehouse": {"type": "duckdb", "path": "warehouse.duckdb"}},
            "models": {"people": {"source": "warehouse", "primary_key": key, "sql": select}},
            "destinations": {"crm": destination},
            "mappings": {
                "people": {
                    "model": "people",
                    "destination": "crm",
                    "action": "upsert",
                    "mode": mode,
                    "fields": fields or FIELDS,
                    "guards": {"max_delete_pct": 100},
                }
            },
        }
        (self.root / "ebbtide.yml").write_text(yaml.safe_dump(doc, sort_keys=False))

    def run(self) -> RunRecord:
        service = SyncService(load_workspace(self.root))
        self.services.append(service)
        return service.run("people")

    def failed(self) -> dict[str, Any]:
        book = self.services[-1].state.pending_failures
        return {r.key: r for r in book.listed("people", [FailureStatus.PENDING], 10_000)}

    def close(self) -> None:
        for service in self.services:
            service.state.dispose()


@pytest.fixture
def workspace(
    tmp_path: Path, salesforce: SalesforceEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Workspace]:
    monkeypatch.setenv("SF_TOKEN", TOKEN)
    kit = Workspace(tmp_path, salesforce)
    yield kit
    kit.close()


def requests(salesforce: SalesforceEmulator, method: str, path: str) -> list[Seen]:
    return [s for s in salesforce.seen if s.method == method and s.path == path]


def jobs_created(salesforce: SalesforceEmulator) -> list[Seen]:
    return requests(salesforce, "POST", f"{API}/jobs/ingest")


def test_collections_results_are_read_in_order_each_record_with_its_own_error(
    workspace: Workspace, salesforce: SalesforceEmulator
) -> None:
    workspace.people(12)
    workspace.sql(
        "UPDATE people SET last_name = NULL WHERE id = 'p2'",  # REQUIRED_FIELD_MISSING
        "UPDATE people SET title = repeat('t', 129) WHERE id = 'p5'",  # STRING_TOO_LONG
        "UPDATE people SET email = 'not-an-email' WHERE id = 'p7'",  # INVALID_EMAIL_ADDRESS
    )
    salesforce.record_errors = {
        "person9@example.com": ("DUPLICATE_VALUE", "duplicate value found: Email"),
        "person11@example.com": ("INSUFFICIENT_ACCESS_OR_READONLY", "insufficient access"),
    }
    workspace.configure()
    run = workspace.run()

    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    assert run.loaded_new == 7 and run.failed == 5
    failed = workspace.failed()
    got = {key: (f.error_class, f.code) for key, f in failed.items()}
    assert got == {
        '"p2"': (ErrorClass.VALIDATION, "REQUIRED_FIELD_MISSING"),
        '"p5"': (ErrorClass.VALIDATION, "STRING_TOO_LONG"),
        '"p7"': (ErrorClass.VALIDATION, "INVALID_EMAIL_ADDRESS"),
        '"p9"': (ErrorClass.CONFLICT, "DUPLICATE_VALUE"),
        '"p11"': (ErrorClass.PERMISSION, "INSUFFICIENT_ACCESS_OR_READONLY"),
    }
    assert "LastName" in failed['"p2"'].message  # the fields Salesforce named
    held = salesforce.contacts()
    assert set(held) == {f"p{i}" for i in (1, 3, 4, 6, 8, 10, 12)}
    assert held["p4"] == "person4@example.com"

    (sent,) = requests(salesforce, "PATCH", UPSERT_PATH)
    body = sent.json()
    assert body["allOrNone"] is False
    assert {r["External_Id__c"] for r in body["records"]} == {f"p{i}" for i in range(1, 13)}
    for record in body["records"]:
        assert record["attributes"] == {"type": "Contact"}
        if record["External_Id__c"] != "p7":
            assert record["Email"] == f"person{record['External_Id__c'][1:]}@example.com"
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"


def test_a_batch_over_200_records_goes_in_requests_of_200(
    workspace: Workspace, salesforce: SalesforceEmulator
) -> None:
    workspace.people(450)
    workspace.configure(batch_size=1000)
    run = workspace.run()
    assert run.status is RunStatus.SUCCESS, run.error
    sizes = sorted(len(s.json()["records"]) for s in requests(salesforce, "PATCH", UPSERT_PATH))
    assert sizes == [50, 200, 200]
    assert len(salesforce.contacts()) == 450 and not jobs_created(salesforce)


def test_a_batch_at_the_bulk_threshold_goes_through_a_bulk_job_with_its_failed_results(
    workspace: Workspace, salesforce: SalesforceEmulator
) -> None:
    workspace.people(300)
    workspace.sql("UPDATE people SET last_name = NULL WHERE id IN ('p10', 'p250')")
    salesforce.reject_values = {"person77@example.com"}
    salesforce.polls_to_complete = 4
    workspace.configure(bulk_threshold=100, batch_size=300)
    run = workspace.run()

    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    assert run.loaded_new == 297 and run.failed == 3
    failed = workspace.failed()
    assert set(failed) == {'"p10"', '"p250"', '"p77"'}
    assert failed['"p10"'].code == "REQUIRED_FIELD_MISSING"
    assert "Required fields are missing" in failed['"p10"'].message
    assert failed['"p77"'].error_class == ErrorClass.VALIDATION
    assert len(salesforce.contacts()) == 297
    assert not requests(salesforce, "PATCH", UPSERT_PATH)  # no collections request

    (created,) = jobs_created(salesforce)
    assert created.json() == {
        "object": "Contact",
        "externalIdFieldName": "External_Id__c",
        "operation": "upsert",
        "contentType": "CSV",
        "lineEnding": "LF",
    }
    (job,) = salesforce.jobs.values()
    assert job.state == "JobComplete"
    upload = job.uploads[0].splitlines()
    assert upload[0] == "External_Id__c,Email,LastName,Title"
    assert "p10,person10@example.com,#N/A,Title 10" in upload  # a null clears the field
    polls = requests(salesforce, "GET", f"{API}/jobs/ingest/{job.id}")
    assert len(polls) == 4  # polled until the job was done, not once more


def test_a_bulk_job_failing_midway_is_retried_whole_and_every_record_lands(
    workspace: Workspace, salesforce: SalesforceEmulator
) -> None:
    workspace.people(240)
    salesforce.job_failures.append("InternalServerError : the batch was retried 20 times")
    workspace.configure(bulk_threshold=100, batch_size=240)
    run = workspace.run()

    assert run.status is RunStatus.SUCCESS, run.error
    assert run.loaded_new == 240 and run.failed == 0
    assert len(jobs_created(salesforce)) == 2
    first, second = salesforce.jobs.values()
    assert first.state == "Failed" and len(first.succeeded) == 120  # half went in
    assert second.state == "JobComplete" and len(second.succeeded) == 240
    assert len(salesforce.contacts()) == 240


def test_a_bulk_job_failing_for_an_unknown_field_fails_the_records_as_mapping(
    workspace: Workspace, salesforce: SalesforceEmulator
) -> None:
    workspace.people(150)
    workspace.configure(
        fields={**FIELDS, "Nickname__c": "title"}, bulk_threshold=100, batch_size=150
    )
    run = workspace.run()

    assert run.status is RunStatus.FAILED
    failed = workspace.failed()
    assert len(failed) == 150
    record = failed['"p1"']
    assert record.error_class == ErrorClass.MAPPING
    assert "Field name not found : Nickname__c" in record.message
    assert len(jobs_created(salesforce)) == 1  # not retried, not split: every batch would fail
    assert salesforce.contacts() == {}


def test_a_bulk_job_not_done_in_time_is_aborted_and_fails_as_timeout(
    workspace: Workspace, salesforce: SalesforceEmulator
) -> None:
    workspace.people(3)
    salesforce.polls_to_complete = 1_000_000  # Salesforce never gets to it
    workspace.configure(bulk_threshold=1, bulk_poll_s=0.01, bulk_timeout_s=0.05)
    run = workspace.run()

    assert run.status is RunStatus.FAILED
    failed = workspace.failed()
    assert {f.error_class for f in failed.values()} == {ErrorClass.TIMEOUT}
    assert "bulk_timeout_s" in failed['"p1"'].message
    assert salesforce.jobs and all(j.state == "Aborted" for j in salesforce.jobs.values())
    assert salesforce.contacts() == {}


def test_request_limit_exceeded_is_a_rate_limit_retried_not_a_record_failure(
    workspace: Workspace, salesforce: SalesforceEmulator
) -> None:
    workspace.people(5)
    workspace.configure()
    limit = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    salesforce.fail_next(403, limit, times=2)
    run = workspace.run()

    assert run.status is RunStatus.SUCCESS, run.error
    assert run.loaded_new == 5 and run.failed == 0
    assert len(requests(salesforce, "PATCH", UPSERT_PATH)) == 3  # two refusals, then loaded
    assert len(salesforce.contacts()) == 5

    salesforce.fail_next(403, limit, times=1000)  # the daily allowance is spent
    workspace.sql("UPDATE people SET title = 'changed'")
    again = workspace.run()
    assert again.status is RunStatus.FAILED
    classes = {f.error_class for f in workspace.failed().values()}
    assert classes == {ErrorClass.RATE_LIMITED}  # not permission, not the records' fault
    assert all("REQUEST_LIMIT_EXCEEDED" in f.message for f in workspace.failed().values())


def test_the_api_usage_header_is_read_and_a_spent_allowance_refuses_as_rate_limited(
    workspace: Workspace, salesforce: SalesforceEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    workspace.people(3)
    workspace.configure()
    salesforce.api_max = 1  # the org's daily allowance: one request
    with caplog.at_level("WARNING", logger="ebbtide.destinations.salesforce"):
        run = workspace.run()
    assert run.status is RunStatus.SUCCESS, run.error
    assert "used 1 of its 1 daily API requests" in caplog.text

    workspace.sql("UPDATE people SET title = 'changed'")
    again = workspace.run()
    assert again.status is RunStatus.FAILED
    assert {f.error_class for f in workspace.failed().values()} == {ErrorClass.RATE_LIMITED}


def test_deletes_find_records_by_external_id_and_delete_them_200_at_a_time(
    workspace: Workspace, salesforce: SalesforceEmulator
) -> None:
    workspace.people(260)
    workspace.configure(batch_size=1000, bulk_threshold=5000)
    assert workspace.run().status is RunStatus.SUCCESS
    holder = salesforce.records["Contact"]  # someone deleted p3 in Salesforce meanwhile
    salesforce.remove("Contact", next(i for i, r in holder.items() if r["External_Id__c"] == "p3"))

    workspace.sql("DELETE FROM people WHERE id NOT IN ('p1', 'p2')")
    run = workspace.run()
    assert run.status is RunStatus.SUCCESS, run.error
    assert run.loaded_deleted == 258
    assert set(salesforce.contacts()) == {"p1", "p2"}

    deletes = requests(salesforce, "DELETE", f"{API}/composite/sobjects")
    assert sorted(len(s.query["ids"].split(",")) for s in deletes) == [57, 200]
    assert all(s.query["allOrNone"] == "false" for s in deletes)
    queries = requests(salesforce, "GET", f"{API}/query")
    assert len(queries) >= 2  # 258 external ids: more than one query's worth
    assert all(len(s.query["q"]) < 8000 for s in queries)
    assert (
        queries[0]
        .query["q"]
        .startswith("SELECT Id, External_Id__c FROM Contact WHERE External_Id__c IN ('p")
    )


def test_an_external_id_with_a_quote_is_escaped_in_soql(
    workspace: Workspace, salesforce: SalesforceEmulator
) -> None:
    workspace.people(2)
    workspace.sql("UPDATE people SET id = 'o''brien\\x+&%20 y' WHERE id = 'p1'")
    workspace.configure()
    assert workspace.run().status is RunStatus.SUCCESS
    assert "o'brien\\x+&%20 y" in salesforce.contacts()
    workspace.sql("DELETE FROM people WHERE id LIKE 'o%'")
    run = workspace.run()
    assert run.status is RunStatus.SUCCESS, run.error
    assert run.loaded_deleted == 1 and set(salesforce.contacts()) == {"p2"}


def test_a_composite_key_is_refused_before_sending(
    workspace: Workspace, salesforce: SalesforceEmulator
) -> None:
    workspace.people(3)
    workspace.configure(key=["id", "email"], mode="upsert")
    run = workspace.run()
    assert run.status is RunStatus.FAILED, run
    failed = workspace.failed()
    assert len(failed) == 3 and {f.error_class for f in failed.values()} == {ErrorClass.MAPPING}
    assert "one-column key" in next(iter(failed.values())).message
    assert not salesforce.seen


def test_a_mapped_external_id_that_is_not_the_key_is_refused_before_sending(
    workspace: Workspace, salesforce: SalesforceEmulator
) -> None:
    workspace.people(3)
    workspace.configure(fields={**FIELDS, "External_Id__c": "email"}, mode="upsert")
    run = workspace.run()
    assert run.status is RunStatus.FAILED
    failed = workspace.failed()
    assert len(failed) == 3 and {f.error_class for f in failed.values()} == {ErrorClass.MAPPING}
    assert "leave it out of the mapping" in next(iter(failed.values())).message
    assert not salesforce.seen


def test_declared_fields_check_mappings_and_take_an_object_as_json_text(
    workspace: Workspace, salesforce: SalesforceEmulator
) -> None:
    declared = [
        {"name": "External_Id__c", "type": "string"},
        {"name": "Email", "type": "string"},
        {"name": "LastName", "type": "string", "required": True},
        {"name": "Profile_JSON__c", "type": "object"},
    ]
    workspace.sql(
        "CREATE TABLE people AS SELECT 'p1' AS id, 'a@example.com' AS email, 'A' AS last_name,"
        " {'tier': 'gold', 'since': DATE '2024-02-29'} AS profile"
    )
    workspace.configure(fields={**FIELDS}, declared=declared)
    with pytest.raises(ConfigErrors, match="has no field 'Title'"):
        load_workspace(workspace.root)
    workspace.configure(fields={"Email": "email", "External_Id__c": "id"}, declared=declared)
    with pytest.raises(ConfigErrors, match="External_Id__c"):  # filled from the key
        load_workspace(workspace.root)

    fields = {"Email": "email", "LastName": "last_name", "Profile_JSON__c": {"object": "profile"}}
    workspace.configure(fields=fields, declared=declared)
    run = workspace.run()
    assert run.status is RunStatus.SUCCESS, run.error
    profile = json.loads(salesforce.contacts("Profile_JSON__c")["p1"])
    assert profile == {"tier": "gold", "since": "2024-02-29"}


@pytest.mark.parametrize("bulk", [False, True], ids=["collections", "bulk"])
def test_an_object_and_an_array_of_objects_are_sent_as_json_text(
    workspace: Workspace, salesforce: SalesforceEmulator, bulk: bool
) -> None:
    workspace.sql(
        "CREATE TABLE people AS SELECT 'p' || i AS id, 'person' || i || '@example.com' AS email,"
        " 'Last' || i AS last_name, {'city': 'Paris', 'zip': '7500' || i, 'vip': i = 1}"
        " AS address, [{'sku': 'A' || i, 'qty': i, 'price': 9.99},"
        " {'sku': 'B', 'qty': 2, 'price': 0.5}] AS orders, i * 10.25 AS ltv"
        " FROM range(1, 4) t(i)"
    )
    fields = {
        "Email": "email",
        "LastName": "last_name",
        "Profile_JSON__c": {"object": "address"},
        "Orders_JSON__c": {"array": "orders", "properties": {"sku": "sku", "qty": "qty"}},
        "Lifetime_Value__c": "ltv",
    }
    workspace.configure(fields=fields, bulk_threshold=1 if bulk else 2000)
    run = workspace.run()

    assert run.status is RunStatus.SUCCESS, run.error
    assert bool(jobs_created(salesforce)) is bulk
    profile = json.loads(salesforce.contacts("Profile_JSON__c")["p1"])
    assert profile == {"city": "Paris", "zip": "75001", "vip": True}
    orders = json.loads(salesforce.contacts("Orders_JSON__c")["p2"])
    assert orders == [{"sku": "A2", "qty": 2}, {"sku": "B", "qty": 2}]
    assert salesforce.contacts("Lifetime_Value__c")["p3"] == 30.75


def test_oauth_client_credentials_token_is_fetched_and_renewed_when_it_expires(
    workspace: Workspace, salesforce: SalesforceEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    salesforce.clients = {"3MVG9-client": "s3cret-not-real"}
    salesforce.token_uses = 2  # every issued token expires after two requests
    monkeypatch.setenv("SF_SECRET", "s3cret-not-real")
    workspace.people(30)
    workspace.configure(
        access_token=None, client_id="3MVG9-client", client_secret="${SF_SECRET}", batch_size=5
    )
    run = workspace.run()
    assert run.status is RunStatus.SUCCESS, run.error
    assert len(salesforce.contacts()) == 30
    tokens = requests(salesforce, "POST", "/services/oauth2/token")
    assert len(tokens) == 3  # 6 batches, 2 requests a token
    assert b"grant_type=client_credentials" in tokens[0].body

    monkeypatch.setenv("SF_SECRET", "wrong-secret")
    workspace.sql("UPDATE people SET title = 'changed'")
    again = workspace.run()
    assert again.status is RunStatus.FAILED
    assert "invalid_grant" in (again.error or "") and "wrong-secret" not in (again.error or "")


@pytest.mark.parametrize("bulk", [False, True], ids=["collections", "bulk"])
def test_a_lookup_is_set_by_the_parents_external_id(
    workspace: Workspace, salesforce: SalesforceEmulator, bulk: bool
) -> None:
    salesforce.seed(
        "Account", {"Id": "001000000000001AAA", "External_Id__c": "acme", "Name": "Acme"}
    )
    workspace.people(3)
    workspace.sql("ALTER TABLE people ADD COLUMN company VARCHAR DEFAULT 'acme'")
    workspace.sql("UPDATE people SET company = 'nobody' WHERE id = 'p2'")
    fields = {**FIELDS, "Account.External_Id__c": "company"}
    workspace.configure(fields=fields, bulk_threshold=1 if bulk else 2000)
    run = workspace.run()

    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    assert bool(jobs_created(salesforce)) is bulk
    accounts = salesforce.contacts("AccountId")
    assert accounts == {"p1": "001000000000001AAA", "p3": "001000000000001AAA"}
    failed = workspace.failed()['"p2"']
    assert failed.error_class == ErrorClass.VALIDATION and failed.code == "INVALID_FIELD"
    assert "Foreign key external ID: nobody not found" in failed.message
    if not bulk:
        (sent,) = requests(salesforce, "PATCH", UPSERT_PATH)
        parents = {r["External_Id__c"]: r["Account"] for r in sent.json()["records"]}
        assert parents["p1"] == {"External_Id__c": "acme"}


def _config(salesforce: SalesforceEmulator, **settings: Any) -> SalesforceConfig:
    return SalesforceConfig.model_validate(
        {
            "type": "salesforce",
            "instance_url": salesforce.url,
            "object": "Contact",
            "external_id_field": "External_Id__c",
            **settings,
        }
    )


def test_check_names_the_org_its_allowance_and_the_external_id_field(
    salesforce: SalesforceEmulator, tmp_path: Path
) -> None:
    assert PLUGIN.check is not None
    context = AdapterContext(tmp_path)
    found = asyncio.run(PLUGIN.check(_config(salesforce, access_token=TOKEN), context))
    assert "127.0.0.1" in found and "daily API requests left" in found
    assert "Contact.External_Id__c is an external ID" in found

    with pytest.raises(DestinationError) as refused:
        asyncio.run(PLUGIN.check(_config(salesforce, access_token="bad-token"), context))
    assert refused.value.error_class is ErrorClass.AUTH
    assert "INVALID_SESSION_ID" in refused.value.message

    not_external = _config(salesforce, access_token=TOKEN, external_id_field="Email")
    with pytest.raises(DestinationError, match="Email is not an External ID field"):
        asyncio.run(PLUGIN.check(not_external, context))

    salesforce.clients = {"cid": "unused"}
    salesforce.refresh_tokens = {"5Aep861-refresh": "cid"}
    refreshed = _config(salesforce, client_id="cid", refresh_token="5Aep861-refresh")
    assert "daily API requests left" in asyncio.run(PLUGIN.check(refreshed, context))
    (grant,) = requests(salesforce, "POST", "/services/oauth2/token")
    assert b"grant_type=refresh_token" in grant.body


def test_a_destination_without_credentials_is_refused_at_validation() -> None:
    with pytest.raises(ValueError, match="access_token"):
        SalesforceConfig.model_validate(
            {
                "type": "salesforce",
                "instance_url": "https://example.my.salesforce.com",
                "object": "Contact",
                "external_id_field": "External_Id__c",
            }
        )
