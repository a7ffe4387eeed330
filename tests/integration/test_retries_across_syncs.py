"""Failed records across syncs (DESIGN invariants 5-7): retried with the latest data, resolved,
obsolete or expired, each with the details a person needs; and the status each run gets.

Each scenario runs on every backend (tests/integration/warehouse_kit.py): a DuckDB warehouse
file with the local diff, PostgreSQL with the local diff, and PostgreSQL and MariaDB with
`diff: warehouse`; the real receiver on 127.0.0.1, a real PostgreSQL table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ebbtide.demo.receiver import Receiver
from ebbtide.errors import ErrorClass
from ebbtide.ports import Operation
from ebbtide.services.advice import recommended_action
from ebbtide.state.schema import pending_failures
from ebbtide.values import FailureStatus, RunStatus
from tests.integration.warehouse_kit import ALL_BACKENDS, backend_kit
from tests.integration.workspace_kit import (
    TOKEN,
    Kit,
    ScriptedServer,
    expected_data,
    failed_records,
    hook,
    mapping,
    sent,
)

ROWS = 20
P, E = FailureStatus.PENDING, FailureStatus.EXPIRED


@pytest.fixture(params=[*ALL_BACKENDS, "postgres-local"])
def kit(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Kit]:
    yield from backend_kit(request, tmp_path, monkeypatch)


def data_sent(receiver: Receiver) -> dict[Any, Any]:
    return {r["key"]: r["data"] for r in receiver.records}


# -- retried on the next sync ----------------------------------------------------------------


def test_rejected_record_is_retried_on_the_very_next_sync_and_counted_as_retried(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    receiver.reject(3)
    receiver.reject(7)
    first = service.run("users_mirror")
    assert first.status is RunStatus.PARTIAL_SUCCESS
    assert (first.failed, first.loaded_new, first.retried) == (2, ROWS - 2, 0)
    pending = failed_records(service, "users_mirror")
    assert {k: (r.status, r.failed_syncs) for k, r in pending.items()} == {
        "3": (P, 1),
        "7": (P, 1),
    }

    receiver.clear_behaviours()
    receiver.reset()
    second = service.run("users_mirror")  # at once: no hidden delay before a retry
    assert second.status is RunStatus.SUCCESS, second.error
    assert sent(receiver) == {("added", 3), ("added", 7)}
    assert (second.retried, second.loaded_new) == (2, 2)
    assert {r.status for r in failed_records(service, "users_mirror").values()} == {
        FailureStatus.RESOLVED
    }
    assert failed_records(service, "users_mirror", (P, E)) == {}

    receiver.reset()
    third = service.run("users_mirror")
    assert (receiver.requests, third.retried) == (0, 0)


def test_retry_sends_latest_row_values_and_keeps_the_first_failure_time(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    receiver.reject(5, message="email: not a valid address")
    first = service.run("users_mirror")
    before = failed_records(service, "users_mirror")["5"]

    kit.sql("UPDATE users SET email = 'changed5@example.com' WHERE id = 5")
    receiver.reset()
    second = service.run("users_mirror")  # still refused: the new value is what was tried
    assert data_sent(receiver) == {5: expected_data(5, "changed5@example.com")}
    after = failed_records(service, "users_mirror")["5"]
    assert (after.status, after.failed_syncs) == (P, 2)
    assert after.first_failed_at == before.first_failed_at
    assert (before.last_run_id, after.last_run_id) == (first.id, second.id)
    assert after.payload is not None and "changed5@example.com" in after.payload
    assert second.retried == 1

    kit.sql("UPDATE users SET email = 'fixed5@example.com' WHERE id = 5")
    receiver.clear_behaviours()
    receiver.reset()
    third = service.run("users_mirror")
    assert third.status is RunStatus.SUCCESS, third.error
    assert data_sent(receiver) == {5: expected_data(5, "fixed5@example.com")}
    assert failed_records(service, "users_mirror")["5"].status is FailureStatus.RESOLVED


def test_row_deleted_since_it_failed_is_not_resent_and_becomes_obsolete(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    receiver.reject(4)
    service.run("users_mirror")
    kit.sql("DELETE FROM users WHERE id = 4")
    receiver.clear_behaviours()
    receiver.reset()

    run = service.run("users_mirror")
    assert run.status is RunStatus.SUCCESS, run.error
    assert receiver.requests == 0  # the destination never had it: no delete either
    assert (run.deleted, run.retried) == (0, 0)
    assert failed_records(service, "users_mirror")["4"].status is FailureStatus.OBSOLETE
    assert failed_records(service, "users_mirror", (P, E)) == {}


def test_updated_row_deleted_since_it_failed_in_upsert_mode_becomes_obsolete(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    service.run("users_upsert")
    kit.sql("UPDATE users SET plan = 'gold' WHERE id = 8")
    receiver.reject(8)
    assert service.run("users_upsert").failed == 1
    assert failed_records(service, "users_upsert")["8"].operation == "updated"

    kit.sql("DELETE FROM users WHERE id = 8")
    receiver.clear_behaviours()
    receiver.reset()
    run = service.run("users_upsert")
    assert run.status is RunStatus.SUCCESS, run.error
    assert receiver.requests == 0  # upsert mode sends no deletes, nor the stale update
    assert failed_records(service, "users_upsert")["8"].status is FailureStatus.OBSOLETE


@pytest.mark.parametrize("name", ["users_mirror", "users_upsert"])
def test_row_back_to_the_value_the_destination_has_is_not_resent_and_resolved(
    receiver: Receiver, kit: Kit, name: str
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    service.run(name)
    kit.sql("UPDATE users SET plan = 'gold' WHERE id = 6")
    receiver.reject(6)
    failing = service.run(name)
    assert failing.failed == 1
    assert failed_records(service, name)["6"].operation == Operation.UPDATED.value

    kit.sql("UPDATE users SET plan = 'pro' WHERE id = 6")  # what the destination still has
    receiver.clear_behaviours()
    receiver.reset()
    run = service.run(name)
    assert run.status is RunStatus.SUCCESS, run.error
    assert receiver.requests == 0
    assert (run.updated, run.retried) == (0, 0)
    assert failed_records(service, name)["6"].status is FailureStatus.RESOLVED


# -- the retry window ---------------------------------------------------------------------------


def test_after_max_syncs_the_record_expires_and_waits_for_its_row_to_change(
    receiver: Receiver, kit: Kit
) -> None:
    mappings = {"users_mirror": mapping("mirror", retry={"max_syncs": 3})}
    service = kit.build(receiver.url, rows=ROWS, mappings=mappings)
    receiver.reject(2, message="plan: unknown plan")
    for attempt in (1, 2, 3):
        receiver.reset()
        run = service.run("users_mirror")
        # The first run loads the others; later runs send key 2 alone, and nothing loads.
        assert run.status is (RunStatus.PARTIAL_SUCCESS if attempt == 1 else RunStatus.FAILED)
        assert ("added", 2) in sent(receiver)
        record = failed_records(service, "users_mirror")["2"]
        assert record.failed_syncs == attempt
        assert record.status is (E if attempt == 3 else P)
    expired = failed_records(service, "users_mirror", (P, E))  # what `records failed` lists
    assert set(expired) == {"2"} and expired["2"].status is E
    assert expired["2"].message == "plan: unknown plan"

    for _ in range(2):  # given up: not sent, even though the destination would still refuse it
        receiver.reset()
        later = service.run("users_mirror")
        assert later.status is RunStatus.SUCCESS, later.error
        assert receiver.requests == 0
    assert failed_records(service, "users_mirror")["2"].status is E

    kit.sql("UPDATE users SET email = 'again2@example.com' WHERE id = 2")
    receiver.reset()
    changed = service.run("users_mirror")
    assert data_sent(receiver) == {2: expected_data(2, "again2@example.com")}
    assert changed.failed == 1
    again = failed_records(service, "users_mirror")["2"]
    assert (again.status, again.failed_syncs, again.last_run_id) == (P, 1, changed.id)
    assert again.first_failed_at > expired["2"].first_failed_at


def test_after_max_days_the_record_expires(receiver: Receiver, kit: Kit) -> None:
    day_fraction = 0.5 / 86_400  # half a second
    mappings = {"users_mirror": mapping("mirror", retry={"max_days": day_fraction})}
    service = kit.build(receiver.url, rows=ROWS, mappings=mappings)
    receiver.reject(9)
    service.run("users_mirror")
    assert failed_records(service, "users_mirror")["9"].status is P
    time.sleep(0.6)
    service.run("users_mirror")
    record = failed_records(service, "users_mirror")["9"]
    assert (record.status, record.failed_syncs) == (E, 2)
    receiver.reset()
    service.run("users_mirror")
    assert receiver.requests == 0


def test_default_window_expires_a_record_first_failed_14_days_ago(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    receiver.reject(11)
    service.run("users_mirror")
    first = failed_records(service, "users_mirror")["11"].first_failed_at
    with service.state.engine.begin() as conn:  # as if it had first failed 14 days ago
        conn.execute(
            pending_failures.update()
            .where(pending_failures.c.record_key == "11")
            .values(first_failed_at=first - timedelta(days=14))
        )
    service.run("users_mirror")
    record = failed_records(service, "users_mirror")["11"]
    assert (record.status, record.failed_syncs) == (E, 2)


def test_destination_outage_does_not_use_up_the_retry_window(receiver: Receiver, kit: Kit) -> None:
    # Bad credentials say nothing about the records: giving them up would advance the snapshot
    # past rows the destination never got, and they would never be sent once the key is fixed.
    mappings = {"users_mirror": mapping("mirror", retry={"max_syncs": 2})}
    # One batch: bad credentials stop a run at once, so with two batches whether the second
    # was already in flight (and failed) or left unsent depends on timing.
    destinations = {"hook": hook(batch_size=ROWS)}
    service = kit.build(receiver.url, rows=ROWS, destinations=destinations, mappings=mappings)
    receiver.status_for_all = 401
    for _ in range(2):
        assert service.run("users_mirror").failed_by_class == {"auth": ROWS}
    statuses = {r.status for r in failed_records(service, "users_mirror").values()}
    assert statuses == {P}, "records given up because the destination was down"

    receiver.clear_behaviours()
    receiver.reset()
    fixed = service.run("users_mirror")
    assert fixed.status is RunStatus.SUCCESS, fixed.error
    assert sorted(receiver.keys()) == list(range(1, ROWS + 1))


# -- what a failed record tells ----------------------------------------------------------------


def test_failed_record_has_every_detail_with_the_secret_redacted(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    kit.sql(f"UPDATE users SET email = '{TOKEN}@example.com' WHERE id = 3")
    receiver.reject(3, code="INVALID_EMAIL", message=f"email: {TOKEN} is not an address")
    run = service.run("users_mirror")

    [failure] = service.state.failures(run.id)
    assert (failure.key, failure.operation) == ("3", Operation.ADDED)
    assert (failure.error_class, failure.code) == (ErrorClass.VALIDATION, "INVALID_EMAIL")
    assert failure.http_status is None  # refused inside a 200 answer: no status of its own
    assert failure.message == "email: *** is not an address"
    assert failure.payload is not None and TOKEN not in failure.payload
    assert json.loads(failure.payload) == {
        "op": "added",
        "key": 3,
        "data": {**expected_data(3), "email": "***@example.com"},
    }
    record = failed_records(service, "users_mirror")["3"]
    assert TOKEN not in record.message and TOKEN not in (record.payload or "")
    action = recommended_action(
        service.workspace, "users_mirror", failure.error_class, failure.message
    )
    assert "'email'" in action and "mappings.users_mirror.fields.email" in action


def test_auth_failure_has_http_status_and_points_at_the_headers(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    receiver.status_for_all = 401
    run = service.run("users_mirror")

    failures = service.state.failures(run.id)
    assert failures
    for failure in failures:
        assert (failure.error_class, failure.http_status, failure.code) == (
            ErrorClass.AUTH,
            401,
            "401",
        )
        assert failure.message.startswith("HTTP 401")
        assert failure.payload is not None and json.loads(failure.payload)["op"] == "added"
    action = recommended_action(service.workspace, "users_mirror", ErrorClass.AUTH, "HTTP 401")
    assert "destinations.hook.headers" in action
    assert TOKEN not in (run.error or "")


# -- status ---------------------------------------------------------------------------------------


def test_status_is_success_partial_success_or_failed_by_what_loaded(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=5)
    assert service.run("users_upsert").status is RunStatus.SUCCESS
    kit.sql("UPDATE users SET plan = 'gold'")
    for key in range(1, 6):
        receiver.reject(key)
    every = service.run("users_upsert")
    assert every.status is RunStatus.FAILED  # nothing loaded
    assert (every.failed, every.loaded_updated) == (5, 0)
    receiver.clear_behaviours()
    receiver.reject(2)
    some = service.run("users_upsert")
    assert some.status is RunStatus.PARTIAL_SUCCESS
    assert (some.failed, some.loaded_updated, some.retried) == (1, 4, 5)


def test_401_after_batches_loaded_stops_at_once_and_fails_the_run(kit: Kit) -> None:
    def expire_after_two(number: int, records: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        return (200, {}) if number <= 2 else (401, {"error": "token expired"})

    with ScriptedServer(expire_after_two) as server:
        destinations = {"hook": hook(batch_size=10, concurrency=1)}
        service = kit.build(server.url, rows=50, destinations=destinations)
        run = service.run("users_mirror")
        assert run.status is RunStatus.FAILED
        assert (run.loaded_new, run.failed, run.failed_by_class) == (20, 10, {"auth": 10})
        assert server.requests == 3  # no retry of the 401, no batch after it
        assert run.error is not None and "auth" in run.error

    with ScriptedServer(lambda number, records: (200, {})) as fixed:
        kit.monkeypatch.setenv("HOOK_URL", fixed.url)
        again = kit.service().run("users_mirror")
        assert again.status is RunStatus.SUCCESS, again.error
        assert sorted(fixed.accepted) == sorted(set(range(1, 51)) - set(server.accepted))
        assert again.retried == 10


# -- a real PostgreSQL table ---------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_check_constraint_fails_rows_as_validation_and_next_sync_retries_them_only(
    kit: Kit, pg_dsn: str, pg_schema: str
) -> None:
    table = f'"{pg_schema}".accounts'
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, email text, ltv double precision,"
            " CONSTRAINT ltv_not_negative CHECK (ltv >= 0))"
        )
        conn.execute(f'CREATE TABLE "{pg_schema}".writes (id bigint)')
        conn.execute(
            f'CREATE FUNCTION "{pg_schema}".log_write() RETURNS trigger LANGUAGE plpgsql AS'
            f' $$BEGIN INSERT INTO "{pg_schema}".writes VALUES (NEW.id); RETURN NEW; END$$'
        )
        conn.execute(
            f"CREATE TRIGGER log_write AFTER INSERT OR UPDATE ON {table}"
            f' FOR EACH ROW EXECUTE FUNCTION "{pg_schema}".log_write()'
        )
    destinations = {
        "pg": {
            "type": "postgres",
            "url": "${PG_URL}",
            "table": f"{pg_schema}.accounts",
            "key": "id",
            "batch_size": 10,
        }
    }
    accounts = {
        "model": "users",
        "destination": "pg",
        "action": "upsert",
        "mode": "upsert",
        "fields": {"email": "email", "ltv": "ltv"},
    }
    service = kit.build(
        "http://127.0.0.1:9/unused",
        rows=ROWS,
        destinations=destinations,
        mappings={"accounts": accounts},
        env={"PG_URL": pg_dsn},
    )
    kit.sql("UPDATE users SET ltv = -1 WHERE id IN (4, 9, 15)")
    first = service.run("accounts")
    assert first.status is RunStatus.PARTIAL_SUCCESS, first.error
    assert (first.loaded_new, first.failed, first.failed_by_class) == (17, 3, {"validation": 3})
    failures = {f.key: f for f in service.state.failures(first.id)}
    assert set(failures) == {"4", "9", "15"}
    for failure in failures.values():
        assert failure.error_class is ErrorClass.VALIDATION
        assert failure.code == "23514"
        assert "ltv_not_negative" in failure.message

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (17,)
        conn.execute(f'DELETE FROM "{pg_schema}".writes')
    kit.sql("UPDATE users SET ltv = 1 WHERE id IN (4, 9)")
    second = service.run("accounts")
    assert second.status is RunStatus.PARTIAL_SUCCESS, second.error
    assert (second.added, second.retried, second.loaded_new, second.failed) == (3, 3, 2, 1)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        written = conn.execute(f'SELECT id FROM "{pg_schema}".writes ORDER BY id').fetchall()
        assert written == [(4,), (9,)]  # only the rejected rows were sent again
    pending = failed_records(service, "accounts")
    assert {k: r.status for k, r in pending.items()} == {
        "4": FailureStatus.RESOLVED,
        "9": FailureStatus.RESOLVED,
        "15": P,
    }
    assert pending["15"].failed_syncs == 2
