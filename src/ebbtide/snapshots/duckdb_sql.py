"""DuckDB SQL for hashing rows and assembling outbound records, built once per run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from ebbtide.config.models import DecimalsAs
from ebbtide.mapping.binding import BoundMapping, Kind, kind_of
from ebbtide.mapping.compiler import CompiledMapping
from ebbtide.ports import (
    HASH_COLUMN,
    KEY_COLUMN,
    KEY_PART_PREFIX,
    OP_COLUMN,
    PROBLEM_COLUMN,
    RECORD_COLUMN,
    Operation,
)
from ebbtide.snapshots.payload_sql import data_object, payload_sql
from ebbtide.snapshots.sql_text import literal as literal
from ebbtide.snapshots.sql_text import quote as quote
from ebbtide.snapshots.value_sql import ValueSQL, object_sql

# Bump when the row hash changes meaning; a snapshot made with another version is re-hashed
# by resending, never silently compared.
HASH_VERSION = "duckdb-hash-1"
_ISO_NANOSECONDS = "%Y-%m-%dT%H:%M:%S.%n"


def key_join(left: str, right: str, key_columns: tuple[str, ...]) -> str:
    return " AND ".join(f"{left}.{quote(c)} = {right}.{quote(c)}" for c in key_columns)


def hash_expression(bound: BoundMapping) -> str:
    """One 64-bit hash of the columns the fields read, seeded with the mapping's signature."""
    columns = "".join(f", {quote(c)}" for c in bound.hashed)
    return f"hash({literal(bound.mapping.signature)}{columns})"


def key_json(mapping: CompiledMapping, table: str, key_types: Sequence[pa.DataType]) -> str:
    """The key as canonical JSON: the value for a one-column key, an object for a composite key.

    Rendered as values are (ISO 8601 dates and times, every digit of a decimal, base64 bytes),
    so a key reads the same in `key` as in `data`; a composite key's members come in the
    declared order of the primary key. Floats that JSON cannot carry are refused before (see
    `non_finite_keys`).
    """
    texts = [
        _key_part(f"{table}.{quote(c)}", t)
        for c, t in zip(mapping.key_columns, key_types, strict=True)
    ]
    if len(texts) == 1:
        return texts[0]
    return object_sql([(c, t, False) for c, t in zip(mapping.key_columns, texts, strict=True)])


def _key_part(ref: str, arrow_type: pa.DataType) -> str:
    timestamp: Any = arrow_type
    if kind_of(arrow_type) is Kind.TIMESTAMP and timestamp.unit == "ns" and not timestamp.tz:
        # Values are sent to the microsecond; keys keep every digit, or two rows would collide.
        # The quotes go around the text: DuckDB 1.5 garbles a format with text after %n.
        return f"""'"' || strftime({ref}, {literal(_ISO_NANOSECONDS)}) || '"'"""
    return ValueSQL().json_text(ref, arrow_type, DecimalsAs.NUMBER)


def non_finite_keys(mapping: CompiledMapping, table: str, key_types: Sequence[pa.DataType]) -> str:
    """A condition on rows of `table`: a key column holds NaN or an infinity."""
    renderer = ValueSQL()
    tests = [
        renderer.non_finite(f"{table}.{quote(c)}", t, c)
        for c, t in zip(mapping.key_columns, key_types, strict=True)
    ]
    found = [f"({test}) IS NOT NULL" for test in tests if test is not None]
    return " OR ".join(found) if found else "false"


def outbound_query(
    bound: BoundMapping,
    operations: frozenset[Operation],
    key_types: Sequence[pa.DataType],
    where: str = "",
    stage: str = "work.stage",
) -> str:
    """Changed rows of the given operations, with everything a destination needs.

    The inner query renders each field once; the outer one assembles the record from those
    texts, so an object or array is not rendered twice for its typed column. `where` narrows
    the changes (alias `c`) before anything is rendered, and `stage` the staged rows read.
    """
    mapping = bound.mapping
    payload = payload_sql(bound, "s")
    key_parts = [
        f"c.{quote(col)} AS {quote(f'{KEY_PART_PREFIX}{i}')}"
        for i, col in enumerate(mapping.key_columns)
    ]
    inner = [
        f"c.{OP_COLUMN}",
        f"{key_json(mapping, 'c', key_types)} AS {KEY_COLUMN}",
        f"c.{HASH_COLUMN}",
        *key_parts,
        f"CASE WHEN c.{OP_COLUMN} = 'deleted' THEN NULL ELSE {payload.problem} END"
        f" AS {PROBLEM_COLUMN}",
    ]
    outer = [
        OP_COLUMN,
        KEY_COLUMN,
        HASH_COLUMN,
        *(quote(f"{KEY_PART_PREFIX}{i}") for i in range(len(mapping.key_columns))),
        PROBLEM_COLUMN,
    ]
    texts = []
    for i, field in enumerate(payload.fields):
        inner.append(f"{field.json} AS __j{i}")
        texts.append((field.name, f"__j{i}", field.skip_nulls))
        if not mapping.field_columns:
            continue
        if field.nested:
            outer.append(f"__j{i} AS {quote(field.name)}")
        else:
            inner.append(f"{field.value} AS __v{i}")
            outer.append(f"__v{i} AS {quote(field.name)}")
    # A deleted record's data is null: the marker turns the object into NULL without a CASE
    # around it, which would make DuckDB build the objects row by row.
    deleted = f"CASE WHEN {OP_COLUMN} = 'deleted' THEN NULL ELSE '' END"
    data = f"coalesce({data_object(texts)} || {deleted}, 'null')"
    record = (
        f"""concat('{{"op":"', {OP_COLUMN}, '","key":', {KEY_COLUMN}, ',"data":', {data}, '}}')"""
    )
    ops = ", ".join(literal(op) for op in sorted(operations))
    return f"""
        SELECT {", ".join(outer)}, {record} AS {RECORD_COLUMN}
        FROM (
            SELECT {", ".join(inner)}
            FROM work.changes c LEFT JOIN {stage} s ON {key_join("c", "s", mapping.key_columns)}
            WHERE c.{OP_COLUMN} IN ({ops}){f" AND ({where})" if where else ""}
        )
    """
