"""One suite for the state store, run against SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from ebbtide.errors import ErrorClass, LeaseLostError, MappingBusyError, UsageError
from ebbtide.ports import ChangeCounts, Operation
from ebbtide.state.holder import Holder
from ebbtide.state.schema import leases
from ebbtide.state.store import SqlStateStore, StateStoreLockedError
from ebbtide.values import RecordFailure, RunResult, RunStatus


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStateStore]:
    if request.param == "sqlite":
        state = SqlStateStore("sqlite:///.ebbtide/state.db", tmp_path)
    else:
        dsn = request.getfixturevalue("pg_dsn")
        schema = request.getfixturevalue("pg_schema")
        state = SqlStateStore(f"{dsn}?options=-csearch_path%3D{schema}", tmp_path)
    yield state
    state.dispose()


def finished(store: SqlStateStore, mapping: str, status: RunStatus, failed: int = 0) -> int:
    run, lease = store.start_run(mapping, "manual", lease_ttl_s=60)
    result = RunResult()
    result.counts.extracted, result.counts.added, result.counts.loaded_new = 10, 10, 10 - failed
    result.counts.failed = failed
    store.finish_run(lease, status, result)
    return run.id


def test_a_run_is_recorded_with_its_counts(store: SqlStateStore) -> None:
    run_id = finished(store, "m", RunStatus.PARTIAL_SUCCESS, failed=2)
    run = store.get_run(run_id)
    assert (run.status, run.extracted, run.loaded_new, run.failed) == (
        RunStatus.PARTIAL_SUCCESS,
        10,
        8,
        2,
    )
    assert run.finished_at is not None and run.started_at.tzinfo is not None
    assert run.duration_s is not None and run.duration_s >= 0


def test_second_run_of_a_mapping_is_refused_while_the_first_holds_it(store: SqlStateStore) -> None:
    store.start_run("m", "manual", lease_ttl_s=60)
    with pytest.raises(MappingBusyError, match="busy"):
        store.start_run("m", "manual", lease_ttl_s=60)
    store.start_run("other", "manual", lease_ttl_s=60)  # other mappings are free


def test_stale_lease_is_taken_over_and_its_run_marked_interrupted(store: SqlStateStore) -> None:
    dead, _ = store.start_run("m", "manual", lease_ttl_s=0.2)
    time.sleep(0.4)
    fresh, lease = store.start_run("m", "manual", lease_ttl_s=60)
    assert store.get_run(dead.id).status is RunStatus.INTERRUPTED
    assert fresh.status is RunStatus.RUNNING and store.holds(lease)


def test_a_run_that_lost_its_lease_cannot_heartbeat(store: SqlStateStore) -> None:
    _, old = store.start_run("m", "manual", lease_ttl_s=0.2)
    time.sleep(0.4)
    store.start_run("m", "manual", lease_ttl_s=60)
    with pytest.raises(LeaseLostError):
        store.heartbeat(old, 60)
    assert not store.holds(old)


def test_finishing_releases_the_lease(store: SqlStateStore) -> None:
    finished(store, "m", RunStatus.SUCCESS)
    run, _ = store.start_run("m", "manual", lease_ttl_s=60)
    assert run.status is RunStatus.RUNNING


def test_history_lists_newest_first_and_filters_by_mapping(store: SqlStateStore) -> None:
    a = finished(store, "a", RunStatus.SUCCESS)
    b = finished(store, "b", RunStatus.FAILED)
    a2 = finished(store, "a", RunStatus.SUCCESS)
    assert [r.id for r in store.list_runs()] == [a2, b, a]
    assert [r.id for r in store.list_runs("a")] == [a2, a]
    with pytest.raises(UsageError, match="no run 999"):
        store.get_run(999)


def test_failures_are_grouped_by_class_and_message(store: SqlStateStore) -> None:
    run, lease = store.start_run("m", "manual", lease_ttl_s=60)
    store.add_failures(
        run.id,
        [
            RecordFailure(
                str(k), Operation.ADDED, ErrorClass.VALIDATION, "email invalid", payload="{}"
            )
            for k in range(7)
        ]
        + [
            RecordFailure(
                "99", Operation.UPDATED, ErrorClass.SERVER_ERROR, "HTTP 500", http_status=500
            )
        ],
    )
    groups = store.failure_groups(run.id, samples=5)
    assert [(g.error_class, g.count) for g in groups] == [("validation", 7), ("server_error", 1)]
    assert groups[0].sample_keys == ["0", "1", "2", "3", "4"]
    assert store.failures(run.id, limit=100)[-1].http_status == 500


def test_opening_twice_applies_migrations_once(store: SqlStateStore, tmp_path: Path) -> None:
    again = SqlStateStore(str(store.engine.url.render_as_string(hide_password=False)), tmp_path)
    assert again.list_runs() == []
    again.dispose()


# Names a warehouse's own tables commonly have: the state store may share its database.
WAREHOUSE_TABLES = ("users", "accounts", "customers", "orders", "events", "contacts")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_state_store_opens_in_a_database_that_holds_a_warehouses_tables(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if backend == "sqlite":
        url = "sqlite:///.ebbtide/state.db"
        (tmp_path / ".ebbtide").mkdir()
        engine = sa.create_engine(f"sqlite:///{tmp_path / '.ebbtide' / 'state.db'}")
    else:
        dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")
        url = f"{dsn}?options=-csearch_path%3D{schema}"
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        for table in WAREHOUSE_TABLES:
            conn.execute(sa.text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, email TEXT)"))
            conn.execute(sa.text(f"INSERT INTO {table} VALUES (1, 'kept@example.com')"))
    engine.dispose()

    store = SqlStateStore(url, tmp_path)
    try:
        assert store.list_runs() == []
        with store.engine.connect() as conn:
            for table in WAREHOUSE_TABLES:  # the warehouse's rows are untouched
                rows = conn.execute(sa.text(f"SELECT id, email FROM {table}")).all()
                assert [tuple(r) for r in rows] == [(1, "kept@example.com")], table
    finally:
        store.dispose()


def test_an_interrupted_run_keeps_the_failures_and_deliveries_it_recorded(
    store: SqlStateStore,
) -> None:
    dead, _ = store.start_run("m", "manual", lease_ttl_s=0)  # expired as soon as it starts
    store.add_failures(
        dead.id,
        [
            RecordFailure(str(k), Operation.ADDED, error_class, "refused")
            for k, error_class in enumerate(
                [ErrorClass.VALIDATION, ErrorClass.VALIDATION, ErrorClass.SERVER_ERROR]
            )
        ],
    )
    fresh, _ = store.start_run("m", "manual", lease_ttl_s=60)
    interrupted = store.get_run(dead.id)
    assert interrupted.status is RunStatus.INTERRUPTED
    assert (interrupted.failed, interrupted.failed_by_class) == (
        3,
        {"validation": 2, "server_error": 1},
    )

    # What the journals show: written on the interrupted run, never on one that is running.
    store.ledger.record_acknowledged(
        {dead.id: ChangeCounts(300, 20, 1), fresh.id: ChangeCounts(5, 5, 5)}
    )
    interrupted = store.get_run(dead.id)
    assert (interrupted.loaded_new, interrupted.loaded_updated, interrupted.loaded_deleted) == (
        300,
        20,
        1,
    )
    assert store.get_run(fresh.id).loaded_new == 0


# -- who holds a lease ----------------------------------------------------------------------

DIES_HOLDING = """\
import sys
from pathlib import Path
from ebbtide.state.store import SqlStateStore
run, _ = SqlStateStore(sys.argv[1], Path(sys.argv[2])).start_run("m", "manual", lease_ttl_s=600)
print(run.id)
"""


def run_in_a_process_that_exits(store: SqlStateStore, root: Path) -> int:
    """A run started by another process, which then exits holding its lease."""
    url = store.engine.url.render_as_string(hide_password=False)
    done = subprocess.run(
        [sys.executable, "-c", DIES_HOLDING, url, str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout)


def move_lease(store: SqlStateStore, **holder: object) -> None:
    """Rewrite who holds mapping `m`'s lease, as a run on another machine would have written it."""
    with store.engine.begin() as conn:
        conn.execute(leases.update().where(leases.c.mapping == "m").values(**holder))


def test_a_lease_whose_process_exited_is_taken_over_at_once(
    store: SqlStateStore, tmp_path: Path
) -> None:
    dead_id = run_in_a_process_that_exits(store, tmp_path)
    store.add_failures(dead_id, [RecordFailure("1", Operation.ADDED, ErrorClass.VALIDATION, "no")])
    fresh, lease = store.start_run("m", "manual", lease_ttl_s=60)  # its lease had 10 min left
    dead = store.get_run(dead_id)
    assert dead.status is RunStatus.INTERRUPTED and dead.failed == 1
    assert dead.error is not None and "its process is gone" in dead.error
    assert f"host {socket.gethostname()}" in dead.error
    assert fresh.status is RunStatus.RUNNING and store.holds(lease)


def test_a_lease_whose_pid_now_belongs_to_another_process_is_taken_over_at_once(
    store: SqlStateStore,
) -> None:
    first, _ = store.start_run("m", "manual", lease_ttl_s=600)
    here = Holder.this_process()
    assert here.started is not None
    move_lease(store, process_start=here.started - 1)  # a process of that pid started earlier
    store.start_run("m", "manual", lease_ttl_s=60)
    assert store.get_run(first.id).status is RunStatus.INTERRUPTED


def test_a_lease_held_by_a_live_process_waits_and_the_refusal_names_it(
    store: SqlStateStore,
) -> None:
    first, _ = store.start_run("m", "manual", lease_ttl_s=600)
    with pytest.raises(MappingBusyError) as busy:
        store.start_run("m", "manual", lease_ttl_s=60)
    assert re.fullmatch(
        rf"mapping 'm' is busy: run {first.id} holds it \(host {re.escape(socket.gethostname())},"
        rf" pid {os.getpid()}, lease until \d\d:\d\d:\d\d UTC\)",
        str(busy.value),
    )
    assert store.get_run(first.id).status is RunStatus.RUNNING


def test_a_lease_held_on_another_host_waits_for_its_expiry_and_names_the_host(
    store: SqlStateStore,
) -> None:
    first, _ = store.start_run("m", "manual", lease_ttl_s=600)
    until = datetime.now(UTC) + timedelta(seconds=600)
    move_lease(store, host="web-1", pid=4242, expires_at=until)  # pid 4242 may not exist here
    with pytest.raises(MappingBusyError) as busy:
        store.start_run("m", "manual", lease_ttl_s=60)
    assert str(busy.value) == (
        f"mapping 'm' is busy: run {first.id} holds it"
        f" (host web-1, pid 4242, lease until {until:%H:%M:%S} UTC)"
    )
    move_lease(store, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    store.start_run("m", "manual", lease_ttl_s=60)
    dead = store.get_run(first.id)
    assert dead.status is RunStatus.INTERRUPTED
    assert dead.error is not None and "its lease expired" in dead.error


def test_a_write_locked_past_the_bounded_wait_says_which_state_store_and_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EBBTIDE_STATE_LOCK_WAIT_S", "0.2")
    store = SqlStateStore("sqlite:///.ebbtide/state.db", tmp_path)
    path = tmp_path / ".ebbtide" / "state.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # as another process's write transaction would
    try:
        with pytest.raises(StateStoreLockedError) as locked:
            store.start_run("m", "manual", lease_ttl_s=60)
        assert str(locked.value).startswith(f"the state store {path} stayed locked for 0.2 s")
        assert "holds a write lock on it" in str(locked.value)
        assert store.list_runs() == []  # reading goes on while another process writes
    finally:
        other.execute("ROLLBACK")
        other.close()
    run, _ = store.start_run("m", "manual", lease_ttl_s=60)
    assert run.status is RunStatus.RUNNING
    store.dispose()


@pytest.mark.postgres
def test_postgres_sessions_bound_lock_waits_statements_and_idle_transactions(
    pg_dsn: str, pg_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EBBTIDE_STATE_LOCK_WAIT_S", "0.2")
    store = SqlStateStore(f"{pg_dsn}?options=-csearch_path%3D{pg_schema}", tmp_path)
    try:
        with store.engine.connect() as conn:
            shown = {
                name: conn.execute(sa.text(f"SHOW {name}")).scalar()
                for name in (
                    "lock_timeout",
                    "statement_timeout",
                    "idle_in_transaction_session_timeout",
                    "search_path",
                )
            }
        assert shown == {
            "lock_timeout": "200ms",
            "statement_timeout": "2min",
            "idle_in_transaction_session_timeout": "1min",
            "search_path": pg_schema,  # the URL's own options still apply
        }
    finally:
        store.dispose()


@pytest.mark.postgres
def test_a_postgres_write_locked_past_the_bounded_wait_says_which_state_store_and_why(
    pg_dsn: str, pg_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    monkeypatch.setenv("EBBTIDE_STATE_LOCK_WAIT_S", "0.2")
    store = SqlStateStore(f"{pg_dsn}?options=-csearch_path%3D{pg_schema}", tmp_path)
    other = psycopg.connect(pg_dsn)
    try:
        # As a frozen process's open transaction would: writes wait, reads go on.
        other.execute(f'LOCK TABLE "{pg_schema}".leases IN EXCLUSIVE MODE')
        with pytest.raises(StateStoreLockedError) as locked:
            store.start_run("m", "manual", lease_ttl_s=60)
        assert "stayed locked for 0.2 s" in str(locked.value)
        assert "holds a write lock on it" in str(locked.value)
        assert "127.0.0.1" in str(locked.value)
        other.rollback()
        run, _ = store.start_run("m", "manual", lease_ttl_s=60)
        assert run.status is RunStatus.RUNNING
    finally:
        other.close()
        store.dispose()


def test_known_revisions_are_alembics_and_the_newest_is_its_head() -> None:
    """The store is checked without importing Alembic, from the migrations' file names: they
    must name the revisions Alembic reads, and the newest must be the one head."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from ebbtide.state.store import known_revisions

    config = Config()
    config.set_main_option("script_location", "ebbtide.state:migrations")
    scripts = ScriptDirectory.from_config(config)
    assert known_revisions() == {script.revision for script in scripts.walk_revisions()}
    assert [max(known_revisions())] == scripts.get_heads()
