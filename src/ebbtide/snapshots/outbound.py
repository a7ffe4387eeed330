"""Outbound records kept to sizes that DuckDB, the destination and the run can handle.

A single 50 MB value once crashed the run: DuckDB's JSON rendering asked for half a gigabyte
for it, past the scratch database's memory limit, and with it went every other record. So a
row whose values add up to more than the record limit is found before any record is built, by
measuring its values where they lie (lengths, not rendered text); it is never rendered, and
fails alone as `payload_too_large`, naming the column that makes it large. Batches are then
cut to a bounded number of bytes as well as of rows, and when large rows add up to more than
DuckDB could render at once (it renders 2,048 rows at a time, whatever their size), the
changes are rendered in slices of a bounded size, one query after the other.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from ebbtide.mapping.binding import BoundMapping
from ebbtide.ports import (
    KEY_COLUMN,
    KEY_PART_PREFIX,
    OP_COLUMN,
    RECORD_COLUMN,
    TOO_LARGE_COLUMN,
    Operation,
    iter_batches,
)
from ebbtide.snapshots import duckdb_sql as sql
from ebbtide.snapshots.payload_sql import as_json_columns
from ebbtide.snapshots.sql_text import literal, quote

# A record larger than this fails unless the destination sets `max_record_bytes`, up to
# RENDER_CEILING_BYTES: rendering a larger one would not fit DuckDB's memory limit.
DEFAULT_MAX_RECORD_BYTES = 8 * 2**20
RENDER_CEILING_BYTES = 32 * 2**20
# An outbound batch holds at most this many bytes of records (at least one record).
MAX_BATCH_BYTES = 16 * 2**20
OVERSIZED_TABLE = "work.oversized"
# Rows over LARGE_ROW_BYTES adding up to more than SLICE_BYTES are rendered in slices of about
# SLICE_BYTES: smaller rows never fill DuckDB's memory, however many it renders at once.
LARGE_ROW_BYTES = 8 * 2**10
SLICE_BYTES = 32 * 2**20
SLICES_TABLE = "work.slices"
STREAM_BUFFER = "64MB"


def record_limit(max_record_bytes: int | None) -> int:
    """The largest record a run builds for a destination that accepts `max_record_bytes`."""
    return min(max_record_bytes or DEFAULT_MAX_RECORD_BYTES, RENDER_CEILING_BYTES)


def value_bytes(ref: str, duck_type: str) -> str | None:
    """SQL for about how many bytes a value takes in a record; None when it is always small."""
    if duck_type in ("VARCHAR", "JSON"):
        return f"strlen({ref})"
    if duck_type == "BLOB":
        return f"(octet_length({ref}) * 4 // 3)"  # sent as base64
    if duck_type.endswith("]") or duck_type.startswith(("STRUCT", "MAP", "UNION")):
        return f"strlen(CAST({ref} AS VARCHAR))"
    return None  # numbers, dates, times, booleans: a few bytes each


def oversized_sql(bound: BoundMapping, types: dict[str, str], limit: int) -> str | None:
    """A statement filling OVERSIZED_TABLE with the changed rows over `limit` bytes (their key
    parts and why), or None when no column read by the mapping can grow large."""
    keys = bound.mapping.key_columns
    sizes = [(c, e) for c in bound.columns if (e := value_bytes(f"s.{quote(c)}", types[c]))]
    if not sizes:
        return None
    measured = [f"coalesce({e}, 0)" for _, e in sizes]
    named = " ".join(
        f"WHEN __n{i} = largest THEN {literal(repr(c))}" for i, (c, _) in enumerate(sizes)
    )
    part_names = [quote(f"{KEY_PART_PREFIX}{i}") for i in range(len(keys))]
    parts = ", ".join(f"s.{quote(k)} AS {p}" for k, p in zip(keys, part_names, strict=True))
    on = " AND ".join(f"c.{quote(k)} = big.{p}" for k, p in zip(keys, part_names, strict=True))
    reason = (
        f"'the record is too large to send: column ' || (CASE {named} END) || ' holds '"
        f" || format_bytes(largest) || '; records of at most {limit:,} bytes are built (raise"
        f" the destination''s max_record_bytes, up to {RENDER_CEILING_BYTES:,}, or leave the"
        " column out of the mapping)'"
    )
    # Measured on the staged rows alone (lengths are stored, so this is a cheap scan); only
    # the few rows found are matched with the changes.
    return f"""CREATE OR REPLACE TABLE {OVERSIZED_TABLE} AS
        WITH big AS (
            SELECT {parts}, {", ".join(f"{m} AS __n{i}" for i, m in enumerate(measured))},
                greatest({", ".join(measured)}) AS largest
            FROM work.stage s WHERE {" + ".join(measured)} > {limit}
        )
        SELECT {", ".join(f"big.{p}" for p in part_names)}, {reason} AS {TOO_LARGE_COLUMN}
        FROM big JOIN work.changes c ON {on}
        WHERE c.{OP_COLUMN} <> {literal(Operation.DELETED)}"""


def row_bytes(bound: BoundMapping, types: dict[str, str]) -> str | None:
    """SQL for about how many bytes a row of `s` (the stage) takes as a record."""
    measured = [value_bytes(f"s.{quote(c)}", types[c]) for c in bound.columns]
    found = [f"coalesce({m}, 0)" for m in measured if m]
    return " + ".join(found) if found else None


def measure_sql(size: str, limit: int) -> str:
    """A query over the stage: how many rows are over `limit` bytes, and how many bytes the
    large rows under it add up to (changed or not: a scan of the stage alone is cheap)."""
    return f"""SELECT count(*) FILTER ({size} > {limit}),
            coalesce(sum({size}) FILTER ({size} > {LARGE_ROW_BYTES} AND {size} <= {limit}), 0)
        FROM work.stage s"""


def slices_sql(size: str, keys: tuple[str, ...]) -> str:
    """A statement numbering the changes in slices of about SLICE_BYTES (in key order)."""
    names = [quote(f"{KEY_PART_PREFIX}{i}") for i in range(len(keys))]
    parts = ", ".join(f"c.{quote(k)} AS {n}" for k, n in zip(keys, names, strict=True))
    # Sizes are taken first, so that the window sorts keys and numbers, not the values. 64
    # bytes a row stand for what every record carries besides its values.
    running = f"sum(__bytes + 64) OVER (ORDER BY {', '.join(names)} ROWS UNBOUNDED PRECEDING)"
    return f"""CREATE OR REPLACE TABLE {SLICES_TABLE} AS
        SELECT {", ".join(names)}, ({running}) // {SLICE_BYTES} AS __slice FROM (
            SELECT {parts}, coalesce({size}, 0) AS __bytes
            FROM work.changes c LEFT JOIN work.stage s ON {_key_join(keys)}
        )"""


def in_slice(number: int, keys: tuple[str, ...]) -> tuple[str, str]:
    """The changes (alias `c`) of slice `number`, and the staged rows it reads."""
    parts = [quote(f"{KEY_PART_PREFIX}{i}") for i in range(len(keys))]
    changes = " AND ".join(f"sl.{p} = c.{quote(k)}" for p, k in zip(parts, keys, strict=True))
    staged = " AND ".join(f"sl.{p} = s.{quote(k)}" for p, k in zip(parts, keys, strict=True))
    one = f"{SLICES_TABLE} sl WHERE sl.__slice = {number}"
    # The staged rows are narrowed too: a join would otherwise hold every staged value.
    return (
        f"EXISTS (SELECT 1 FROM {one} AND {changes})",
        f"(SELECT * FROM work.stage s WHERE EXISTS (SELECT 1 FROM {one} AND {staged}))",
    )


def _key_join(keys: tuple[str, ...]) -> str:
    return " AND ".join(f"c.{quote(k)} = s.{quote(k)}" for k in keys)


def clear_oversized_sql(bound: BoundMapping) -> str:
    """Empties the large values of the rows in OVERSIZED_TABLE, so nothing renders them.

    Their row hashes were taken when they were staged: the diff and the commit are unchanged.
    """
    keys = bound.mapping.key_columns
    cleared = [c for c in bound.columns if c not in keys]
    sets = ", ".join(f"{quote(c)} = NULL" for c in cleared)
    match = " AND ".join(
        f"work.stage.{quote(k)} = o.{quote(f'{KEY_PART_PREFIX}{i}')}" for i, k in enumerate(keys)
    )
    return f"UPDATE work.stage SET {sets} FROM {OVERSIZED_TABLE} o WHERE {match}"


def marking_too_large(query: str, key_count: int) -> str:
    """`query`'s records, each with TOO_LARGE_COLUMN (null when it may be sent); the record of
    one too large holds no data, so no payload of it is ever built or stored."""
    on = " AND ".join(
        f"q.{quote(f'{KEY_PART_PREFIX}{i}')} = o.{quote(f'{KEY_PART_PREFIX}{i}')}"
        for i in range(key_count)
    )
    placeholder = (
        f"""concat('{{"op":"', q.{OP_COLUMN}, '","key":', q.{KEY_COLUMN}, ',"data":null}}')"""
    )
    return f"""SELECT q.* REPLACE (
            CASE WHEN o.{TOO_LARGE_COLUMN} IS NULL THEN q.{RECORD_COLUMN} ELSE {placeholder} END
            AS {RECORD_COLUMN}),
        o.{TOO_LARGE_COLUMN}
        FROM ({query}) q LEFT JOIN {OVERSIZED_TABLE} o ON {on}"""


def chained(readers: Iterator[pa.RecordBatchReader]) -> pa.RecordBatchReader:
    """One reader over several readers of one schema, each opened when the last is read."""
    first = next(readers)

    def batches() -> Iterator[pa.RecordBatch]:
        yield from iter_batches(first)
        for reader in readers:
            yield from iter_batches(reader)

    return pa.RecordBatchReader.from_batches(first.schema, batches())


def bounded_batches(reader: pa.RecordBatchReader, max_bytes: int) -> pa.RecordBatchReader:
    """`reader`'s batches, cut where their records would pass `max_bytes` (one record at least)."""
    import pyarrow.compute as pc

    def cut() -> Iterator[pa.RecordBatch]:
        for batch in iter_batches(reader):
            records: Any = batch.column(RECORD_COLUMN)
            lengths = pc.binary_length(records).fill_null(0)
            if batch.num_rows <= 1 or pc.sum(lengths).as_py() <= max_bytes:
                yield batch
                continue
            yield from _pieces(batch, lengths.to_pylist(), max_bytes)

    return pa.RecordBatchReader.from_batches(reader.schema, cut())


def _pieces(batch: pa.RecordBatch, lengths: list[int], max_bytes: int) -> Iterator[pa.RecordBatch]:
    start, size = 0, 0
    for i, length in enumerate(lengths):
        if i > start and size + length > max_bytes:
            yield batch.slice(start, i - start)
            start, size = i, 0
        size += length
    yield batch.slice(start)


class OutboundQueries:
    """The records of one run's changes, read from its scratch database, in sizes that fit."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        bound: BoundMapping,
        key_types: Sequence[pa.DataType],
        limit: int,
    ) -> None:
        self.con, self.bound, self.key_types, self.limit = con, bound, key_types, limit
        self._oversized: bool | None = None  # rows set aside as too large: not looked for yet
        self._measured: tuple[int, int] | None = None

    def reader(self, operations: frozenset[Operation], batch_size: int) -> pa.RecordBatchReader:
        """The changed rows of `operations`, in batches of `batch_size` and of bounded bytes."""
        marked = self._set_aside_oversized()
        queries = (self._query(operations, part, marked) for part in self._slices())
        reader = chained(self._stream(query, batch_size) for query in queries)
        mapping = self.bound.mapping
        nested = [f.name for f in self.bound.fields if f.nested and mapping.field_columns]
        reader = as_json_columns(reader, nested) if nested else reader
        return bounded_batches(reader, MAX_BATCH_BYTES)

    def _query(self, operations: frozenset[Operation], part: tuple[str, str], marked: bool) -> str:
        where, stage = part
        query = sql.outbound_query(self.bound, operations, self.key_types, where, stage)
        return marking_too_large(query, len(self.bound.mapping.key_columns)) if marked else query

    def _stream(self, query: str, batch_size: int) -> pa.RecordBatchReader:
        cursor = self.con.cursor()
        if any(f.nested for f in self.bound.fields):
            # DuckDB renders a streamed result with all its threads only while its buffer of
            # rendered rows has room; the default (about 1 MB) holds a few batches, too few
            # when objects and arrays are built. Flat records render fast enough without.
            cursor.execute(f"SET streaming_buffer_size = '{STREAM_BUFFER}'")
        return cursor.execute(query).to_arrow_reader(batch_size)

    def _slices(self) -> list[tuple[str, str]]:
        """The changes in slices DuckDB can render at once (a condition on them, and the
        staged rows to read): one slice of everything unless large rows add up to more than
        SLICE_BYTES."""
        size = row_bytes(self.bound, self._stage_types())
        keys = self.bound.mapping.key_columns
        if size is None or self._measure()[1] <= SLICE_BYTES:
            return [("", "work.stage")]
        self.con.execute(slices_sql(size, keys))
        count = self.con.execute(f"SELECT max(__slice) + 1 FROM {SLICES_TABLE}").fetchone()
        return [in_slice(number, keys) for number in range(int(count[0]) if count else 1)]

    def has_large_rows(self) -> bool:
        """Whether any staged row is large (LARGE_ROW_BYTES or more): rendering such rows
        needs more of DuckDB's memory than keys and hashes do."""
        over, large_bytes = self._measure()
        return over > 0 or large_bytes > 0

    def _measure(self) -> tuple[int, int]:
        """One scan of the stage: rows over the record limit, and how many bytes the large rows
        under it add up to (taken before any row is set aside)."""
        if self._measured is None:
            size = row_bytes(self.bound, self._stage_types())
            query = measure_sql(size, self.limit) if size else None
            found = self.con.execute(query).fetchone() if query else None
            self._measured = (int(found[0]), int(found[1])) if found else (0, 0)
        return self._measured

    def _stage_types(self) -> dict[str, str]:
        query = "SELECT column_name, column_type FROM (DESCRIBE work.stage)"
        return {str(name): str(kind) for name, kind in self.con.execute(query).fetchall()}

    def _set_aside_oversized(self) -> bool:
        """Find the changed rows too large to become records, and empty their values so that
        no query renders them; True when there are any.

        Done once per run: the values it empties could not be measured a second time.
        """
        if self._oversized is None:
            over = self._measure()[0] > 0
            find = oversized_sql(self.bound, self._stage_types(), self.limit)
            self._oversized = over and find is not None and self._found(find)
            if self._oversized:
                self.con.execute(clear_oversized_sql(self.bound))
        return self._oversized

    def _found(self, statement: str) -> bool:
        self.con.execute(statement)
        found = self.con.execute(f"SELECT count(*) FROM {OVERSIZED_TABLE}").fetchone()
        return bool(found and found[0])
