"""Property tests: the snapshot store's diff agrees with plain SQL `EXCEPT` on any two tables.

"Previous" is synced first through a destination that accepts everything (stage, diff,
outbound, journal, merge_journals); then "current" is staged and diffed. The keys reported
added / updated / deleted must equal a reference computed by DuckDB's `EXCEPT`, which
compares values exactly (NULL equal to NULL), with no hashing involved.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ebbtide.config.models import SyncMode
from ebbtide.mapping.compiler import CompiledMapping, column_field
from ebbtide.ports import HASH_COLUMN, KEY_PART_PREFIX, OP_COLUMN, Operation, iter_batches
from ebbtide.snapshots.duckdb import DuckDBSnapshotStore
from ebbtide.sources.duckdb import DuckDBSource

ALL_OPS = frozenset(Operation)
Key = tuple[int, str]
Row = dict[str, Any]

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("region", pa.string()),
        pa.field("amount", pa.decimal128(38, 10)),
        pa.field("name", pa.string()),
        pa.field("score", pa.float64()),
        pa.field("active", pa.bool_()),
        pa.field("visits", pa.int64()),
        pa.field("note", pa.string()),  # in the model, not mapped: never part of the hash
    ]
)
KEY = ("id", "region")
MAPPED = ("amount", "name", "score", "active", "visits")
VALUE_COLUMNS = (*MAPPED, "note")

MAPPING = CompiledMapping(
    name="accounts_to_crm",
    model="accounts",
    destination="crm",
    action="upsert",
    mode=SyncMode.MIRROR,
    key_columns=KEY,
    fields=(
        column_field("amount", "amount"),
        column_field("full_name", "name"),
        column_field("score", "score"),
        column_field("is_active", "active"),
        column_field("visits", "visits"),
    ),
)

# Each example opens the store twice (about 0.15 s); the main property gets the most examples.
PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SECONDARY_SETTINGS = settings(PROPERTY_SETTINGS, max_examples=30)

# -- strategies ----------------------------------------------------------------------------

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EDGE_INTS = [
    INT64_MIN,
    INT64_MIN + 1,
    -(2**53) - 1,
    -(2**53),
    -1,
    0,
    1,
    2**53 - 1,
    2**53,
    2**53 + 1,
    2**53 + 2,
    INT64_MAX - 1,
    INT64_MAX,
]
ints = st.sampled_from(EDGE_INTS) | st.integers(INT64_MIN, INT64_MAX)
unicode_text = st.text(
    alphabet=st.sampled_from(["a", "b", "é", "ß", "日", "本", "🌊", "\u200b", " ", "'", '"', "\\"]),
    max_size=4,
) | st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6)

# 38 digits, scale 10: values that differ only in the last (tenth) decimal place.
BIG_DECIMAL = "9999999999999999999999999999.999999999"
decimals = st.builds(
    lambda base, last: Decimal(f"{base}{last}"),
    st.sampled_from(
        [BIG_DECIMAL, "-" + BIG_DECIMAL, "0.000000000", "1234567890123456789.123456789"]
    ),
    st.integers(0, 9),
)
doubles = st.sampled_from([0.0, -0.0, 1.0, 0.1, 0.30000000000000004, 2.0**53, 2.0**53 + 2]) | (
    st.floats(allow_nan=True, allow_infinity=True)
)


def nullable(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


VALUE_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "amount": nullable(decimals),
    "name": nullable(unicode_text),
    "score": nullable(doubles),
    "active": nullable(st.booleans()),
    "visits": nullable(ints),
    "note": nullable(unicode_text),
}
keys = st.tuples(ints, st.sampled_from(["eu", "us", "ünï", "🌊", ""]) | unicode_text)


def values() -> st.SearchStrategy[Row]:
    return st.fixed_dictionaries(VALUE_STRATEGIES)


@st.composite
def table_pairs(draw: st.DrawFn) -> tuple[dict[Key, Row], dict[Key, Row]]:
    """Two versions of one model: rows kept, changed (in any column, or not at all), gone, new."""
    previous = draw(st.dictionaries(keys, values(), max_size=25))
    current: dict[Key, Row] = {}
    for key, row in previous.items():
        fate = draw(st.sampled_from(["same", "same", "changed", "one column", "gone"]))
        if fate == "same":
            current[key] = dict(row)
        elif fate == "changed":
            current[key] = draw(values())
        elif fate == "one column":
            column = draw(st.sampled_from(VALUE_COLUMNS))
            current[key] = {**row, column: draw(VALUE_STRATEGIES[column])}
    current.update(draw(st.dictionaries(keys, values(), max_size=10)))
    return previous, current


# -- helpers --------------------------------------------------------------------------------


def to_table(rows: dict[Key, Row]) -> pa.Table:
    records = [{"id": k[0], "region": k[1], **row} for k, row in rows.items()]
    return pa.Table.from_pylist(records, schema=SCHEMA)


def reader(table: pa.Table) -> pa.RecordBatchReader:
    # Small batches, so staging sees more than one.
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=7))


@contextmanager
def state_dir() -> Iterator[Path]:
    # One directory per Hypothesis example: pytest's tmp_path is shared by all of them.
    with tempfile.TemporaryDirectory(prefix="ebbtide-diff-") as folder:
        yield Path(folder)


def sync_everything(folder: Path, mapping: CompiledMapping, table: pa.Table) -> None:
    """One run against a destination that accepts every record."""
    store = DuckDBSnapshotStore(folder, mapping)
    try:
        store.merge_journals()
        store.stage(reader(table))
        store.check_keys()
        store.diff()
        journal = store.open_journal(run_id=1)
        for batch in iter_batches(store.outbound(ALL_OPS, batch_size=5)):
            journal.append(batch)
        journal.close()
        store.merge_journals()
    finally:
        store.close()


def changed_keys(
    folder: Path, mapping: CompiledMapping, table: pa.Table, *, in_place: bool = False
) -> dict[Operation, set[tuple[Any, ...]]]:
    """Stage and diff `table`; the keys of each operation, read from the outbound batches.

    `in_place`: `table` is written to a DuckDB file, which the store hashes where it lies."""
    store = DuckDBSnapshotStore(folder, mapping)
    try:
        store.merge_journals()
        if in_place:
            file = folder / "warehouse.duckdb"
            with duckdb.connect(str(file)) as con:
                con.register("rows", table)
                con.execute("CREATE OR REPLACE TABLE accounts AS SELECT * FROM rows")
            source = DuckDBSource(file, "64MB")
            store.extract(source, "SELECT * FROM accounts")
            source.close()
            assert store.hashed_in_place
        else:
            store.stage(reader(table))
        store.check_keys()
        counts = store.diff()
        out = store.outbound(ALL_OPS, batch_size=4).read_all()
    finally:
        store.close()
    parts = [f"{KEY_PART_PREFIX}{i}" for i in range(len(mapping.key_columns))]
    found: dict[Operation, set[tuple[Any, ...]]] = {op: set() for op in Operation}
    for record in out.select([OP_COLUMN, HASH_COLUMN, *parts]).to_pylist():
        op = Operation(record[OP_COLUMN])
        key = tuple(record[p] for p in parts)
        assert key not in found[op], f"{key} sent twice as {op}"
        found[op].add(key)
        assert (record[HASH_COLUMN] is None) == (op is Operation.DELETED)
    assert (counts.added, counts.updated, counts.deleted) == tuple(
        len(found[op]) for op in (Operation.ADDED, Operation.UPDATED, Operation.DELETED)
    )
    return found


def reference_changes(
    previous: pa.Table, current: pa.Table, mapped: tuple[str, ...] = MAPPED
) -> dict[Operation, set[tuple[Any, ...]]]:
    """The changes by plain SQL: set differences of keys, and of key + mapped columns."""
    con = duckdb.connect()
    con.register("previous", previous)
    con.register("current", current)
    key = ", ".join(KEY)
    both = f"{key}, {', '.join(mapped)}"
    queries = {
        Operation.ADDED: f"SELECT {key} FROM current EXCEPT SELECT {key} FROM previous",
        Operation.DELETED: f"SELECT {key} FROM previous EXCEPT SELECT {key} FROM current",
        Operation.UPDATED: f"""
            SELECT {key} FROM (SELECT {both} FROM current EXCEPT SELECT {both} FROM previous)
            WHERE ({key}) IN (SELECT ({key}) FROM previous)""",
    }
    result = {op: set(con.execute(q).fetchall()) for op, q in queries.items()}
    con.close()
    return result


# -- properties -----------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(table_pairs())
def test_diff_matches_sql_except_after_a_full_sync(
    pair: tuple[dict[Key, Row], dict[Key, Row]],
) -> None:
    previous, current = map(to_table, pair)
    with state_dir() as folder:
        sync_everything(folder, MAPPING, previous)
        found = changed_keys(folder, MAPPING, current)
    expected = reference_changes(previous, current)
    for op, found_keys in expected.items():
        event(f"{op} keys: {'some' if found_keys else 'none'}")
    assert found == expected


@SECONDARY_SETTINGS
@given(table_pairs())
def test_a_diff_in_place_after_a_streamed_sync_matches_sql_except(
    pair: tuple[dict[Key, Row], dict[Key, Row]],
) -> None:
    previous, current = map(to_table, pair)
    with state_dir() as folder:
        sync_everything(folder, MAPPING, previous)
        found = changed_keys(folder, MAPPING, current, in_place=True)
    assert found == reference_changes(previous, current)


@SECONDARY_SETTINGS
@given(table_pairs())
def test_a_second_diff_after_accepting_everything_is_empty(
    pair: tuple[dict[Key, Row], dict[Key, Row]],
) -> None:
    previous, current = map(to_table, pair)
    with state_dir() as folder:
        sync_everything(folder, MAPPING, previous)
        sync_everything(folder, MAPPING, current)
        found = changed_keys(folder, MAPPING, current)
    assert found == {op: set() for op in Operation}


@SECONDARY_SETTINGS
@given(st.dictionaries(keys, values(), min_size=1, max_size=20), st.data())
def test_changing_only_an_unmapped_column_is_not_an_update(
    rows: dict[Key, Row], data: st.DataObject
) -> None:
    notes = data.draw(st.lists(VALUE_STRATEGIES["note"], min_size=len(rows), max_size=len(rows)))
    changed = {
        key: {**row, "note": note} for (key, row), note in zip(rows.items(), notes, strict=True)
    }
    with state_dir() as folder:
        sync_everything(folder, MAPPING, to_table(rows))
        found = changed_keys(folder, MAPPING, to_table(changed))
    assert found == {op: set() for op in Operation}


@SECONDARY_SETTINGS
@given(st.dictionaries(keys, values(), min_size=1, max_size=20))
def test_renaming_a_destination_field_makes_every_row_an_update(rows: dict[Key, Row]) -> None:
    table = to_table(rows)
    renamed_fields = tuple(
        column_field("name", str(f.source.column)) if f.name == "full_name" else f
        for f in MAPPING.fields
    )
    renamed = replace(MAPPING, fields=renamed_fields)
    assert renamed.signature != MAPPING.signature
    with state_dir() as folder:
        sync_everything(folder, MAPPING, table)
        found = changed_keys(folder, renamed, table)
    assert found == {
        Operation.ADDED: set(),
        Operation.UPDATED: set(rows),
        Operation.DELETED: set(),
    }


@SECONDARY_SETTINGS
@given(table_pairs())
def test_diff_with_a_single_integer_key_matches_sql_except(
    pair: tuple[dict[Key, Row], dict[Key, Row]],
) -> None:
    # Collapse the composite key to its integer part (first row of each id wins).
    previous, current = ({k[0]: (k, r) for k, r in rows.items()} for rows in pair)
    single = replace(MAPPING, key_columns=("id",))
    before = to_table({(i, "-"): r for i, (_, r) in previous.items()})
    after = to_table({(i, "-"): r for i, (_, r) in current.items()})
    with state_dir() as folder:
        sync_everything(folder, single, before)
        found = changed_keys(folder, single, after)
    expected = reference_changes(before, after)
    assert found == {op: {(k[0],) for k in ks} for op, ks in expected.items()}
