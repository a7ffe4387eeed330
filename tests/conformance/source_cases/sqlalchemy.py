"""SQLAlchemy URLs: PostgreSQL through `postgresql+psycopg://` (this module's CASE, collected
by the suite) and SQLite through `sqlite:///` (SQLITE_CASE, which
tests/integration/test_sqlalchemy_source.py runs the whole suite against: the suite collects
one case per module). Each promises the types its dialect reports exactly."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pytest

from tests.conformance.source_case import (
    AT,
    AT_PLUS_2,
    BLOB,
    DECIMAL,
    POSTGRES,
    SQLITE,
    TEXT,
    Column,
    FileWarehouse,
    PostgresWarehouse,
    SourceCase,
    Warehouse,
    sql_text,
)

DOC = {"b": 1, "a": [1, 2.50]}


@contextmanager
def _postgres(root: Path, request: pytest.FixtureRequest) -> Iterator[Warehouse]:
    dsn: str = request.getfixturevalue("pg_dsn")
    schema: str = request.getfixturevalue("pg_schema")
    app = f"ebbtide_sqlalchemy_{uuid.uuid4().hex[:10]}"
    # A session zone far from UTC, as in the PostgreSQL case: instants come back in UTC.
    options = quote(f"-c search_path={schema} -c TimeZone=Asia/Kathmandu")
    url = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    joiner = "&" if "?" in url else "?"
    settings = {
        "type": "sqlalchemy",
        "url": f"{url}{joiner}application_name={app}&options={options}",
    }
    yield PostgresWarehouse(dsn, schema, app, settings)


CASE = SourceCase(
    type="sqlalchemy",
    says="postgresql+psycopg://",
    warehouse=_postgres,
    id_type="int8",
    # SQLAlchemy's types, as psycopg reports them: every integer is an Integer (int64).
    columns=(
        Column("int64_max", "int8", "9223372036854775807", pa.int64(), 2**63 - 1),
        Column("int64_min", "int8", "-9223372036854775808", pa.int64(), -(2**63)),
        Column("int32", "int4", "-2147483648", pa.int64(), -(2**31)),
        Column("int16", "int2", "-32768", pa.int64(), -(2**15)),
        Column("exact", "numeric(38, 10)", str(DECIMAL), pa.decimal128(38, 10), DECIMAL),
        Column(
            "wide",
            "numeric",
            "123456789012345678901234567890.000000000000000000000000000001",
            pa.string(),
            "123456789012345678901234567890.000000000000000000000000000001",
        ),
        Column("ratio", "float8", "3.141592653589793", pa.float64(), 3.141592653589793),
        Column("yes", "bool", "true", pa.bool_(), True),
        Column("no", "bool", "false", pa.bool_(), False),
        Column("note", "text", sql_text(TEXT), pa.string(), TEXT),
        Column("empty", "varchar(10)", "''", pa.string(), ""),
        Column("day", "date", "'2024-02-29'", pa.date32(), date(2024, 2, 29)),
        Column("stamp", "timestamp", f"'{AT}'", pa.timestamp("us"), AT),
        Column("stamp_tz", "timestamptz", f"'{AT}+02'", pa.timestamp("us", tz="UTC"), AT_PLUS_2),
        # psycopg parses JSON: it comes back as JSON text of the same document, re-encoded.
        Column("doc", "json", f"'{json.dumps(DOC)}'", pa.json_(), json.dumps(DOC)),
        Column(
            "docb",
            "jsonb",
            f"'{json.dumps(DOC)}'",
            pa.json_(),
            json.dumps(dict(sorted(DOC.items()))),
        ),
        Column("blob", "bytea", r"'\x00ff10270a'", pa.binary(), BLOB),
        # Types without a SQLAlchemy generic type travel as text; arrays as JSON text.
        Column(
            "ident",
            "uuid",
            "'6f1f6b0e-2c5c-4b7e-9d0a-3f4e5a6b7c8d'",
            pa.string(),
            "6f1f6b0e-2c5c-4b7e-9d0a-3f4e5a6b7c8d",
        ),
        Column("tags", "text[]", "ARRAY['a', NULL, 'c']", pa.string(), '["a", null, "c"]'),
    ),
    series=POSTGRES.series,
    fails_at=POSTGRES.fails_at,
    fails_saying=POSTGRES.fails_saying,
    lose=POSTGRES.lose,
    released=POSTGRES.released,
    # A constrained numeric holds NaN, which no decimal128 can.
    misfits=(("numeric(10, 2)", "'NaN'"),),
    marks=(pytest.mark.postgres,),
)


@contextmanager
def _sqlite(root: Path, request: pytest.FixtureRequest) -> Iterator[Warehouse]:
    # A relative path in a sqlite:/// URL is the workspace's, as for `type: sqlite`.
    settings = {"type": "sqlalchemy", "url": "sqlite:///warehouse.sqlite"}
    warehouse = FileWarehouse(root / "warehouse.sqlite", settings)
    warehouse.execute("CREATE TABLE created (one INTEGER)")
    yield warehouse


SQLITE_CASE = SourceCase(
    type="sqlalchemy",
    says="sqlite:///",
    warehouse=_sqlite,
    file="warehouse.sqlite",
    id_type="INTEGER",
    # pysqlite reports no column types: they come from the values SQLite stores.
    columns=(
        Column("int64_max", "INTEGER", "9223372036854775807", pa.int64(), 2**63 - 1),
        Column("int64_min", "BIGINT", "-9223372036854775808", pa.int64(), -(2**63)),
        Column("ratio", "REAL", "3.141592653589793", pa.float64(), 3.141592653589793),
        Column("note", "TEXT", sql_text(TEXT), pa.string(), TEXT),
        Column("empty", "TEXT", "''", pa.string(), ""),
        Column("digits", "TEXT", f"'{DECIMAL}'", pa.string(), str(DECIMAL)),
        Column("day", "DATE", "'2024-02-29'", pa.string(), "2024-02-29"),
        Column("blob", "BLOB", "X'00FF10270A'", pa.binary(), BLOB),
    ),
    series=SQLITE.series,
    fails_at=SQLITE.fails_at,
    fails_saying=SQLITE.fails_saying,
    lose=SQLITE.lose,
)
