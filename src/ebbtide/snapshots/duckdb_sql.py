"""DuckDB SQL for hashing rows and rendering records as JSON, built once per run."""

from __future__ import annotations

import pyarrow as pa

from ebbtide.engine.mapping import CompiledMapping
from ebbtide.ports import (
    HASH_COLUMN,
    KEY_COLUMN,
    KEY_PART_PREFIX,
    OP_COLUMN,
    RECORD_COLUMN,
    Operation,
)

# Bump when the row hash changes meaning; a snapshot made with another version is re-hashed
# by resending, never silently compared.
HASH_VERSION = "duckdb-hash-1"


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def key_join(left: str, right: str, key_columns: tuple[str, ...]) -> str:
    return " AND ".join(f"{left}.{quote(c)} = {right}.{quote(c)}" for c in key_columns)


def hash_expression(mapping: CompiledMapping) -> str:
    """One 64-bit hash of the mapped columns, seeded with the mapping's signature."""
    columns = ", ".join(quote(f.column) for f in mapping.fields)
    return f"hash({literal(mapping.signature)}, {columns})"


def json_value(ref: str, arrow_type: pa.DataType) -> str:
    """A column reference as it should appear in JSON: timestamps and dates in ISO 8601."""
    if pa.types.is_timestamp(arrow_type):
        if arrow_type.tz is not None:
            return f"strftime(timezone('UTC', {ref}), '%Y-%m-%dT%H:%M:%S.%fZ')"
        return f"strftime({ref}, '%Y-%m-%dT%H:%M:%S.%f')"
    if pa.types.is_date(arrow_type):
        return f"strftime({ref}, '%Y-%m-%d')"
    return ref


def key_json(mapping: CompiledMapping, table: str) -> str:
    """The key as JSON: the value for a one-column key, an object for a composite key."""
    if len(mapping.key_columns) == 1:
        return f"to_json({table}.{quote(mapping.key_columns[0])})::VARCHAR"
    parts = ", ".join(f"{literal(c)}, {table}.{quote(c)}" for c in mapping.key_columns)
    return f"json_object({parts})::VARCHAR"


def data_json(mapping: CompiledMapping, schema: pa.Schema, table: str) -> str:
    parts = ", ".join(
        f"{literal(f.field)}, "
        + json_value(f"{table}.{quote(f.column)}", schema.field(f.column).type)
        for f in mapping.fields
    )
    return f"json_object({parts})::VARCHAR"


def outbound_query(
    mapping: CompiledMapping, schema: pa.Schema, operations: frozenset[Operation]
) -> str:
    """Changed rows of the given operations, with everything a destination needs."""
    key_parts = ", ".join(
        f"c.{quote(col)} AS {quote(f'{KEY_PART_PREFIX}{i}')}"
        for i, col in enumerate(mapping.key_columns)
    )
    fields = ", ".join(f"s.{quote(f.column)} AS {quote(f.field)}" for f in mapping.fields)
    key = key_json(mapping, "c")
    data = data_json(mapping, schema, "s")
    data = f"CASE WHEN c.{OP_COLUMN} = 'deleted' THEN 'null' ELSE {data} END"
    record = (
        f"""'{{"op":"' || c.{OP_COLUMN} || '","key":' || {key} || ',"data":' || {data} || '}}'"""
    )
    ops = ", ".join(literal(op) for op in sorted(operations))
    return f"""
        SELECT c.{OP_COLUMN}, {key} AS {KEY_COLUMN}, {record} AS {RECORD_COLUMN},
               c.{HASH_COLUMN}, {key_parts}, {fields}
        FROM work.changes c LEFT JOIN work.stage s ON {key_join("c", "s", mapping.key_columns)}
        WHERE c.{OP_COLUMN} IN ({ops})
    """
