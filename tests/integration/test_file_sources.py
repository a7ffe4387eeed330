"""DuckDB and SQLite sources against real files: types, streaming, errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from ebbtide.errors import SourceError
from ebbtide.ports import iter_batches
from ebbtide.sources import sqlite as sqlite_source
from ebbtide.sources.duckdb import DuckDBSource
from ebbtide.sources.sqlite import SQLiteSource


def make_sqlite(path: Path, rows: int) -> None:
    with sqlite3.connect(path) as con:
        con.execute(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, score REAL, note TEXT)"
        )
        con.executemany(
            "INSERT INTO users VALUES (?, ?, ?, ?)",
            [(i, f"u{i}@x.com", i / 2, None if i < 150 else "late") for i in range(rows)],
        )


def test_sqlite_streams_batches_with_one_schema_even_when_a_column_starts_null(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_sqlite(tmp_path / "w.sqlite", 400)
    monkeypatch.setattr(sqlite_source, "BATCH_ROWS", 100)
    source = SQLiteSource(tmp_path / "w.sqlite")
    reader = source.read("SELECT id, email, score, note FROM users ORDER BY id")
    batches = list(iter_batches(reader))
    source.close()
    assert [b.num_rows for b in batches] == [100, 100, 100, 100]
    assert reader.schema.field("id").type == pa.int64()
    assert reader.schema.field("score").type == pa.float64()
    assert reader.schema.field("note").type == pa.string()
    table = pa.Table.from_batches(batches)
    assert table.column("note").to_pylist()[149:151] == [None, "late"]


def test_sqlite_source_opens_read_only(tmp_path: Path) -> None:
    make_sqlite(tmp_path / "w.sqlite", 3)
    source = SQLiteSource(tmp_path / "w.sqlite")
    with pytest.raises(SourceError, match="SQLite"):
        source.read("DELETE FROM users")
    source.close()
    with sqlite3.connect(tmp_path / "w.sqlite") as con:
        assert con.execute("SELECT count(*) FROM users").fetchone() == (3,)


def test_duckdb_source_keeps_types_and_reports_sql_errors(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute(
            "CREATE TABLE t AS SELECT 1::BIGINT AS id,"
            " 12345678901234567890.1234::DECIMAL(38, 4) AS big,"
            " {'city': 'Oslo'} AS address, [{'sku': 'a'}] AS items"
        )
    source = DuckDBSource(tmp_path / "w.duckdb", "128MB")
    table = source.read("SELECT * FROM t").read_all()
    assert table.schema.field("big").type == pa.decimal128(38, 4)
    assert pa.types.is_struct(table.schema.field("address").type)
    assert table.column("items").to_pylist() == [[{"sku": "a"}]]
    with pytest.raises(SourceError, match="no_such_table"):
        source.read("SELECT * FROM no_such_table")
    source.close()


def test_missing_source_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        DuckDBSource(tmp_path / "nope.duckdb", "128MB")
    with pytest.raises(SourceError, match="does not exist"):
        SQLiteSource(tmp_path / "nope.sqlite")
