"""What a source type declares to run the source conformance suite, and the built-in cases.

A case says how to make a fresh database (a `Warehouse`) and configure the source against it,
which column types it promises (each with the SQL that writes a value and the Arrow type and
Python value the source reads back), and how to pull the ground from under a read in progress.
The suite (tests/conformance/test_sources.py) builds the source from those settings through
the source registry, as the engine does, and checks the same promises of every case.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import select
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import duckdb
import pyarrow as pa
import pytest

# What every case writes into a text column, and reads back exactly.
TEXT = 'it\'s "quoted" — ñ, 中文, 😀\nsecond line\ttab \\ backslash'
DECIMAL = Decimal("12345678901234567890.1234567890")
AT = datetime(2024, 2, 29, 13, 14, 15, 123456, tzinfo=UTC).replace(tzinfo=None)  # no zone
AT_PLUS_2 = datetime(2024, 2, 29, 11, 14, 15, 123456, tzinfo=UTC)  # written as 13:14…+02
BLOB = b"\x00\xff\x10'\n"


def sql_text(value: str) -> str:
    """A standard SQL string literal (DuckDB, SQLite and PostgreSQL read it alike)."""
    return "'" + value.replace("'", "''") + "'"


class Warehouse(Protocol):
    """A fresh database, and the source's settings against it."""

    settings: dict[str, Any]  # the source's workspace settings, `type` included

    def execute(self, *statements: str) -> None:
        """Run statements on a connection of the warehouse's own, committed."""
        ...


@dataclass(frozen=True)
class Column:
    """A column of the typed table: how it is declared and written, and what comes back."""

    name: str
    sql_type: str
    literal: str  # the SQL that writes the value in row 1
    arrow: pa.DataType | Callable[[pa.DataType], bool]  # the type, or a test of it
    value: Any  # what `to_pylist()` gives for row 1


def zoned_microseconds(arrow: pa.DataType) -> bool:
    """A timestamp in microseconds, zone-aware (the zone name is the database session's)."""
    return pa.types.is_timestamp(arrow) and arrow.unit == "us" and arrow.tz is not None


@dataclass(frozen=True)
class SourceCase:
    type: str
    says: str  # how the source's error messages name it ("PostgreSQL")
    # A fresh warehouse for one test, given the test's folder and fixture request.
    warehouse: Callable[[Path, pytest.FixtureRequest], AbstractContextManager[Warehouse]]
    id_type: str  # the typed table's key column
    columns: tuple[Column, ...]
    # `CREATE TABLE big AS …` body: columns n (1..rows) and label ('row ' || n).
    series: Callable[[int], str]
    # An expression over `n` that fails on the database when n == the argument.
    fails_at: Callable[[int], str]
    fails_saying: str  # what the database says when it does
    # Cuts the source off in the middle of a read (connection killed, file truncated).
    lose: Callable[[Warehouse], None]
    # Checks, after close(), what the test cannot see otherwise (PostgreSQL: the backend).
    released: Callable[[Warehouse], None] = lambda warehouse: None
    file: str | None = None  # the warehouse file, for file-backed sources
    # (declared type, literal) pairs the database stores though the value is not of that type.
    misfits: tuple[tuple[str, str], ...] = ()
    marks: tuple[pytest.MarkDecorator, ...] = field(default_factory=tuple)


# --- file-backed sources -------------------------------------------------------------------


@dataclass
class FileWarehouse:
    path: Path
    settings: dict[str, Any]

    def execute(self, *statements: str) -> None:
        if self.settings["type"] == "duckdb":
            with duckdb.connect(str(self.path)) as con:
                for statement in statements:
                    con.execute(statement)
        else:
            self._sqlite(statements)

    def _sqlite(self, statements: tuple[str, ...]) -> None:
        # No busy timeout: a lock another connection holds is an error at once, not a wait.
        con = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            for statement in statements:
                con.execute(statement)
        finally:
            con.close()


def _file_warehouse(kind: str, name: str) -> Callable[..., AbstractContextManager[Warehouse]]:
    @contextmanager
    def fresh(root: Path, request: pytest.FixtureRequest) -> Iterator[Warehouse]:
        warehouse = FileWarehouse(root / name, {"type": kind, "path": name})
        warehouse.execute("CREATE TABLE created (one INTEGER)")  # the file exists from here
        yield warehouse

    return fresh


def _truncate(warehouse: Warehouse) -> None:
    """Another process empties the file under the reader (a restore, a botched copy)."""
    assert isinstance(warehouse, FileWarehouse)
    os.truncate(warehouse.path, 0)


DUCKDB = SourceCase(
    type="duckdb",
    says="DuckDB",
    warehouse=_file_warehouse("duckdb", "warehouse.duckdb"),
    file="warehouse.duckdb",
    id_type="BIGINT",
    columns=(
        Column("int64_max", "BIGINT", "9223372036854775807", pa.int64(), 2**63 - 1),
        Column("int64_min", "BIGINT", "-9223372036854775808", pa.int64(), -(2**63)),
        Column("int32", "INTEGER", "-2147483648", pa.int32(), -(2**31)),
        Column("exact", "DECIMAL(38, 10)", str(DECIMAL), pa.decimal128(38, 10), DECIMAL),
        Column("ratio", "DOUBLE", "3.141592653589793", pa.float64(), 3.141592653589793),
        Column("yes", "BOOLEAN", "true", pa.bool_(), True),
        Column("no", "BOOLEAN", "false", pa.bool_(), False),
        Column("note", "VARCHAR", sql_text(TEXT), pa.string(), TEXT),
        Column("empty", "VARCHAR", "''", pa.string(), ""),
        Column("day", "DATE", "'2024-02-29'", pa.date32(), date(2024, 2, 29)),
        Column("stamp", "TIMESTAMP", f"'{AT}'", pa.timestamp("us"), AT),
        Column("stamp_tz", "TIMESTAMPTZ", f"'{AT}+02'", zoned_microseconds, AT_PLUS_2),
        Column(
            "doc", "JSON", """'{"b": 1, "a": [1, 2.50]}'""", pa.string(), '{"b": 1, "a": [1, 2.50]}'
        ),
        Column(
            "address",
            "STRUCT(city VARCHAR, zip INTEGER)",
            "{'city': 'Tromsø', 'zip': 9008}",
            pa.struct([("city", pa.string()), ("zip", pa.int32())]),
            {"city": "Tromsø", "zip": 9008},
        ),
        Column("tags", "VARCHAR[]", "['a', NULL, 'c']", pa.list_(pa.string()), ["a", None, "c"]),
        Column("blob", "BLOB", r"'\x00\xFF\x10''\x0A'::BLOB", pa.binary(), BLOB),
    ),
    series=lambda rows: f"SELECT i AS n, 'row ' || i AS label FROM range(1, {rows + 1}) t(i)",
    fails_at=lambda at: f"CASE WHEN n = {at} THEN error('row {at} is poison') ELSE n END",
    fails_saying="is poison",
    lose=_truncate,
)

SQLITE = SourceCase(
    type="sqlite",
    says="SQLite",
    warehouse=_file_warehouse("sqlite", "warehouse.sqlite"),
    file="warehouse.sqlite",
    id_type="INTEGER",
    # SQLite has no decimal, date, time or JSON type: such columns hold text (or a REAL, for
    # NUMERIC affinity, which is not exact), and the source promises no more than the text.
    columns=(
        Column("int64_max", "INTEGER", "9223372036854775807", pa.int64(), 2**63 - 1),
        Column("int64_min", "BIGINT", "-9223372036854775808", pa.int64(), -(2**63)),
        Column("ratio", "REAL", "3.141592653589793", pa.float64(), 3.141592653589793),
        Column("yes", "BOOLEAN", "true", pa.bool_(), True),
        Column("no", "BOOLEAN", "false", pa.bool_(), False),
        Column("note", "TEXT", sql_text(TEXT), pa.string(), TEXT),
        Column("empty", "TEXT", "''", pa.string(), ""),
        Column("digits", "TEXT", f"'{DECIMAL}'", pa.string(), str(DECIMAL)),
        Column("day", "DATE", "'2024-02-29'", pa.string(), "2024-02-29"),
        Column("stamp", "DATETIME", f"'{AT}'", pa.string(), str(AT)),
        Column(
            "doc", "JSON", """'{"b": 1, "a": [1, 2.50]}'""", pa.string(), '{"b": 1, "a": [1, 2.50]}'
        ),
        Column("blob", "BLOB", "X'00FF10270A'", pa.binary(), BLOB),
    ),
    series=lambda rows: (
        f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {rows})"
        " SELECT i AS n, 'row ' || i AS label FROM s"
    ),
    # SQLite answers NULL to 1/0; abs() of the smallest integer is an error.
    fails_at=lambda at: f"abs(CASE WHEN n = {at} THEN -9223372036854775807 - 1 ELSE n END)",
    fails_saying="integer overflow",
    lose=_truncate,
    # A column's declared type is only an affinity: it holds any value it cannot convert.
    misfits=(("INTEGER", "'abc'"), ("INTEGER", "1.5"), ("REAL", "'x'"), ("BOOLEAN", "'yes'")),
)


# --- PostgreSQL ----------------------------------------------------------------------------


@dataclass
class PostgresWarehouse:
    dsn: str  # the server, as the test fixtures give it
    schema: str
    application_name: str  # names the source's connection in pg_stat_activity
    settings: dict[str, Any]

    def execute(self, *statements: str) -> None:
        import psycopg

        options = f"-c search_path={self.schema} -c lock_timeout=5s"
        with psycopg.connect(self.dsn, autocommit=True, options=options) as conn:
            for statement in statements:
                conn.execute(statement)

    def backends(self) -> list[int]:
        """The pids of the source's connections."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                (self.application_name,),
            ).fetchall()
        return [row[0] for row in rows]


@contextmanager
def _postgres_warehouse(root: Path, request: pytest.FixtureRequest) -> Iterator[Warehouse]:
    dsn: str = request.getfixturevalue("pg_dsn")
    schema: str = request.getfixturevalue("pg_schema")
    app = f"ebbtide_conformance_{uuid.uuid4().hex[:10]}"
    # A session zone far from UTC: timestamptz must come back in UTC all the same, and a
    # timestamp without zone unshifted. The schema is the search path, so SQL needs no prefix.
    options = quote(f"-c search_path={schema} -c TimeZone=Asia/Kathmandu")
    joiner = "&" if "?" in dsn else "?"
    url = f"{dsn}{joiner}application_name={app}&options={options}"
    yield PostgresWarehouse(dsn, schema, app, {"type": "postgres", "url": url})


def _terminate_backend(warehouse: Warehouse) -> None:
    """The server ends the source's connection (an admin, a failover, an idle timeout)."""
    import psycopg

    assert isinstance(warehouse, PostgresWarehouse)
    with psycopg.connect(warehouse.dsn, autocommit=True) as conn:
        # With a timeout, pg_terminate_backend returns once the backend has exited.
        ended = conn.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
            " WHERE application_name = %s",
            (warehouse.application_name,),
        ).fetchall()
    assert ended == [(True,)], f"expected one reading backend to end, got {ended}"


def _backend_gone(warehouse: Warehouse) -> None:
    """The source's backend has left pg_stat_activity: wait for it to exit, then look."""
    assert isinstance(warehouse, PostgresWarehouse)
    deadline = time.monotonic() + 10
    for pid in warehouse.backends():
        _wait_for_exit(pid, 10)
    # A server in another PID namespace gives no exit to wait on: look again until the deadline.
    while warehouse.backends() and time.monotonic() < deadline:
        pass
    assert warehouse.backends() == [], "close() left the source's backend connected"


def _wait_for_exit(pid: int, timeout_s: float) -> None:
    """Block until process `pid` exits: its pidfd becomes readable then (the test server
    runs on this machine). No such process here: nothing to wait on."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # ProcessLookupError included: gone already, or in another namespace
        return
    try:
        select.select([fd], [], [], timeout_s)
    finally:
        os.close(fd)


POSTGRES = SourceCase(
    type="postgres",
    says="PostgreSQL",
    warehouse=_postgres_warehouse,
    id_type="int8",
    columns=(
        Column("int64_max", "int8", "9223372036854775807", pa.int64(), 2**63 - 1),
        Column("int64_min", "int8", "-9223372036854775808", pa.int64(), -(2**63)),
        Column("int32", "int4", "-2147483648", pa.int32(), -(2**31)),
        Column("int16", "int2", "-32768", pa.int16(), -(2**15)),
        Column("exact", "numeric(38, 10)", str(DECIMAL), pa.decimal128(38, 10), DECIMAL),
        # Unconstrained (or wider than 38 digits): every digit, as text.
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
        # JSON stays JSON text: json as written, jsonb as PostgreSQL normalizes it.
        Column(
            "doc", "json", """'{"b": 1, "a": [1, 2.50]}'""", pa.json_(), '{"b": 1, "a": [1, 2.50]}'
        ),
        Column(
            "docb",
            "jsonb",
            """'{"b": 1, "a": [1, 2.50]}'""",
            pa.json_(),
            '{"a": [1, 2.50], "b": 1}',
        ),
        Column("blob", "bytea", r"'\x00ff10270a'", pa.binary(), BLOB),
    ),
    series=lambda rows: (
        f"SELECT i::int8 AS n, 'row ' || i AS label FROM generate_series(1, {rows}) i"
    ),
    fails_at=lambda at: f"1 / (n - {at})",
    fails_saying="division by zero",
    lose=_terminate_backend,
    released=_backend_gone,
    marks=(pytest.mark.postgres,),
)


def all_cases() -> tuple[SourceCase, ...]:
    """The three cases here, then each `CASE` (or `CASES`) of tests/conformance/source_cases/.

    Called by the suite, never while this module is imported: a case module imports this one,
    and collecting cases during that import would find it half-loaded and drop its case.
    """
    import tests.conformance.source_cases as folder

    found: list[SourceCase] = []
    for module in pkgutil.iter_modules(folder.__path__):
        loaded = importlib.import_module(f"{folder.__name__}.{module.name}")
        more = getattr(loaded, "CASES", None) or (getattr(loaded, "CASE", None),)
        found += [case for case in more if isinstance(case, SourceCase)]
    return (DUCKDB, SQLITE, POSTGRES, *sorted(found, key=lambda c: c.type))
