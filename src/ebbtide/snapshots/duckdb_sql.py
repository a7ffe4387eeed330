"""DuckDB SQL for hashing rows and assembling outbound records, built once per run."""

from __future__ import annotations

from ebbtide.engine.binding import BoundMapping
from ebbtide.engine.mapping import CompiledMapping
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

# Bump when the row hash changes meaning; a snapshot made with another version is re-hashed
# by resending, never silently compared.
HASH_VERSION = "duckdb-hash-1"


def key_join(left: str, right: str, key_columns: tuple[str, ...]) -> str:
    return " AND ".join(f"{left}.{quote(c)} = {right}.{quote(c)}" for c in key_columns)


def hash_expression(bound: BoundMapping) -> str:
    """One 64-bit hash of the columns the fields read, seeded with the mapping's signature."""
    columns = "".join(f", {quote(c)}" for c in bound.hashed)
    return f"hash({literal(bound.mapping.signature)}{columns})"


def key_json(mapping: CompiledMapping, table: str) -> str:
    """The key as JSON: the value for a one-column key, an object for a composite key."""
    if len(mapping.key_columns) == 1:
        return f"to_json({table}.{quote(mapping.key_columns[0])})::VARCHAR"
    parts = ", ".join(f"{literal(c)}, {table}.{quote(c)}" for c in mapping.key_columns)
    return f"json_object({parts})::VARCHAR"


def outbound_query(bound: BoundMapping, operations: frozenset[Operation]) -> str:
    """Changed rows of the given operations, with everything a destination needs.

    The inner query renders each field once; the outer one assembles the record from those
    texts, so an object or array is not rendered twice for its typed column.
    """
    mapping = bound.mapping
    payload = payload_sql(bound, "s")
    key_parts = [
        f"c.{quote(col)} AS {quote(f'{KEY_PART_PREFIX}{i}')}"
        for i, col in enumerate(mapping.key_columns)
    ]
    inner = [
        f"c.{OP_COLUMN}",
        f"{key_json(mapping, 'c')} AS {KEY_COLUMN}",
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
            FROM work.changes c LEFT JOIN work.stage s ON {key_join("c", "s", mapping.key_columns)}
            WHERE c.{OP_COLUMN} IN ({ops})
        )
    """
