"""The Mixpanel destination through the real engine (DuckDB warehouse, ebbtide.yml,
`SyncService.run`) against the Mixpanel emulator on 127.0.0.1: a strict /import's partial 400,
`$insert_id` across resends and replays, profiles set and deleted, and the credentials check."""

from __future__ import annotations

import asyncio
import gzip
import json
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
from ebbtide.services.replay import ReplayService
from ebbtide.services.reset import ResetService
from ebbtide.services.sync import SyncService
from ebbtide.values import FailureStatus, RunStatus
from tests.emulators.mixpanel import MixpanelEmulator

TOKEN = "mp-token-not-a-real-secret-5521"
ROWS = 30
EVENT_FIELDS = {
    "event": {"value": "Plan Synced"},
    "distinct_id": "id",
    "time": "signed_up",
    "properties": {
        "object": "details",
        "properties": {"email": "email", "plan": "plan", "orders": "orders"},
    },
}
SQL = (
    "select id, email, name, plan, signed_up, {'source': 'warehouse'} AS details,"
    " [{'sku': 'A-' || id, 'qty': 1}, {'sku': 'B', 'qty': 2}] AS orders from users"
)


class Kit:
    """A workspace syncing `users` (id, email, name, plan, signed_up) to Mixpanel."""

    def __init__(self, root: Path, emulator: MixpanelEmulator) -> None:
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
        fields: dict[str, Any] = EVENT_FIELDS,
        *,
        action: str = "import_events",
        mode: str = "upsert",
        credentials: dict[str, Any] | None = None,
        **destination: Any,
    ) -> None:
        doc = {
            "sources": {"warehouse": {"type": "duckdb", "path": "warehouse.duckdb"}},
            "models": {"users": {"source": "warehouse", "primary_key": "id", "sql": SQL}},
            "destinations": {
                "mixpanel": {
                    "type": "mixpanel",
                    "base_url": self.emulator.url,
                    **(credentials or {"project_token": "${MIXPANEL_TOKEN}"}),
                    "batch_size": 10,
                    "concurrency": 1,
                    **destination,
                }
            },
            "mappings": {
                "users": {
                    "model": "users",
                    "destination": "mixpanel",
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
def emulator() -> Iterator[MixpanelEmulator]:
    with MixpanelEmulator(credential=TOKEN) as running:
        yield running  # type: ignore[misc]


@pytest.fixture
def kit(
    tmp_path: Path, emulator: MixpanelEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Kit]:
    monkeypatch.setenv("MIXPANEL_TOKEN", TOKEN)
    made = Kit(tmp_path, emulator)
    made.configure()
    yield made
    made.close()


def insert_ids(emulator: MixpanelEmulator) -> list[list[str]]:
    """Per /import request, the $insert_id of each event, in order."""
    return [
        [e["properties"]["$insert_id"] for e in json.loads(_plain(seen.body))]
        for seen in emulator.requests_to("/import")
    ]


def _plain(body: bytes) -> bytes:
    return gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body


def test_events_arrive_with_their_time_properties_and_an_array_of_objects(
    kit: Kit, emulator: MixpanelEmulator
) -> None:
    run = kit.run()
    assert run.status is RunStatus.SUCCESS, run.error
    assert len(emulator.events) == ROWS
    event = next(e for e in emulator.events.values() if e["properties"]["distinct_id"] == "7")
    props = event["properties"]
    assert event["event"] == "Plan Synced"
    assert props["time"] == 1_767_225_600_000 + 7 * 60_000  # 2026-01-01T00:07:00Z in ms
    assert props["email"] == "user7@example.com" and props["plan"] == "free"
    assert props["orders"] == [{"sku": "A-7", "qty": 1}, {"sku": "B", "qty": 2}]
    assert all(seen.query["strict"] == "1" for seen in emulator.requests_to("/import"))


def test_a_400_with_failed_records_fails_those_and_keeps_the_rest_imported(
    kit: Kit, emulator: MixpanelEmulator
) -> None:
    emulator.reject_values = {"user4@example.com", "user17@example.com"}
    run = kit.run()
    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    assert run.loaded_new == ROWS - 2
    failed = kit.failed()
    assert set(failed) == {"4", "17"}
    assert failed["4"].error_class == ErrorClass.VALIDATION
    assert failed["4"].message == "'properties.email' is invalid"
    assert failed["4"].code == "properties.email"
    # The 400 was a partial success: nothing imported was sent again.
    assert len(emulator.requests_to("/import")) == ROWS // 10
    assert emulator.imported == ROWS - 2


def test_insert_ids_repeat_on_a_resend_and_change_on_a_replay(
    kit: Kit, emulator: MixpanelEmulator
) -> None:
    emulator.answer_lost = 1  # the first request is imported, but its answer is a 502
    service = kit.service()
    run = service.run("users")
    assert run.status is RunStatus.SUCCESS, run.error
    sent = insert_ids(emulator)
    assert len(sent) == ROWS // 10 + 1
    assert sent[0] == sent[1]  # the resend carried the same ids: Mixpanel deduplicated it
    assert emulator.imported == ROWS + 10 and len(emulator.events) == ROWS
    first_ids = {i for ids in sent for i in ids}

    replays = ReplayService(service)
    replay = replays.replay(replays.plan(run.id))
    assert replay.status is RunStatus.SUCCESS, replay.error
    replayed = {i for ids in insert_ids(emulator)[len(sent) :] for i in ids}
    assert len(replayed) == ROWS and not replayed & first_ids  # intended: not deduplicated
    assert len(emulator.events) == 2 * ROWS

    ResetService(service).reset("users")
    after_reset = service.run("users")
    assert after_reset.status is RunStatus.SUCCESS, after_reset.error
    reset_ids = {i for ids in insert_ids(emulator)[len(sent) + 3 :] for i in ids}
    assert len(reset_ids) == ROWS and not reset_ids & (first_ids | replayed)


def test_an_updated_row_is_a_new_event(kit: Kit, emulator: MixpanelEmulator) -> None:
    assert kit.run().status is RunStatus.SUCCESS
    kit.sql("UPDATE users SET plan = 'enterprise' WHERE id = 3")
    run = kit.run()
    assert run.status is RunStatus.SUCCESS and run.loaded_updated == 1
    assert len(emulator.events) == ROWS + 1
    plans = [e["properties"]["plan"] for e in emulator.events.values()]
    assert plans.count("enterprise") == 1


def test_profiles_are_set_and_deleted(kit: Kit, emulator: MixpanelEmulator) -> None:
    kit.configure(
        {
            "distinct_id": "id",
            "$email": "email",
            "$name": "name",
            "properties": {"object": "details", "properties": {"plan": "plan"}},
        },
        action="set_profiles",
        mode="mirror",
    )
    assert kit.run().status is RunStatus.SUCCESS
    assert emulator.profiles["5"] == {
        "$email": "user5@example.com",
        "$name": "User 5",
        "plan": "free",
    }
    kit.sql("DELETE FROM users WHERE id IN (5, 6)", "UPDATE users SET plan = 'pro' WHERE id = 7")
    run = kit.run()
    assert run.status is RunStatus.SUCCESS, run.error
    assert run.loaded_deleted == 2 and run.loaded_updated == 1
    assert "5" not in emulator.profiles and "6" not in emulator.profiles
    assert emulator.profiles["7"]["plan"] == "pro" and len(emulator.profiles) == ROWS - 2
    deletes = [u for seen in emulator.requests_to("/engage") for u in seen.json() if "$delete" in u]
    assert {u["$distinct_id"] for u in deletes} == {"5", "6"}
    assert all(u["$token"] == TOKEN for u in deletes)


def test_a_service_account_imports_with_the_project_id(
    kit: Kit, emulator: MixpanelEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, project = emulator.service_account
    monkeypatch.setenv("MIXPANEL_SA_SECRET", TOKEN)
    kit.configure(
        credentials={
            "service_account_username": user,
            "service_account_secret": "${MIXPANEL_SA_SECRET}",
            "project_id": project,
        }
    )
    run = kit.run()
    assert run.status is RunStatus.SUCCESS, run.error
    assert {s.query.get("project_id") for s in emulator.requests_to("/import")} == {project}

    account = {
        "service_account_username": user,
        "service_account_secret": "${MIXPANEL_SA_SECRET}",
        "project_id": project,
    }
    kit.configure(
        {"distinct_id": "id", "$email": "email"}, action="set_profiles", credentials=account
    )
    profiles = kit.run()
    assert profiles.status is RunStatus.FAILED
    assert "project_token" in (profiles.error or "")
    assert emulator.requests_to("/engage") == []


def _check(emulator: MixpanelEmulator, **credentials: str) -> str:
    plugin = DESTINATIONS.get("mixpanel")
    settings = {"type": "mixpanel", "base_url": emulator.url, **credentials}
    config = plugin.config.model_validate(settings)
    assert plugin.check is not None
    return asyncio.run(plugin.check(config, AdapterContext(Path("."))))


def test_check_accepts_good_credentials_and_refuses_bad_ones(emulator: MixpanelEmulator) -> None:
    assert "project token accepted" in _check(emulator, project_token=TOKEN)
    user, project = emulator.service_account
    found = _check(
        emulator, service_account_username=user, service_account_secret=TOKEN, project_id=project
    )
    assert project in found
    with pytest.raises(DestinationError) as refused:
        _check(emulator, project_token="wrong-token")
    assert refused.value.error_class is ErrorClass.AUTH
    assert len(emulator.events) == 0


def test_gzip_bodies_are_imported(kit: Kit, emulator: MixpanelEmulator) -> None:
    kit.configure(gzip=True)
    run = kit.run()
    assert run.status is RunStatus.SUCCESS, run.error
    assert len(emulator.events) == ROWS
    requests = emulator.requests_to("/import")
    assert {s.headers.get("Content-Encoding") for s in requests} == {"gzip"}


def test_the_next_sync_resends_a_failed_batch_with_the_same_insert_ids(
    kit: Kit, emulator: MixpanelEmulator
) -> None:
    # Every attempt is imported but its answer lost (as if the run crashed after sending):
    # the records fail, and the next sync sends them again.
    kit.configure(batch_size=ROWS)
    emulator.answer_lost = 1_000
    first = kit.run()
    assert first.status is RunStatus.FAILED
    assert len(emulator.events) == ROWS
    emulator.answer_lost = 0
    again = kit.run()
    assert again.status is RunStatus.SUCCESS, again.error
    sent = insert_ids(emulator)
    assert all(ids == sent[0] for ids in sent)  # every attempt, in both syncs: the same ids
    assert len(emulator.events) == ROWS  # Mixpanel kept one of each
