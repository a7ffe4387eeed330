"""A DuckDB model hashed where it lies gives the diff the streamed model gives, row for row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from ebbtide.config.models import SyncMode
from ebbtide.errors import ModelError, SourceError
from ebbtide.mapping.compiler import CompiledMapping, column_field
from ebbtide.ports import KEY_PART_PREFIX, OP_COLUMN, ChangeCounts, Operation, iter_batches
from ebbtide.snapshots.duckdb import DuckDBSnapshotStore
from ebbtide.sources.duckdb import DuckDBSource

ALL_OPS = frozenset(Operation)

# One column of each type a model may hold; `big` and `nested_id` change type on the Arrow
# trip (HUGEINT → DECIMAL(38,0), a UUID inside a STRUCT → VARCHAR).
TYPES_MODEL = """
CREATE TABLE things AS SELECT
    i::BIGINT AS id,
    'name ' || i AS name,
    (i * 1.25)::DECIMAL(12, 2) AS amount,
    i / 3.0 AS ratio,
    (i / 7)::FLOAT AS small_ratio,
    i % 2 = 0 AS even,
    DATE '2024-01-01' + i::INTEGER AS day,
    TIMESTAMP '2024-01-01 00:00:00' + INTERVAL (i) SECOND AS seen_at,
    TIMESTAMPTZ '2024-01-01 00:00:00+00' + INTERVAL (i) MINUTE AS seen_at_tz,
    TIME '12:00:00' AS noon,
    INTERVAL (i) DAY AS span,
    ('\\x00' || i::VARCHAR)::BLOB AS bytes,
    [i, i + 1] AS pair,
    {'plan': 'pro', 'seats': i} AS account,
    MAP {'a': i} AS tags,
    uuid() AS uid,
    ('{"n": ' || i || '}')::JSON AS doc,
    (i % 3)::UTINYINT AS tier,
    (i::HUGEINT * 1000000000000) AS big,
    {'id': uuid()} AS nested_id,
    CASE WHEN i % 5 = 0 THEN NULL ELSE 'x' END AS maybe
FROM range(1, 51) t(i)
"""
PORTABLE = (
    "name", "amount", "ratio", "small_ratio", "even", "day", "seen_at", "seen_at_tz", "noon",
    "span", "bytes", "pair", "account", "tags", "uid", "doc", "tier", "maybe",
)  # fmt: skip


def mapping(columns: tuple[str, ...], key: str = "id") -> CompiledMapping:
    return CompiledMapping(
        name="things_to_crm",
        model="things",
        destination="crm",
        action="upsert",
        mode=SyncMode.MIRROR,
        key_columns=(key,),
        fields=tuple(column_field(c, c) for c in columns),
    )


def warehouse(tmp_path: Path, *statements: str) -> Path:
    file = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(file)) as con:
        con.execute("SET TimeZone = 'UTC'")
        for statement in statements:
            con.execute(statement)
    return file


def sync(
    state: Path, compiled: CompiledMapping, file: Path, *, stream: bool = False
) -> tuple[ChangeCounts, bool]:
    """One run that the destination accepts whole; its changes, and whether it hashed in place."""
    store = DuckDBSnapshotStore(state, compiled)
    source = DuckDBSource(file, "256MB")
    try:
        store.merge_journals()
        if stream:
            store.stage(source.read("SELECT * FROM things"))
        else:
            store.extract(source, "SELECT * FROM things;")
        source.close()
        store.check_keys()
        counts = store.diff()
        journal = store.open_journal(run_id=1)
        for batch in iter_batches(store.outbound(ALL_OPS, batch_size=7)):
            journal.append(batch)
        journal.close()
        store.merge_journals()
        return counts, store.hashed_in_place
    finally:
        source.close()
        store.close()


@pytest.mark.parametrize("first_streamed", [True, False])
def test_hashes_in_place_equal_the_streamed_hashes_for_every_portable_type(
    tmp_path: Path, first_streamed: bool
) -> None:
    file = warehouse(tmp_path, TYPES_MODEL)
    compiled = mapping(PORTABLE)
    first, first_in_place = sync(tmp_path / "state", compiled, file, stream=first_streamed)
    assert first == ChangeCounts(added=50)
    assert first_in_place is not first_streamed
    second, second_in_place = sync(tmp_path / "state", compiled, file, stream=not first_streamed)
    assert second_in_place is first_streamed
    assert second == ChangeCounts()  # the other path's hashes matched, row for row


@pytest.mark.parametrize("column", ["big", "nested_id"])
def test_a_mapped_column_the_arrow_trip_retypes_is_streamed(tmp_path: Path, column: str) -> None:
    file = warehouse(tmp_path, TYPES_MODEL)
    compiled = mapping(("name", column))
    first, in_place = sync(tmp_path / "state", compiled, file)
    assert not in_place
    assert first == ChangeCounts(added=50)


def test_an_unmapped_column_the_trip_would_retype_does_not_stop_hashing_in_place(
    tmp_path: Path,
) -> None:
    file = warehouse(tmp_path, TYPES_MODEL)
    first, in_place = sync(tmp_path / "state", mapping(("name",)), file)
    assert in_place
    assert first == ChangeCounts(added=50)


def test_adds_updates_and_deletes_in_place_match_what_changed(tmp_path: Path) -> None:
    file = warehouse(tmp_path, TYPES_MODEL)
    compiled = mapping(PORTABLE)
    sync(tmp_path / "state", compiled, file)
    with duckdb.connect(str(file)) as con:
        con.execute("UPDATE things SET name = 'renamed' WHERE id IN (3, 4)")
        con.execute("UPDATE things SET maybe = NULL WHERE id = 6")  # 'x' → NULL
        con.execute("DELETE FROM things WHERE id IN (7, 8, 9)")
        con.execute("INSERT INTO things SELECT * REPLACE (id + 100 AS id) FROM things LIMIT 1")
    store = DuckDBSnapshotStore(tmp_path / "state", compiled)
    source = DuckDBSource(file, "256MB")
    try:
        store.merge_journals()
        assert store.extract(source, "SELECT * FROM things") == 48
        store.check_keys()
        assert store.diff() == ChangeCounts(added=1, updated=3, deleted=3)
        sent = store.outbound(ALL_OPS, batch_size=100).read_all().to_pylist()
    finally:
        source.close()
        store.close()
    by_op = {
        op: sorted(r[f"{KEY_PART_PREFIX}0"] for r in sent if r[OP_COLUMN] == op) for op in Operation
    }
    assert by_op == {"added": [101], "updated": [3, 4, 6], "deleted": [7, 8, 9]}
    renamed = [r for r in sent if r[f"{KEY_PART_PREFIX}0"] == 3][0]
    assert '"name":"renamed"' in str(renamed["__record"])


def test_the_warehouse_file_is_let_go_of_once_the_changed_rows_are_copied(
    tmp_path: Path,
) -> None:
    file = warehouse(
        tmp_path, "CREATE TABLE things AS SELECT range AS id, 'a' AS name FROM range(5)"
    )
    writer = [
        sys.executable,
        "-c",
        f"import duckdb; duckdb.connect({str(file)!r}).execute('UPDATE things SET name = name')",
    ]
    store = DuckDBSnapshotStore(tmp_path / "state", mapping(("name",)))
    source = DuckDBSource(file, "256MB")
    try:
        store.extract(source, "SELECT * FROM things")
        source.close()
        store.check_keys()
        held = subprocess.run(writer, capture_output=True, text=True)
        assert held.returncode != 0 and "lock" in held.stderr.lower()  # attached, guarded
        store.diff()
        assert subprocess.run(writer, capture_output=True).returncode == 0  # during the load
        assert store.outbound(ALL_OPS, batch_size=10).read_all().num_rows == 5
    finally:
        source.close()
        store.close()


def test_null_keys_in_place_are_sampled_with_their_columns(tmp_path: Path) -> None:
    file = warehouse(
        tmp_path,
        "CREATE TABLE things AS SELECT CASE WHEN range < 2 THEN NULL ELSE range END AS id,"
        " 'who' || range AS name FROM range(5)",
    )
    store = DuckDBSnapshotStore(tmp_path / "state", mapping(("name",)))
    source = DuckDBSource(file, "256MB")
    try:
        store.extract(source, "SELECT * FROM things")
        with pytest.raises(ModelError, match="2 row") as raised:
            store.check_keys()
    finally:
        source.close()
        store.close()
    assert store.hashed_in_place
    assert sorted(raised.value.samples) == [
        '{"id":null,"name":"who0"}',
        '{"id":null,"name":"who1"}',
    ]


def test_duplicate_keys_in_place_fail_before_anything_is_sent(tmp_path: Path) -> None:
    file = warehouse(
        tmp_path, "CREATE TABLE things AS SELECT range % 3 AS id, 'n' AS name FROM range(7)"
    )
    store = DuckDBSnapshotStore(tmp_path / "state", mapping(("name",)))
    source = DuckDBSource(file, "256MB")
    try:
        store.extract(source, "SELECT * FROM things")
        with pytest.raises(ModelError, match="3 primary key value"):
            store.check_keys()
    finally:
        source.close()
        store.close()


def test_a_failing_model_query_in_place_says_it_is_the_models_sql(tmp_path: Path) -> None:
    file = warehouse(tmp_path, "CREATE TABLE things AS SELECT range AS id FROM range(3)")
    store = DuckDBSnapshotStore(tmp_path / "state", mapping(("name",)))
    source = DuckDBSource(file, "256MB")
    try:
        with pytest.raises(SourceError, match="model.s SQL failed on DuckDB.*nope"):
            store.extract(source, "SELECT id, nope AS name FROM things")
    finally:
        source.close()
        store.close()
