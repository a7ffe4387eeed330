"""SQLite files, read through the standard library's driver."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from ebbtide.config.models import SourceConfig
from ebbtide.errors import SourceError
from ebbtide.ports import AdapterContext, SourcePlugin
from ebbtide.sources import BATCH_ROWS
from ebbtide.sources.rows import batches_from_rows

# SQLite's declared column affinities, as far as they tell a stable Arrow type.
_AFFINITY: dict[str, pa.DataType] = {
    "INTEGER": pa.int64(),
    "INT": pa.int64(),
    "BIGINT": pa.int64(),
    "REAL": pa.float64(),
    "DOUBLE": pa.float64(),
    "FLOAT": pa.float64(),
    "TEXT": pa.string(),
    "BLOB": pa.binary(),
    "BOOLEAN": pa.bool_(),
}


class SQLiteSourceConfig(SourceConfig):
    path: str


class SQLiteSource:
    """Reads a SQLite file read-only; a cursor fetches rows a batch at a time."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise SourceError(f"SQLite file {path} does not exist")
        self._path = path
        # DuckDB pulls the model's batches on threads of its own, one pull at a time: the
        # connection is handed between threads but never used by two at once.
        try:
            self._con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise SourceError(f"cannot open SQLite file {path}: {exc}") from exc
        # Statements not yet read to the end: each keeps the connection, and its lock on the
        # file, alive past the connection's close (a "zombie"), so `close` ends them first.
        self._reading: set[sqlite3.Cursor] = set()

    def read(self, query: str) -> pa.RecordBatchReader:
        try:
            cursor = self._con.execute(query)
        except sqlite3.Error as exc:
            raise SourceError(f"the model's SQL failed on SQLite: {exc}") from exc
        self._reading.add(cursor)
        names = [d[0] for d in cursor.description]
        types = self._declared_types(query, names)
        flags = [i for i, declared in enumerate(types) if declared == pa.bool_()]

        def fetch(size: int) -> Sequence[Sequence[Any]]:
            try:
                rows = cursor.fetchmany(size)
            except sqlite3.Error as exc:
                self._end(cursor)
                raise SourceError(f"reading the model's rows from SQLite failed: {exc}") from exc
            if not rows:
                self._end(cursor)
            return [_booleans(row, flags, names) for row in rows] if flags else rows

        return batches_from_rows(
            names, fetch, BATCH_ROWS, types, source=f"SQLite file {self._path}"
        )

    def _declared_types(self, query: str, names: list[str]) -> list[pa.DataType | None]:
        """Declared types of the result's columns, where SQLite can tell them."""
        try:
            view = "ebbtide_probe"
            self._con.execute(f"CREATE TEMP VIEW {view} AS {query}")
            declared = {row[1]: row[2] for row in self._con.execute(f"PRAGMA table_info({view})")}
            self._con.execute(f"DROP VIEW {view}")
        except sqlite3.Error:
            return [None] * len(names)
        return [_AFFINITY.get(str(declared.get(n, "")).upper().split("(")[0]) for n in names]

    def _end(self, cursor: sqlite3.Cursor) -> None:
        self._reading.discard(cursor)
        with contextlib.suppress(sqlite3.Error):  # the connection was closed already
            cursor.close()

    def close(self) -> None:
        for cursor in list(self._reading):
            self._end(cursor)
        self._con.close()


def _booleans(row: Sequence[Any], flags: list[int], names: list[str]) -> list[Any]:
    """SQLite stores a BOOLEAN as a number (true is 1): a nonzero number is true, as in SQLite."""
    values = list(row)
    for i in flags:
        value = values[i]
        if isinstance(value, int | float):
            values[i] = value != 0
        elif value is not None:
            raise SourceError(
                f"column {names[i]!r} is declared BOOLEAN but holds {value!r}, which SQLite"
                " does not treat as a number: fix the value, or cast it in the model's SQL"
            )
    return values


def _connect(config: SQLiteSourceConfig, context: AdapterContext) -> SQLiteSource:
    return SQLiteSource(context.root / config.path)


PLUGIN = SourcePlugin(config=SQLiteSourceConfig, connect=_connect)
