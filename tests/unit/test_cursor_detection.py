"""Cursor-assisted detection finds what the full diff finds while the cursor is trustworthy,
and the periodic full diff repairs what an untrustworthy one missed."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from ebbtide.config.models import SyncMode
from ebbtide.errors import ModelError
from ebbtide.mapping.compiler import CompiledMapping, column_field
from ebbtide.ports import KEY_PART_PREFIX, OP_COLUMN, Operation, iter_batches
from ebbtide.snapshots import cursor
from ebbtide.snapshots.duckdb import DuckDBSnapshotStore
from ebbtide.sources.duckdb import DuckDBSource
from ebbtide.values import CursorSettings

ALL_OPS = frozenset(Operation)
QUERY = "SELECT * FROM people"
EVERY_ROW = CursorSettings(
    "updated_at", None, full_diff_every=1000, full_diff_interval=timedelta(days=1)
)


def mapping(detection: CursorSettings | None) -> CompiledMapping:
    return CompiledMapping(
        name="people_to_crm",
        model="people",
        destination="crm",
        action="upsert",
        mode=SyncMode.MIRROR,
        key_columns=("id",),
        fields=(column_field("name", "name"), column_field("plan", "plan")),
        cursor=detection,
    )


class Streamed:
    """The DuckDB file read as any source is: streamed, never hashed where it lies."""

    def __init__(self, file: Path) -> None:
        self.inner = DuckDBSource(file, "128MB")

    def read(self, query: str) -> pa.RecordBatchReader:
        return self.inner.read(query)

    def close(self) -> None:
        self.inner.close()


class Warehouse:
    """A `people` table whose `updated_at` moves on every write: a trustworthy cursor."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.minute = 0
        with duckdb.connect(str(file)) as con:
            con.execute(
                "CREATE TABLE people (id BIGINT, name VARCHAR, plan VARCHAR, updated_at TIMESTAMP)"
            )

    def write(self, sql: str, *, honest: bool = True) -> None:
        """Run `sql` (it may use `$now`); a dishonest write leaves the cursor where it was."""
        self.minute += 90  # more than the default lookback between syncs
        now = f"TIMESTAMP '2024-01-01' + INTERVAL ({self.minute}) MINUTE"
        with duckdb.connect(str(self.file)) as con:
            con.execute(sql.replace("$now", now if honest else "updated_at"))


def run(
    state: Path,
    compiled: CompiledMapping,
    file: Path,
    *,
    stream: bool,
    pending: list[str] | None = None,
) -> tuple[dict[Operation, set[Any]], str]:
    """One sync the destination accepts whole: the keys sent per operation, and how the
    changes were found."""
    store = DuckDBSnapshotStore(state, compiled)
    source: Any = Streamed(file) if stream else DuckDBSource(file, "128MB")
    try:
        store.merge_journals()
        store.extract(source, QUERY, pending=pending or [])
        source.close()
        store.check_keys()
        store.diff()
        journal = store.open_journal(run_id=1)
        sent: dict[Operation, set[Any]] = {op: set() for op in Operation}
        for batch in iter_batches(store.outbound(ALL_OPS, batch_size=7)):
            journal.append(batch)
            for row in batch.select([OP_COLUMN, f"{KEY_PART_PREFIX}0"]).to_pylist():
                sent[Operation(row[OP_COLUMN])].add(row[f"{KEY_PART_PREFIX}0"])
        journal.close()
        store.apply_accepted(store.collect_accepted(), complete=True)
        return sent, store.detection
    finally:
        source.close()
        store.close()


# One write to the model: insert new ids, update some, delete some.
WRITES = st.lists(
    st.tuples(
        st.sampled_from(["insert", "update", "delete", "nothing"]),
        st.integers(min_value=0, max_value=40),
        st.integers(min_value=1, max_value=5),
    ),
    min_size=1,
    max_size=6,
)


def write_sql(kind: str, start: int, count: int) -> str | None:
    ids = f"range({start}, {start + count})"
    if kind == "insert":
        return (
            f"INSERT INTO people SELECT i, 'n' || i, 'free', $now FROM {ids} t(i)"
            " WHERE i NOT IN (SELECT id FROM people)"
        )
    if kind == "update":
        return (
            f"UPDATE people SET plan = plan || '+', updated_at = $now"
            f" WHERE id IN (SELECT i FROM {ids} t(i))"
        )
    if kind == "delete":
        return f"DELETE FROM people WHERE id IN (SELECT i FROM {ids} t(i))"
    return None


@seed(20261203)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(syncs=st.lists(WRITES, min_size=2, max_size=4), stream=st.booleans())
def test_with_a_trustworthy_cursor_it_finds_what_the_full_diff_finds(
    tmp_path_factory: pytest.TempPathFactory, syncs: list[list[tuple[str, int, int]]], stream: bool
) -> None:
    folder = tmp_path_factory.mktemp("cursor")
    warehouse = Warehouse(folder / "warehouse.duckdb")
    warehouse.write("INSERT INTO people SELECT i, 'n' || i, 'free', $now FROM range(0, 30) t(i)")
    full, by_cursor = mapping(None), mapping(EVERY_ROW)
    detections = []
    for number, writes in enumerate([[("nothing", 0, 1)], *syncs]):
        for write in writes:
            statement = write_sql(*write)
            if statement:
                warehouse.write(statement)
        expected, _ = run(folder / "full", full, warehouse.file, stream=stream)
        found, detection = run(folder / "cursor", by_cursor, warehouse.file, stream=stream)
        assert found == expected, f"sync {number}"
        detections.append(detection)
    assert detections[0].startswith("full")  # nothing committed yet
    assert set(detections[1:]) == {cursor.CURSOR}


@pytest.mark.parametrize("stream", [False, True])
def test_the_periodic_full_diff_repairs_what_an_untrustworthy_cursor_missed(
    tmp_path: Path, stream: bool
) -> None:
    warehouse = Warehouse(tmp_path / "warehouse.duckdb")
    warehouse.write("INSERT INTO people SELECT i, 'n' || i, 'free', $now FROM range(0, 10) t(i)")
    every_third = mapping(replace(EVERY_ROW, full_diff_every=3))
    state = tmp_path / "state"
    sent, detection = run(state, every_third, warehouse.file, stream=stream)
    assert (len(sent[Operation.ADDED]), detection) == (10, "full: no snapshot yet")
    warehouse.write("UPDATE people SET plan = 'pro', updated_at = $now WHERE id = 1")
    warehouse.write("DELETE FROM people WHERE id = 3")
    sent, detection = run(state, every_third, warehouse.file, stream=stream)
    assert (sent[Operation.UPDATED], sent[Operation.DELETED], detection) == ({1}, {3}, "cursor")
    # An update that leaves the cursor behind (further back than the lookback) goes unseen…
    warehouse.write("UPDATE people SET plan = 'sneaky' WHERE id = 2", honest=False)
    sent, detection = run(state, every_third, warehouse.file, stream=stream)
    assert (sent[Operation.UPDATED], detection) == (set(), "cursor")
    # … until the full diff comes round.
    sent, detection = run(state, every_third, warehouse.file, stream=stream)
    assert (sent[Operation.UPDATED], detection) == ({2}, "full: every 3 syncs")


@pytest.mark.parametrize("stream", [False, True])
def test_a_new_key_or_a_retried_record_behind_the_cursor_makes_the_sync_read_everything(
    tmp_path: Path, stream: bool
) -> None:
    warehouse = Warehouse(tmp_path / "warehouse.duckdb")
    warehouse.write("INSERT INTO people SELECT i, 'n' || i, 'free', $now FROM range(0, 10) t(i)")
    compiled, state = mapping(EVERY_ROW), tmp_path / "state"
    run(state, compiled, warehouse.file, stream=stream)
    # A row inserted with an old cursor (a backfill) is still sent: new keys are always read.
    warehouse.write(
        "INSERT INTO people VALUES (50, 'late', 'free', TIMESTAMP '2000-01-01')", honest=False
    )
    sent, detection = run(state, compiled, warehouse.file, stream=stream)
    assert sent[Operation.ADDED] == {50}
    assert detection == "full: 1 record(s) to add or retry are older than the cursor"
    # A record that failed before is retried with its row, however old its cursor.
    warehouse.write("UPDATE people SET plan = 'pro', updated_at = $now WHERE id = 9")
    sent, detection = run(state, compiled, warehouse.file, stream=stream)
    assert (sent[Operation.UPDATED], detection) == ({9}, "cursor")
    sent, detection = run(state, compiled, warehouse.file, stream=stream, pending=["4"])
    assert detection == "full: 1 record(s) to add or retry are older than the cursor"
    sent, detection = run(state, compiled, warehouse.file, stream=stream)
    assert (sent, detection) == ({op: set() for op in Operation}, "cursor")


def test_the_cursor_does_not_advance_past_a_run_that_did_not_offer_every_change(
    tmp_path: Path,
) -> None:
    warehouse = Warehouse(tmp_path / "warehouse.duckdb")
    warehouse.write("INSERT INTO people SELECT i, 'n' || i, 'free', $now FROM range(0, 10) t(i)")
    compiled, state = mapping(EVERY_ROW), tmp_path / "state"
    run(state, compiled, warehouse.file, stream=False)
    warehouse.write("UPDATE people SET plan = 'pro', updated_at = $now WHERE id < 5")
    store = DuckDBSnapshotStore(state, compiled)
    try:
        before = store.meta()[cursor.META_KEY]
        store.extract(DuckDBSource(warehouse.file, "128MB"), QUERY)
        store.check_keys()
        assert store.diff().updated == 5
        store.apply_accepted(store.collect_accepted(), complete=False)  # stopped mid-load
        assert store.meta()[cursor.META_KEY] == before
    finally:
        store.close()
    sent, detection = run(state, compiled, warehouse.file, stream=False)
    assert (sent[Operation.UPDATED], detection) == (set(range(5)), "cursor")


@pytest.mark.parametrize("stream", [False, True])
def test_a_cursor_that_is_not_a_column_or_not_a_time_or_number_is_named(
    tmp_path: Path, stream: bool
) -> None:
    warehouse = Warehouse(tmp_path / "warehouse.duckdb")
    warehouse.write("INSERT INTO people SELECT i, 'n' || i, 'free', $now FROM range(0, 3) t(i)")
    for column, says in (("touched_at", "not a column"), ("name", "holds str values")):
        compiled = mapping(replace(EVERY_ROW, column=column))
        with pytest.raises(ModelError, match=says):
            run(tmp_path / column, compiled, warehouse.file, stream=stream)


def test_a_numeric_cursor_reads_back_by_its_lookback(tmp_path: Path) -> None:
    settings_ = CursorSettings("version", 10, 100, timedelta(days=1))
    state = cursor.CursorState("version", last="1000", kind="number")
    assert cursor.since_literal(settings_, state) == "990"
    with pytest.raises(ModelError, match="a duration"):
        cursor.since_literal(
            replace(settings_, lookback=2.5),
            replace(state, kind="timestamp", last="2024-01-01 00:00:00"),
        )
    timed = replace(settings_, column="updated_at", lookback=timedelta(minutes=30))
    assert (
        cursor.since_literal(
            timed, cursor.CursorState("updated_at", "2024-01-01 10:00:00+00:00", "timestamptz")
        )
        == "'2024-01-01 09:30:00+00:00'"
    )
