"""The session the diff runs on inside MariaDB or MySQL (`diff: warehouse`).

The source's own connection (UTC, utf8mb4), made writable for temporary tables and ebbtide's
own database. A column's kind comes from the exact Arrow type the source reads it as.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pymysql  # type: ignore[import-untyped]

from ebbtide.errors import SourceError
from ebbtide.ports import ColumnKind
from ebbtide.sources.mysql import MySQLSource

INSERT_ROWS = 5_000  # rows per INSERT statement: well within max_allowed_packet


def kind_of(arrow: pa.DataType) -> ColumnKind:
    """How a column of this Arrow type renders as canonical text."""
    if isinstance(arrow, pa.JsonType):
        return ColumnKind.JSON
    checks: list[tuple[Callable[[pa.DataType], bool], ColumnKind]] = [
        (pa.types.is_integer, ColumnKind.INTEGER),
        (pa.types.is_decimal, ColumnKind.DECIMAL),
        (pa.types.is_floating, ColumnKind.FLOAT),
        (pa.types.is_boolean, ColumnKind.BOOLEAN),
        (pa.types.is_string, ColumnKind.TEXT),
        (pa.types.is_large_string, ColumnKind.TEXT),
        (pa.types.is_binary, ColumnKind.BINARY),
        (pa.types.is_large_binary, ColumnKind.BINARY),
        (pa.types.is_date, ColumnKind.DATE),
    ]
    for check, kind in checks:
        if check(arrow):
            return kind
    if pa.types.is_timestamp(arrow):
        return ColumnKind.TIMESTAMPTZ if getattr(arrow, "tz", None) else ColumnKind.TIMESTAMP
    return ColumnKind.OTHER


class MySQLSession:
    """A writable MariaDB/MySQL connection for the warehouse diff."""

    def __init__(self, url: str, state_schema: str) -> None:
        self._source = MySQLSource(url, read_only=False)
        self.where = self._source.where
        self.state_schema = state_schema
        self.dialect = "mariadb" if self._source._mariadb else "mysql"
        self._json: set[str] = set()

    def describe(self, query: str) -> list[tuple[str, ColumnKind]]:
        """The model's columns. MariaDB says a column is JSON only when it is read straight
        from its table: the model is asked for no rows as written (`LIMIT 0` after it), and
        the JSON columns found are read as JSON from then on (through derived tables too)."""
        model = query.strip().rstrip(";")
        try:
            schema = self._source.read(f"{model}\nLIMIT 0").schema
        except SourceError:  # a model with a LIMIT of its own: no JSON found through it
            schema = self.read(f"SELECT * FROM ({model}\n) m LIMIT 0").schema
        self._json = {f.name for f in schema if isinstance(f.type, pa.JsonType)}
        return [(field.name, kind_of(field.type)) for field in schema]

    def execute(self, statement: str) -> list[tuple[object, ...]]:
        self._source._finish()
        try:
            with self._source._con.cursor() as cursor:
                cursor.execute(statement)
                return [tuple(row) for row in cursor.fetchall()]
        except pymysql.Error as exc:
            raise self._source._failed(exc, "a statement of the warehouse diff failed") from exc

    def read(self, query: str) -> pa.RecordBatchReader:
        return self._source.read(query, json=self._json)

    def insert(self, table: str, rows: pa.Table) -> None:
        names = ", ".join("`" + n.replace("`", "``") + "`" for n in rows.column_names)
        marks = ", ".join(["%s"] * rows.num_columns)
        statement = f"INSERT INTO {table} ({names}) VALUES ({marks})"
        self._source._finish()
        try:
            with self._source._con.cursor() as cursor:
                for batch in rows.to_batches(max_chunksize=INSERT_ROWS):
                    values: list[tuple[Any, ...]] = list(
                        zip(*(column.to_pylist() for column in batch.columns), strict=True)
                    )
                    cursor.executemany(statement, values)
        except pymysql.Error as exc:
            raise self._source._failed(exc, "loading rows into the warehouse failed") from exc

    def close(self) -> None:
        self._source.close()
