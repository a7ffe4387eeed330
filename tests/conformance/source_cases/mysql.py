"""The MySQL/MariaDB source case: each test gets a database and a user of its own (with a
password), so the suite can find and kill the source's connection by its user."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from datetime import time as day_time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tests.conformance.source_case import (
    AT,
    AT_PLUS_2,
    BLOB,
    DECIMAL,
    TEXT,
    Column,
    SourceCase,
    Warehouse,
)
from tests.conftest import require_server

SERVER = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
START = "service mariadb start"


def admin(database: str | None = None) -> Any:
    """A root connection, autocommit, that waits at most 5 s for a lock."""
    import pymysql

    con = pymysql.connect(**SERVER, database=database, charset="utf8mb4", autocommit=True)
    with con.cursor() as cursor:
        cursor.execute("SET SESSION lock_wait_timeout = 5, innodb_lock_wait_timeout = 5")
    return con


def mysql_text(value: str) -> str:
    """A MySQL string literal (backslashes escape in MySQL's default SQL mode)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@dataclass
class MySQLWarehouse:
    database: str
    user: str
    settings: dict[str, Any]

    def execute(self, *statements: str) -> None:
        con = admin(self.database)
        try:
            with con.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
        finally:
            con.close()

    def connections(self) -> list[int]:
        """The ids of the source's connections (all of them are its user's)."""
        con = admin()
        try:
            with con.cursor() as cursor:
                cursor.execute(
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (self.user,)
                )
                return [row[0] for row in cursor.fetchall()]
        finally:
            con.close()


@contextmanager
def mysql_warehouse(root: Path, request: pytest.FixtureRequest) -> Iterator[Warehouse]:
    require_server(3306, "MariaDB", START)
    name = f"ebb_{uuid.uuid4().hex[:12]}"
    password = f"pw-{uuid.uuid4().hex[:8]}"
    con = admin()
    try:
        with con.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
            cursor.execute(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'")
            cursor.execute(f"GRANT ALL ON {name}.* TO '{name}'@'%'")
        url = f"mysql://{name}:{password}@127.0.0.1:3306/{name}"
        yield MySQLWarehouse(name, name, {"type": "mysql", "url": url})
    finally:
        with con.cursor() as cursor:
            cursor.execute(f"DROP USER IF EXISTS '{name}'@'%'")
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        con.close()


def kill_connection(warehouse: Warehouse) -> None:
    """The server ends the source's connection (an admin's KILL, a failover)."""
    assert isinstance(warehouse, MySQLWarehouse)
    ids = warehouse.connections()
    assert len(ids) == 1, f"expected one reading connection, got {ids}"
    con = admin()
    try:
        with con.cursor() as cursor:
            cursor.execute(f"KILL {ids[0]}")
    finally:
        con.close()


def connection_gone(warehouse: Warehouse) -> None:
    """The source's connection has left the process list (the server ends a thread whose
    client hung up as soon as it notices: look again until a deadline)."""
    assert isinstance(warehouse, MySQLWarehouse)
    deadline = time.monotonic() + 10
    while warehouse.connections() and time.monotonic() < deadline:
        pass
    assert warehouse.connections() == [], "close() left the source's connection open"


CASE = SourceCase(
    type="mysql",
    says="MySQL/MariaDB",
    warehouse=mysql_warehouse,
    id_type="BIGINT",
    columns=(
        Column("int64_max", "BIGINT", "9223372036854775807", pa.int64(), 2**63 - 1),
        Column("int64_min", "BIGINT", "-9223372036854775808", pa.int64(), -(2**63)),
        Column("uint64_max", "BIGINT UNSIGNED", "18446744073709551615", pa.uint64(), 2**64 - 1),
        Column("int32", "INT", "-2147483648", pa.int32(), -(2**31)),
        Column("tiny", "TINYINT", "-128", pa.int8(), -128),
        Column("exact", "DECIMAL(38, 10)", str(DECIMAL), pa.decimal128(38, 10), DECIMAL),
        Column(
            "money",
            "DECIMAL(12, 2) UNSIGNED",
            "1234567890.12",
            pa.decimal128(12, 2),
            Decimal("1234567890.12"),
        ),
        # Wider than decimal128: every digit, as text.
        Column(
            "wide",
            "DECIMAL(65, 30)",
            "12345678901234567890123456789012345.123456789012345678901234567891",
            pa.string(),
            "12345678901234567890123456789012345.123456789012345678901234567891",
        ),
        Column("ratio", "DOUBLE", "3.141592653589793", pa.float64(), 3.141592653589793),
        Column("note", "TEXT", mysql_text(TEXT), pa.string(), TEXT),
        Column("label", "VARCHAR(20)", mysql_text("😀 ok"), pa.string(), "😀 ok"),
        Column("empty", "VARCHAR(10)", "''", pa.string(), ""),
        Column("kind", "ENUM('a', 'b')", "'b'", pa.string(), "b"),
        Column("day", "DATE", "'2024-02-29'", pa.date32(), date(2024, 2, 29)),
        Column("stamp", "DATETIME(6)", f"'{AT}'", pa.timestamp("us"), AT),
        # Written in a +02:00 session: a TIMESTAMP is an instant, read back in UTC.
        Column(
            "stamp_tz",
            "TIMESTAMP(6) NULL",
            f"CONVERT_TZ('{AT}', '+02:00', @@session.time_zone)",
            pa.timestamp("us", tz="UTC"),
            AT_PLUS_2,
        ),
        Column("clock", "TIME(6)", "'13:14:15.5'", pa.time64("us"), day_time(13, 14, 15, 500000)),
        Column("year", "YEAR", "2024", pa.int16(), 2024),
        Column("flags", "BIT(10)", "b'1010101010'", pa.int64(), 0b1010101010),
        Column(
            "doc", "JSON", """'{"b": 1, "a": [1, 2.50]}'""", pa.json_(), '{"b": 1, "a": [1, 2.50]}'
        ),
        Column("bytes", "BLOB", "X'00FF10270A'", pa.binary(), BLOB),
        Column("code", "VARBINARY(8)", "X'00FF10270A'", pa.binary(), BLOB),
        Column("fixed", "BINARY(6)", "X'00FF10270A'", pa.binary(), BLOB + b"\x00"),
    ),
    series=lambda rows: (
        f"SELECT CAST(seq AS SIGNED) AS n, CONCAT('row ', seq) AS label FROM seq_1_to_{rows}"
    ),
    # MariaDB answers NULL to 1/0 in a SELECT; a BIGINT overflow is an error.
    fails_at=lambda at: f"CASE WHEN n = {at} THEN 9223372036854775807 + n ELSE n END",
    fails_saying="out of range",
    lose=kill_connection,
    released=connection_gone,
    marks=(pytest.mark.mariadb,),
)
