"""SQL of the PostgreSQL destination: the table's shape, its DDL and the write statements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from ebbtide.config.models import SyncMode
from ebbtide.ports import KEY_COLUMN, OP_COLUMN

STAGE = sql.Identifier("_ebbtide_stage")
_DELETED = sql.Literal("deleted")


@dataclass(frozen=True)
class TableShape:
    """The destination table as the catalog describes it."""

    columns: tuple[str, ...]
    unique_keys: frozenset[frozenset[str]]  # column sets ON CONFLICT can use


_COLUMNS = """
    SELECT attname::text FROM pg_attribute
    WHERE attrelid = to_regclass(%(table)s) AND attnum > 0 AND NOT attisdropped
    ORDER BY attnum
"""
_UNIQUE_KEYS = """
    SELECT array_agg(a.attname::text)
    FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
    WHERE i.indrelid = to_regclass(%(table)s) AND i.indisunique AND i.indimmediate
      AND i.indpred IS NULL AND i.indexprs IS NULL
    GROUP BY i.indexrelid
"""


async def inspect_table(
    conn: psycopg.AsyncConnection[tuple[Any, ...]], table: sql.Identifier
) -> TableShape | None:
    """The table's columns and unique keys, or None when it does not exist."""
    params = {"table": table.as_string(conn)}
    async with conn.cursor() as cursor:
        await cursor.execute("SELECT to_regclass(%(table)s) IS NOT NULL", params)
        found = await cursor.fetchone()
        if not found or not found[0]:
            return None
        await cursor.execute(_COLUMNS, params)
        columns = tuple(str(name) for (name,) in await cursor.fetchall())
        await cursor.execute(_UNIQUE_KEYS, params)
        unique = frozenset(frozenset(names) for (names,) in await cursor.fetchall())
    return TableShape(columns, unique)


_PG_TYPES: list[tuple[Callable[[Any], bool], str]] = [
    (pa.types.is_boolean, "boolean"),
    (lambda t: pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_uint8(t), "smallint"),
    (lambda t: pa.types.is_int32(t) or pa.types.is_uint16(t), "integer"),
    (lambda t: pa.types.is_int64(t) or pa.types.is_uint32(t), "bigint"),
    (pa.types.is_uint64, "numeric(20, 0)"),
    (lambda t: pa.types.is_float16(t) or pa.types.is_float32(t), "real"),
    (pa.types.is_float64, "double precision"),
    (pa.types.is_date, "date"),
    (pa.types.is_time, "time"),
    (pa.types.is_duration, "interval"),
    (
        lambda t: (
            pa.types.is_binary(t)
            or pa.types.is_large_binary(t)
            or pa.types.is_fixed_size_binary(t)
            or pa.types.is_binary_view(t)
        ),
        "bytea",
    ),
    (pa.types.is_nested, "jsonb"),
]


def pg_type(arrow_type: pa.DataType) -> str:
    """The column type `create_table` gives a field of this Arrow type; text by default."""
    if isinstance(arrow_type, pa.BaseExtensionType):
        if arrow_type.extension_name == "arrow.json":
            return "jsonb"  # objects and arrays the mapping built
        return pg_type(arrow_type.storage_type)
    if pa.types.is_dictionary(arrow_type):
        return pg_type(arrow_type.value_type)
    if pa.types.is_decimal(arrow_type):
        return f"numeric({arrow_type.precision}, {arrow_type.scale})"
    if pa.types.is_timestamp(arrow_type):
        return "timestamptz" if arrow_type.tz else "timestamp"
    for matches, name in _PG_TYPES:
        if matches(arrow_type):
            return name
    return "text"


def table_ddl(
    table: sql.Identifier,
    *,
    exists: bool,
    key: list[tuple[str, pa.DataType]],
    fields: list[tuple[str, pa.DataType]],
) -> list[sql.Composed]:
    """CREATE TABLE with the key as primary key, or ALTER TABLE adding the missing fields."""
    if exists:
        return [
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                table, sql.Identifier(name), sql.SQL(pg_type(kind))
            )
            for name, kind in fields
        ]
    columns = [
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(pg_type(kind)))
        for name, kind in [*key, *fields]
    ]
    primary_key = sql.SQL("PRIMARY KEY ({})").format(_names(k for k, _ in key))
    return [
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
            table, sql.SQL(", ").join([*columns, primary_key])
        )
    ]


def _names(names: Any, prefix: str | None = None) -> sql.Composed:
    identifiers = [sql.Identifier(prefix, n) if prefix else sql.Identifier(n) for n in names]
    return sql.SQL(", ").join(identifiers)


class Writes:
    """The statements that apply a staged batch to the table, built once per run."""

    def __init__(self, table: sql.Identifier, key: tuple[str, ...], fields: tuple[str, ...]):
        self.table, self.key, self.fields = table, key, fields
        columns = (*key, *fields)
        staged = (KEY_COLUMN, OP_COLUMN, *columns)
        # No constraints on the stage: every check happens where it belongs, on the table.
        self.stage_ddl = sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS"
            " SELECT NULL::text AS {key}, NULL::text AS {op}, {columns} FROM {table} WITH NO DATA"
        ).format(
            stage=STAGE,
            key=sql.Identifier(KEY_COLUMN),
            op=sql.Identifier(OP_COLUMN),
            columns=_names(columns),
            table=table,
        )
        self.copy = sql.SQL("COPY {} ({}) FROM STDIN").format(STAGE, _names(staged))
        self.clear_stage = sql.SQL("DELETE FROM {}").format(STAGE)
        self.delete = sql.SQL(
            "DELETE FROM {table} t USING {stage} s WHERE s.{op} = {d} AND {on}"
        ).format(
            table=table, stage=STAGE, op=sql.Identifier(OP_COLUMN), d=_DELETED, on=self._on("t")
        )
        self._by_mode = {
            SyncMode.UPSERT: self._upsert(),
            SyncMode.MIRROR: self._upsert(),
            SyncMode.INSERT: self._insert(),
            SyncMode.UPDATE: self._update(),
        }

    def for_mode(self, mode: SyncMode) -> sql.Composed:
        """Writes the staged added and updated records; insert and update return the keys
        of the records they refused (key taken, key not found)."""
        return self._by_mode[mode]

    def _on(self, alias: str) -> sql.Composed:
        return sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier(alias, k), sql.Identifier("s", k))
            for k in self.key
        )

    def _insert_select(self, on_conflict: sql.Composable) -> sql.Composed:
        columns = _names((*self.key, *self.fields))
        return sql.SQL(
            "INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} WHERE {op} <> {d}"
            " ON CONFLICT ({key}) {on_conflict}"
        ).format(
            table=self.table,
            columns=columns,
            stage=STAGE,
            op=sql.Identifier(OP_COLUMN),
            d=_DELETED,
            key=_names(self.key),
            on_conflict=on_conflict,
        )

    def _upsert(self) -> sql.Composed:
        if not self.fields:
            return self._insert_select(sql.SQL("DO NOTHING"))
        updates = sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(f), sql.Identifier(f))
            for f in self.fields
        )
        return self._insert_select(sql.SQL("DO UPDATE SET {}").format(updates))

    def _insert(self) -> sql.Composed:
        written = sql.SQL("{} RETURNING {}").format(
            self._insert_select(sql.SQL("DO NOTHING")), _names(self.key)
        )
        return self._refused(written)

    def _update(self) -> sql.Composed:
        targets = self.fields or self.key
        updates = sql.SQL(", ").join(
            sql.SQL("{} = s.{}").format(sql.Identifier(f), sql.Identifier(f)) for f in targets
        )
        written = sql.SQL(
            "UPDATE {table} t SET {updates} FROM {stage} s WHERE s.{op} <> {d} AND {on}"
            " RETURNING {key}"
        ).format(
            table=self.table,
            updates=updates,
            stage=STAGE,
            op=sql.Identifier(OP_COLUMN),
            d=_DELETED,
            on=self._on("t"),
            key=_names(self.key, "t"),
        )
        return self._refused(written)

    def _refused(self, written: sql.Composed) -> sql.Composed:
        """The staged records the statement did not write, by their `__key`."""
        return sql.SQL(
            "WITH written AS ({written}) SELECT s.{key_json} FROM {stage} s"
            " WHERE s.{op} <> {d} AND NOT EXISTS (SELECT FROM written w WHERE {on})"
        ).format(
            written=written,
            key_json=sql.Identifier(KEY_COLUMN),
            stage=STAGE,
            op=sql.Identifier(OP_COLUMN),
            d=_DELETED,
            on=self._on("w"),
        )
