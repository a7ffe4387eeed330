"""The webhook destination through the real engine, against a real receiver on 127.0.0.1.

Each test builds a workspace (DuckDB warehouse, ebbtide.yml with `${HOOK_URL}`) and runs
`SyncService.run`; the receiver plays a destination that rejects records, answers 429 or 500,
hangs, or refuses the credentials. No mocks.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ebbtide.config.workspace import load_workspace
from ebbtide.demo.receiver import Receiver
from ebbtide.errors import ErrorClass
from ebbtide.ports import Operation
from ebbtide.services.sync import SyncService
from ebbtide.values import RunStatus

ROWS = 95
BATCH_SIZE = 10
CONCURRENCY = 3
TOKEN = "tok-not-a-real-secret-123"

WORKSPACE = """\
sources:
  warehouse: {{type: duckdb, path: warehouse.duckdb}}
models:
  users:
    source: warehouse
    primary_key: id
    sql: select id, email, plan, ltv from users
destinations:
  hook:
    type: webhook
    url: "${{HOOK_URL}}"
    headers: {{Authorization: "Bearer ${{HOOK_TOKEN}}"}}
    batch_size: {batch_size}
    concurrency: {concurrency}
    timeout_s: {timeout_s}
mappings:
  users_mirror:
    model: users
    destination: hook
    action: upsert
    mode: mirror
    fields: {{email: email, plan: plan, ltv: ltv}}
  users_upsert:
    model: users
    destination: hook
    action: upsert
    mode: upsert
    fields: {{email: email, plan: plan, ltv: ltv}}
"""

MakeService = Callable[..., SyncService]


def expected_data(i: int, email: str | None = None) -> dict[str, Any]:
    return {
        "email": email or f"user{i}@example.com",
        "plan": "pro" if i % 3 == 0 else "free",
        "ltv": i * 1.5,
    }


def warehouse_sql(root: Path, *statements: str) -> None:
    with duckdb.connect(str(root / "warehouse.duckdb")) as con:
        for statement in statements:
            con.execute(statement)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def make_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> Iterator[MakeService]:
    """A workspace whose webhook points at `url` (the receiver unless told otherwise)."""
    services: list[SyncService] = []

    def make(*, rows: int = ROWS, timeout_s: float = 5.0, url: str | None = None) -> SyncService:
        monkeypatch.setenv("HOOK_URL", url or receiver.url)
        monkeypatch.setenv("HOOK_TOKEN", TOKEN)
        (tmp_path / "ebbtide.yml").write_text(
            WORKSPACE.format(batch_size=BATCH_SIZE, concurrency=CONCURRENCY, timeout_s=timeout_s)
        )
        warehouse_sql(
            tmp_path,
            "CREATE TABLE users AS SELECT i::BIGINT AS id, 'user' || i || '@example.com' AS email,"
            " CASE WHEN i % 3 = 0 THEN 'pro' ELSE 'free' END AS plan, i * 1.5 AS ltv"
            f" FROM range(1, {rows + 1}) t(i)",
        )
        service = SyncService(load_workspace(tmp_path))
        services.append(service)
        return service

    yield make
    for service in services:
        service.state.dispose()


def change_warehouse(root: Path) -> None:
    """Update 5, 6, 7; delete 10, 11; add 200."""
    warehouse_sql(
        root,
        "UPDATE users SET email = 'new' || id || '@example.com' WHERE id IN (5, 6, 7)",
        "DELETE FROM users WHERE id IN (10, 11)",
        "INSERT INTO users VALUES (200, 'user200@example.com', 'free', 300.0)",
    )


def sent(receiver: Receiver) -> set[tuple[str, Any]]:
    return {(r["op"], r["key"]) for r in receiver.records}


# -- the happy path -------------------------------------------------------------------------


def test_first_sync_delivers_every_key_once_in_batches_with_unique_idempotency_keys(
    receiver: Receiver, make_service: MakeService
) -> None:
    receiver.delay_s = 0.03  # long enough for concurrent requests to overlap
    service = make_service()
    run = service.run("users_mirror")

    assert run.status is RunStatus.SUCCESS, run.error
    assert (run.extracted, run.added, run.updated, run.deleted) == (ROWS, ROWS, 0, 0)
    assert (run.loaded_new, run.loaded_updated, run.loaded_deleted) == (ROWS, 0, 0)
    assert run.failed == 0 and run.failed_by_class == {}
    assert sorted(receiver.keys()) == list(range(1, ROWS + 1))
    assert len(receiver.records) == ROWS  # nothing sent twice
    for record in receiver.records:
        assert set(record) == {"op", "key", "data", "idempotency_key", "accepted"}
        assert record["op"] == "added"
        assert record["data"] == expected_data(record["key"])

    batches = -(-ROWS // BATCH_SIZE)
    assert sorted(receiver.idempotency_keys) == sorted(
        f"{run.id}-{n}-{service.state.name}" for n in range(1, batches + 1)
    )
    for exchange in receiver.exchanges:
        assert exchange.status == 200
        assert (exchange.mapping, exchange.action) == ("users_mirror", "upsert")
        assert 0 < exchange.records <= BATCH_SIZE
        assert exchange.headers["Authorization"] == f"Bearer {TOKEN}"
        assert exchange.headers["Content-Type"].startswith("application/json")
    per_key = Counter(r["idempotency_key"] for r in receiver.records)
    assert sum(per_key.values()) == ROWS and len(per_key) == batches
    assert 2 <= receiver.max_in_flight <= CONCURRENCY


def test_idempotency_keys_never_repeat_across_state_stores(
    tmp_path: Path, receiver: Receiver, make_service: MakeService
) -> None:
    """Run ids count from 1 in every store: two workspaces syncing to one destination, or a
    workspace whose state store was deleted, must still never send a key twice."""
    first = make_service()
    assert first.run("users_mirror").id == 1
    first_keys = set(receiver.idempotency_keys)
    first.state.dispose()
    (tmp_path / ".ebbtide" / "state.db").unlink()
    (tmp_path / "warehouse.duckdb").unlink()
    again = make_service(rows=ROWS + 50)  # a new store; the snapshot still knows the rest
    run = again.run("users_mirror")
    assert run.id == 1 and run.loaded_new == 50
    assert again.state.name != first.state.name
    assert not first_keys & set(receiver.idempotency_keys[len(first_keys) :])
    assert len(set(receiver.idempotency_keys)) == len(receiver.idempotency_keys)


def test_unchanged_model_sends_nothing_then_mirror_sends_exactly_the_changes(
    tmp_path: Path, receiver: Receiver, make_service: MakeService
) -> None:
    service = make_service()
    service.run("users_mirror")
    receiver.reset()

    again = service.run("users_mirror")
    assert again.status is RunStatus.SUCCESS
    assert receiver.requests == 0
    assert (again.extracted, again.added, again.updated, again.deleted) == (ROWS, 0, 0, 0)

    change_warehouse(tmp_path)
    changed = service.run("users_mirror")
    assert changed.status is RunStatus.SUCCESS, changed.error
    assert len(receiver.records) == 6
    assert sent(receiver) == {
        ("updated", 5),
        ("updated", 6),
        ("updated", 7),
        ("deleted", 10),
        ("deleted", 11),
        ("added", 200),
    }
    by_key = {r["key"]: r["data"] for r in receiver.records}
    assert by_key[5] == expected_data(5, "new5@example.com")
    assert by_key[10] is None and by_key[11] is None
    assert (changed.added, changed.updated, changed.deleted) == (1, 3, 2)
    assert (changed.loaded_new, changed.loaded_updated, changed.loaded_deleted) == (1, 3, 2)

    receiver.reset()
    assert service.run("users_mirror").status is RunStatus.SUCCESS
    assert receiver.requests == 0


def test_upsert_mode_does_not_send_deletes_nor_resend_them_later(
    tmp_path: Path, receiver: Receiver, make_service: MakeService
) -> None:
    service = make_service()
    service.run("users_upsert")
    change_warehouse(tmp_path)
    receiver.reset()

    run = service.run("users_upsert")
    assert run.status is RunStatus.SUCCESS, run.error
    assert sent(receiver) == {("updated", 5), ("updated", 6), ("updated", 7), ("added", 200)}
    assert (run.added, run.updated, run.deleted, run.skipped) == (1, 3, 2, 2)
    assert run.loaded_deleted == 0

    receiver.reset()
    later = service.run("users_upsert")
    assert receiver.requests == 0
    assert (later.deleted, later.skipped) == (0, 0)


# -- records the destination refuses -------------------------------------------------------


def test_rejected_records_are_bookkept_and_resent_next_sync_with_latest_data(
    tmp_path: Path, receiver: Receiver, make_service: MakeService
) -> None:
    service = make_service()
    receiver.reject(3, code="INVALID_EMAIL", message="email: not a valid address")
    receiver.reject(42, code="INVALID_EMAIL", message="email: not a valid address")
    receiver.reject(77, code="DUPLICATE", message="already exists", error_class="conflict")

    run = service.run("users_mirror")
    assert run.status is RunStatus.PARTIAL_SUCCESS
    assert run.failed == 3
    assert run.failed_by_class == {"validation": 2, "conflict": 1}
    assert run.loaded_new == ROWS - 3
    failures = {f.key: f for f in service.state.failures(run.id)}
    assert set(failures) == {"3", "42", "77"}
    assert failures["3"].error_class is ErrorClass.VALIDATION
    assert failures["3"].message == "email: not a valid address"
    assert failures["3"].code == "INVALID_EMAIL"
    assert failures["3"].operation is Operation.ADDED
    assert failures["77"].error_class is ErrorClass.CONFLICT
    assert failures["3"].payload is not None and "user3@example.com" in failures["3"].payload

    warehouse_sql(tmp_path, "UPDATE users SET email = 'fixed42@example.com' WHERE id = 42")
    receiver.clear_behaviours()
    receiver.reset()
    retry = service.run("users_mirror")
    assert retry.status is RunStatus.SUCCESS, retry.error
    assert sent(receiver) == {("added", 3), ("added", 42), ("added", 77)}
    assert {r["key"]: r["data"] for r in receiver.records}[42] == expected_data(
        42, "fixed42@example.com"
    )
    assert (retry.added, retry.loaded_new) == (3, 3)

    receiver.reset()
    service.run("users_mirror")
    assert receiver.requests == 0


# -- retried inside the run ----------------------------------------------------------------


def test_429_waits_at_least_retry_after_then_succeeds(
    receiver: Receiver, make_service: MakeService
) -> None:
    receiver.fail_status, receiver.retry_after, receiver.fail_first = 429, 1.0, 1
    run = make_service().run("users_mirror")

    assert run.status is RunStatus.SUCCESS, run.error
    assert run.failed == 0 and run.loaded_new == ROWS
    assert sorted(receiver.keys()) == list(range(1, ROWS + 1))
    limited = [e for e in receiver.exchanges if e.status == 429]
    assert len(limited) == 1
    retried = [
        e
        for e in receiver.exchanges
        if e.idempotency_key == limited[0].idempotency_key and e.status == 200
    ]
    assert len(retried) == 1
    assert retried[0].at - limited[0].at >= 1.0


def test_503_with_retry_after_as_an_http_date_is_honoured(
    receiver: Receiver, make_service: MakeService
) -> None:
    # The receiver stamps arrivals with time.monotonic(): this maps them to the wall clock
    # that HTTP dates speak, so the check holds however long the run takes to start.
    wall_offset = time.time() - time.monotonic()
    when = datetime.now(UTC) + timedelta(seconds=3)
    receiver.fail_status, receiver.retry_after = 503, format_datetime(when, usegmt=True)
    receiver.fail_first = 1
    run = make_service(rows=BATCH_SIZE).run("users_mirror")

    assert run.status is RunStatus.SUCCESS, run.error
    first, second = receiver.exchanges
    assert (first.status, second.status) == (503, 200)
    assert first.idempotency_key == second.idempotency_key
    named = when.replace(microsecond=0).timestamp()  # HTTP dates have whole seconds
    assert second.at + wall_offset >= named - 0.01


def test_server_errors_then_recovery_lose_nothing(
    receiver: Receiver, make_service: MakeService
) -> None:
    receiver.fail_first = 4
    run = make_service().run("users_mirror")

    assert run.status is RunStatus.SUCCESS, run.error
    assert (run.failed, run.loaded_new) == (0, ROWS)
    assert sorted(receiver.keys()) == list(range(1, ROWS + 1))
    failed = [e for e in receiver.exchanges if e.status == 500]
    assert len(failed) == 4
    accepted = {e.idempotency_key for e in receiver.exchanges if e.status == 200}
    assert {e.idempotency_key for e in failed} <= accepted  # retried under the same key


# -- failing for good -----------------------------------------------------------------------


def test_receiver_that_hangs_past_timeout_fails_records_as_timeout(
    receiver: Receiver, make_service: MakeService
) -> None:
    rows = 3 * BATCH_SIZE
    receiver.hang_s = 5.0
    service = make_service(rows=rows, timeout_s=0.3)
    run = service.run("users_mirror")

    assert run.status is RunStatus.FAILED
    assert (run.failed, run.loaded_new) == (rows, 0)
    assert run.failed_by_class == {"timeout": rows}
    assert receiver.requests == 3 * 5  # every batch tried 5 times
    failures = service.state.failures(run.id)
    assert len(failures) == rows
    assert {f.error_class for f in failures} == {ErrorClass.TIMEOUT}
    assert all("0.3s" in f.message for f in failures)


def test_bad_credentials_stop_the_run_early_and_lose_nothing(
    receiver: Receiver, make_service: MakeService
) -> None:
    service = make_service()
    receiver.status_for_all = 401
    run = service.run("users_mirror")

    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "auth" in run.error and ErrorClass.AUTH.recommended_action in run.error
    batches = -(-ROWS // BATCH_SIZE)
    assert receiver.requests <= CONCURRENCY < batches  # no retries, no more batches
    assert run.failed == sum(e.records for e in receiver.exchanges)
    assert run.failed_by_class == {"auth": run.failed}
    assert TOKEN not in run.error

    receiver.clear_behaviours()
    receiver.reset()
    fixed = service.run("users_mirror")
    assert fixed.status is RunStatus.SUCCESS, fixed.error
    assert sorted(receiver.keys()) == list(range(1, ROWS + 1))


def test_connection_refused_fails_records_as_network(make_service: MakeService) -> None:
    with socket.socket() as probe:  # a port nothing listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rows = 3 * BATCH_SIZE
    service = make_service(rows=rows, url=f"http://127.0.0.1:{port}/ingest")
    run = service.run("users_mirror")

    assert run.status is RunStatus.FAILED
    assert (run.failed, run.loaded_new) == (rows, 0)
    assert run.failed_by_class == {"network": rows}
    assert run.error is not None and "network" in run.error
    failures = service.state.failures(run.id)
    assert len(failures) == rows
    assert {f.error_class for f in failures} == {ErrorClass.NETWORK}


# -- the receiver's other modes, as the benchmark and crash tests use them ----------------


def test_count_only_receiver_counts_records_without_keeping_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Receiver(count_only=True) as counting:
        monkeypatch.setenv("HOOK_URL", counting.url)
        monkeypatch.setenv("HOOK_TOKEN", TOKEN)
        (tmp_path / "ebbtide.yml").write_text(
            WORKSPACE.format(batch_size=BATCH_SIZE, concurrency=CONCURRENCY, timeout_s=5)
        )
        warehouse_sql(
            tmp_path,
            "CREATE TABLE users AS SELECT i::BIGINT AS id, 'op\"op\":' || i AS email,"
            " 'free' AS plan, 1.0 AS ltv FROM range(1, 51) t(i)",
        )
        service = SyncService(load_workspace(tmp_path))
        run = service.run("users_mirror")
        service.state.dispose()
    assert run.status is RunStatus.SUCCESS, run.error
    assert (counting.record_count, counting.requests) == (50, 5)
    assert counting.records == []


def test_receiver_process_logs_every_record_and_stops_on_sigterm(
    tmp_path: Path, make_service: MakeService
) -> None:
    log = tmp_path / "received.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "ebbtide.demo.receiver", "--port", "0", "--log", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:") and line.endswith("/ingest")
        run = make_service(url=line.removeprefix("listening on ")).run("users_mirror")
        assert run.status is RunStatus.SUCCESS, run.error
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    lines = [json.loads(text) for text in log.read_text().splitlines()]
    assert sorted(entry["key"] for entry in lines) == list(range(1, ROWS + 1))
    assert {entry["op"] for entry in lines} == {"added"}
    assert all(entry["idempotency_key"].startswith(f"{run.id}-") for entry in lines)
    assert f"received {ROWS} records" in stderr
