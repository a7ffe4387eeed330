"""The session the diff runs on inside PostgreSQL (`diff: warehouse`).

The source's own connection, made writable (temporary tables, ebbtide's schema) and pinned to
settings under which a value's text is canonical: UTC, ISO dates, shortest exact floats.
"""

from __future__ import annotations

import adbc_driver_manager
import pyarrow as pa

from ebbtide.errors import SourceError
from ebbtide.ports import ColumnKind
from ebbtide.sources.postgres import PostgresSource

_KINDS: dict[str, ColumnKind] = {
    "int2": ColumnKind.INTEGER,
    "int4": ColumnKind.INTEGER,
    "int8": ColumnKind.INTEGER,
    "oid": ColumnKind.INTEGER,
    "numeric": ColumnKind.DECIMAL,
    "float4": ColumnKind.FLOAT,
    "float8": ColumnKind.FLOAT,
    "bool": ColumnKind.BOOLEAN,
    "text": ColumnKind.TEXT,
    "varchar": ColumnKind.TEXT,
    "bpchar": ColumnKind.TEXT,
    "name": ColumnKind.TEXT,
    "bytea": ColumnKind.BINARY,
    "date": ColumnKind.DATE,
    "timestamp": ColumnKind.TIMESTAMP,
    "timestamptz": ColumnKind.TIMESTAMPTZ,
    "json": ColumnKind.JSON,
    "jsonb": ColumnKind.JSON,
}
SESSION = [
    "SET TIME ZONE 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 1",  # the shortest text that reads back exactly
    "SET bytea_output = 'hex'",
]
_LOADING = "ebbtide_loading"


class PostgresSession:
    """A writable PostgreSQL connection for the warehouse diff."""

    dialect = "postgres"

    def __init__(self, url: str, state_schema: str) -> None:
        self._source = PostgresSource(url, read_only=False)
        self.where = self._source.where
        self.state_schema = state_schema
        try:
            for statement in SESSION:
                self.execute(statement)
        except BaseException:
            self._source.close()
            raise

    def describe(self, query: str) -> list[tuple[str, ColumnKind]]:
        with self._source._con.cursor() as cursor:
            try:
                schema = cursor.adbc_execute_schema(query.strip().rstrip(";"))
            except adbc_driver_manager.Error as exc:
                raise self._failed("the model's SQL failed", exc) from exc
        return [
            (
                name,
                _KINDS.get(
                    (field.metadata or {}).get(b"POSTGRESQL:type", b"").decode(), ColumnKind.OTHER
                ),
            )
            for name, field in zip(schema.names, schema, strict=True)
        ]

    def execute(self, statement: str) -> list[tuple[object, ...]]:
        with self._source._con.cursor() as cursor:
            try:
                cursor.execute(statement)
                if cursor.description is None:
                    return []
                return [tuple(row) for row in cursor.fetchall()]
            except adbc_driver_manager.Error as exc:
                raise self._failed("a statement of the warehouse diff failed", exc) from exc

    def read(self, query: str) -> pa.RecordBatchReader:
        return self._source.read(query)

    def insert(self, table: str, rows: pa.Table) -> None:
        """Binary COPY into a scratch table, then an INSERT that casts to the table's types."""
        names = ", ".join('"' + n.replace('"', '""') + '"' for n in rows.column_names)
        with self._source._con.cursor() as cursor:
            try:
                cursor.adbc_ingest(_LOADING, rows, mode="replace", temporary=True)
            except adbc_driver_manager.Error as exc:
                raise self._failed("loading rows into the warehouse failed", exc) from exc
        self.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM pg_temp.{_LOADING}")

    def _failed(self, what: str, exc: adbc_driver_manager.Error) -> SourceError:
        return SourceError(f"{what} on PostgreSQL at {self.where}: {self._source._say(exc)}")

    def close(self) -> None:
        self._source.close()
