"""The destination conformance suite: every destination, against its emulator, through the real
engine (DuckDB warehouse, state store, `SyncService.run`), keeps the same promises.

A destination joins by adding its module and an emulator module under tests/emulators/ that
defines `CASE` (tests/conformance/case.py says what a case declares).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

import tests.emulators
from ebbtide.config.workspace import load_workspace
from ebbtide.destinations import DESTINATIONS
from ebbtide.errors import ConfigErrors, ErrorClass
from ebbtide.services.sync import SyncService
from ebbtide.values import FailureStatus, RunStatus
from tests.conformance.case import CREDENTIAL_VARIABLE, DestinationCase

CREDENTIAL = "cred-conformance-not-a-real-secret-8842"
ROWS = 40
BATCH = 10


def _cases() -> list[DestinationCase]:
    found = []
    for module in pkgutil.iter_modules(tests.emulators.__path__):
        loaded = importlib.import_module(f"tests.emulators.{module.name}")
        case = getattr(loaded, "CASE", None)
        if isinstance(case, DestinationCase):
            found.append(case)
    return sorted(found, key=lambda c: c.type)


CASES = _cases()


@pytest.fixture(params=CASES, ids=[c.type for c in CASES])
def case(request: pytest.FixtureRequest) -> DestinationCase:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def emulator(case: DestinationCase) -> Iterator[Any]:
    with case.emulator(credential=CREDENTIAL) as running:
        yield running


class Sync:
    """A workspace syncing `users` to the case's destination (built anew by `configure`)."""

    def __init__(self, root: Path, case: DestinationCase, emulator: Any) -> None:
        self.root, self.case, self.emulator = root, case, emulator
        self.services: list[SyncService] = []
        self.sql(
            "CREATE TABLE users AS SELECT i::BIGINT AS id, 'user' || i || '@example.com' AS email,"
            " 'User ' || i AS name, CASE WHEN i % 3 = 0 THEN 'pro' ELSE 'free' END AS plan,"
            f" i * 1.5 AS score FROM range(1, {ROWS + 1}) t(i)"
        )
        self.configure()

    def sql(self, *statements: str) -> None:
        with duckdb.connect(str(self.root / "warehouse.duckdb")) as con:
            for statement in statements:
                con.execute(statement)

    def configure(self, **destination: Any) -> None:
        case = self.case
        settings = {
            "type": case.type,
            **case.settings(self.emulator.url),
            **({case.table_setting: self.emulator.table} if case.table_setting else {}),
            "batch_size": min(BATCH, case.max_batch_size),
            "concurrency": 2,
            **destination,
        }
        doc = {
            "sources": {"warehouse": {"type": "duckdb", "path": "warehouse.duckdb"}},
            "models": {
                "users": {
                    "source": "warehouse",
                    "primary_key": "id",
                    "sql": "select id, email, name, plan, score from users",
                }
            },
            "destinations": {"vendor": settings},
            "mappings": {
                "users": {
                    "model": "users",
                    "destination": "vendor",
                    "action": case.action,
                    "mode": "mirror" if case.deletes else "upsert",
                    "fields": case.fields,
                    **case.mapping_extra,
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
def sync(
    tmp_path: Path,
    case: DestinationCase,
    emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Sync]:
    monkeypatch.setenv(CREDENTIAL_VARIABLE, CREDENTIAL)
    kit = Sync(tmp_path, case, emulator)
    yield kit
    kit.close()


def emails(first: int = 1, last: int = ROWS, **changed: str) -> dict[str, str]:
    held = {str(i): f"user{i}@example.com" for i in range(first, last + 1)}
    held.update(changed)
    return held


def test_every_action_declares_its_fields(case: DestinationCase) -> None:
    plugin = DESTINATIONS.get(case.type)
    assert case.action in plugin.actions
    for action in plugin.actions.values():
        assert action.description
        if case.declares_fields:
            assert action.fields, f"{case.type}.{action.name} declares no fields"
            names = [f.name for f in action.fields]
            assert len(names) == len(set(names)), names


def test_adds_updates_and_deletes_reach_the_destination(
    sync: Sync, case: DestinationCase, emulator: Any
) -> None:
    first = sync.run()
    assert first.status is RunStatus.SUCCESS, first.error
    assert first.loaded_new == ROWS
    assert case.held(emulator) == emails()

    sync.sql("UPDATE users SET email = 'changed' || id || '@example.com' WHERE id IN (2, 5)")
    sync.sql("DELETE FROM users WHERE id IN (7, 8)")
    second = sync.run()
    assert second.status is RunStatus.SUCCESS, second.error
    assert second.loaded_updated == 2
    held = case.held(emulator)
    assert held["2"] == "changed2@example.com" and held["5"] == "changed5@example.com"
    if case.deletes:
        assert second.loaded_deleted == 2
        assert "7" not in held and "8" not in held
    else:
        assert second.deleted == 2 and second.loaded_deleted == 0


def test_a_record_refused_by_itself_fails_alone_with_its_own_error(
    sync: Sync, case: DestinationCase, emulator: Any
) -> None:
    if not case.rejects:
        pytest.skip(f"{case.type} accepts every record")
    emulator.reject_values = {"user4@example.com", "user17@example.com"}
    run = sync.run()
    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    assert run.loaded_new == ROWS - 2 and run.failed == 2
    failed = sync.failed()
    assert set(failed) == {"4", "17"}
    for record in failed.values():
        assert record.error_class == ErrorClass.VALIDATION
        assert record.message
    held = case.held(emulator)
    assert "4" not in held and "17" not in held and len(held) == ROWS - 2

    emulator.reject_values = set()  # fixed at the vendor: the next sync retries them
    again = sync.run()
    assert again.status is RunStatus.SUCCESS and again.loaded_new == 2
    assert case.held(emulator) == emails()


def test_a_batch_refused_whole_is_split_to_find_the_bad_record(
    sync: Sync, case: DestinationCase, emulator: Any
) -> None:
    if not case.rejects:
        pytest.skip(f"{case.type} accepts every record")
    emulator.refuse_whole_values = {"user13@example.com"}
    run = sync.run()
    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    assert set(sync.failed()) == {"13"}
    assert run.loaded_new == ROWS - 1
    assert set(case.held(emulator)) == set(emails()) - {"13"}


def test_requests_keep_within_the_apis_limits(
    sync: Sync, case: DestinationCase, emulator: Any
) -> None:
    sync.configure(batch_size=case.max_batch_size)
    sync.sql(
        f"INSERT INTO users SELECT i, 'bulk' || i || '@example.com', repeat('n', 200), 'free',"
        f" 0 FROM range({ROWS + 1}, {ROWS + case.max_batch_size + 60}) t(i)"
    )
    run = sync.run()
    assert run.status is RunStatus.SUCCESS, run.error
    if case.http:
        requests = [s for s in emulator.seen if s.path in case.record_paths]
        assert max(case.records_in(s) for s in requests) <= case.max_batch_size
        if case.max_request_bytes is not None:
            assert max(len(s.body) for s in requests) <= case.max_request_bytes

    sync.configure(batch_size=case.max_batch_size + 1)
    with pytest.raises(ConfigErrors, match="batch_size"):
        load_workspace(sync.root)


def test_a_record_over_the_apis_record_limit_fails_alone_as_payload_too_large(
    sync: Sync, case: DestinationCase, emulator: Any
) -> None:
    if case.max_record_bytes is None:
        pytest.skip(f"{case.type} has no per-record limit")
    sync.sql(f"UPDATE users SET name = repeat('x', {case.max_record_bytes + 10}) WHERE id = 9")
    run = sync.run()
    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    failed = sync.failed()
    assert set(failed) == {"9"}
    assert failed["9"].error_class == ErrorClass.PAYLOAD_TOO_LARGE
    assert len(case.held(emulator)) == ROWS - 1


def test_the_apis_rate_limit_answers_are_waited_out_and_a_configured_limit_kept(
    sync: Sync, case: DestinationCase, emulator: Any
) -> None:
    if not case.http:
        pytest.skip(f"{case.type} speaks no HTTP: no rate-limit answers")
    emulator.limit(3, 1.0)
    run = sync.run()
    assert run.status is RunStatus.SUCCESS, run.error
    assert case.held(emulator) == emails()
    answered_429 = emulator.over_limit
    assert answered_429 >= 1  # the emulator's limit was hit and waited out

    emulator.limit(3, 1.0)  # a window of its own: the first sync's last requests are in it
    sync.sql("UPDATE users SET email = 'again' || id || '@example.com'")
    sync.configure(rate_limit={"requests": 2, "per": "1s"})  # under the API's 3 per second
    again = sync.run()
    assert again.status is RunStatus.SUCCESS, again.error
    assert emulator.over_limit == 0  # the configured limit kept every window under the API's


def test_bad_credentials_stop_the_run_as_auth(
    sync: Sync, case: DestinationCase, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not case.http:
        pytest.skip(f"{case.type}: no credentials to refuse here (trust auth, a local file)")
    monkeypatch.setenv(CREDENTIAL_VARIABLE, "wrong-credential-5521")
    run = sync.run()
    assert run.status is RunStatus.FAILED
    assert "auth" in (run.error or "").lower() or "credential" in (run.error or "").lower()
    assert run.loaded_new == 0
    requests = [s for s in emulator.seen if s.path in case.record_paths]
    assert len(requests) <= 2  # stopped at the first refusal (concurrency 2), not per batch
    assert case.held(emulator) == {}


def test_credentials_never_appear_in_errors_logs_or_payloads(
    sync: Sync, case: DestinationCase, emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    if not case.http:
        pytest.skip(f"{case.type} speaks no HTTP: no answer to echo a credential")
    # A vendor that echoes the request's credential in its error body.
    emulator.fail_next(400, {"message": f"bad request from {CREDENTIAL}"}, times=1000)
    with caplog.at_level(logging.DEBUG):
        run = sync.run()
    assert run.status is RunStatus.FAILED
    failures = sync.services[-1].state.failures(run.id, limit=1000)
    assert failures
    seen = [run.error or "", caplog.text]
    seen += [f"{f.message} {f.code} {f.payload}" for f in failures]
    assert not [text for text in seen if CREDENTIAL in text]
