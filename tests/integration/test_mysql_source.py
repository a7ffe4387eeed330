"""The MySQL/MariaDB source against the real MariaDB server: types, streaming that holds no
lock a writer waits on, errors that name the source and never the password, and a model
synced through the engine and checked by `ebbtide validate`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from ebbtide.config.workspace import load_workspace
from ebbtide.errors import SourceError
from ebbtide.services.sync import SyncService
from ebbtide.sources import mysql as mysql_source
from ebbtide.sources.mysql import MySQLSource
from ebbtide.values import RunStatus

# source_case first: imported after the case module, it would collect the case module while that
# is half-imported, and the conformance suite in the same session would miss the MySQL case.
from tests.conformance.source_case import TEXT
from tests.conformance.source_cases.mysql import (
    MySQLWarehouse,
    admin,
    connection_gone,
    mysql_text,
    mysql_warehouse,
)

pytestmark = pytest.mark.mariadb


@dataclass
class Database:
    warehouse: MySQLWarehouse
    url: str
    password: str

    def execute(self, *statements: str) -> None:
        self.warehouse.execute(*statements)


@pytest.fixture
def db(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Database]:
    """A database of the test's own, and a user (with a password) that owns it."""
    with mysql_warehouse(tmp_path, request) as warehouse:
        assert isinstance(warehouse, MySQLWarehouse)
        url = warehouse.settings["url"]
        password = url.split(":")[2].split("@")[0]
        yield Database(warehouse, url, password)


@pytest.fixture
def source(db: Database) -> Iterator[MySQLSource]:
    opened = MySQLSource(db.url)
    yield opened
    opened.close()


# --- types -------------------------------------------------------------------------------


def test_a_json_column_arrives_as_json_and_json_built_by_functions_as_text(
    db: Database, source: MySQLSource
) -> None:
    db.execute(
        "CREATE TABLE docs (id INT PRIMARY KEY, doc JSON, plain LONGTEXT)",
        """INSERT INTO docs VALUES (1, '{"tier": 1, "tags": ["a"]}', '{"not": "checked"}')""",
    )

    table = source.read(
        "SELECT id, doc, doc AS renamed, plain, JSON_OBJECT('k', id) AS built FROM docs"
    ).read_all()

    assert [f.type for f in table.schema] == [
        pa.int32(),
        pa.json_(),
        pa.json_(),  # an alias still names the table's column
        pa.string(),  # LONGTEXT without the json_valid check is text
        pa.string(),  # no column to look up: text, which an object field still parses
    ]
    row = table.to_pylist()[0]
    assert json.loads(row["doc"]) == {"tier": 1, "tags": ["a"]}


def test_utf8mb4_text_keeps_every_character(db: Database, source: MySQLSource) -> None:
    db.execute(
        "CREATE TABLE notes (id INT, note VARCHAR(200) CHARACTER SET utf8mb4)",
        f"INSERT INTO notes VALUES (1, {mysql_text(TEXT)})",
    )

    row = source.read("SELECT note, CONCAT(note, '🎉') AS more FROM notes").read_all().to_pylist()

    assert row == [{"note": TEXT, "more": TEXT + "🎉"}]


def test_tinyint_1_and_boolean_stay_integers(db: Database, source: MySQLSource) -> None:
    db.execute(
        "CREATE TABLE flags (id INT, yes BOOLEAN, t TINYINT(1))",
        "INSERT INTO flags VALUES (1, TRUE, 5)",
    )

    table = source.read("SELECT yes, t FROM flags").read_all()

    assert table.schema.types == [pa.int8(), pa.int8()]
    assert table.to_pylist() == [{"yes": 1, "t": 5}]  # TINYINT(1) holds 5 as well


def test_decimal_precision_of_expressions_is_kept_or_wider_ones_are_text(
    source: MySQLSource,
) -> None:
    table = source.read(
        "SELECT 1.5 AS small, CAST(-0.001 AS DECIMAL(5, 3)) AS neg,"
        " CAST(99999999999999999999999999999999999999 AS DECIMAL(38, 0)) AS full_,"
        " CAST(1 AS DECIMAL(60, 20)) AS wide, CAST(3 AS UNSIGNED) AS u"
    ).read_all()

    assert table.schema.types == [
        pa.decimal128(2, 1),
        pa.decimal128(5, 3),
        pa.decimal128(38, 0),
        pa.string(),
        pa.uint32(),  # the server calls CAST(… AS UNSIGNED) of a small number an INT
    ]
    assert table.to_pylist() == [
        {
            "small": Decimal("1.5"),
            "neg": Decimal("-0.001"),
            "full_": Decimal("9" * 38),
            "wide": "1.00000000000000000000",
            "u": 3,
        }
    ]


def test_bit_64_and_unsigned_bigint_beyond_int64_are_exact(
    db: Database, source: MySQLSource
) -> None:
    db.execute(
        "CREATE TABLE wide (b BIT(64), u BIGINT UNSIGNED, b1 BIT(1))",
        f"INSERT INTO wide VALUES (b'{'1' * 64}', 9223372036854775808, b'1')",
    )

    table = source.read("SELECT b, u, b1 FROM wide").read_all()

    assert table.schema.types == [pa.uint64(), pa.uint64(), pa.int64()]
    assert table.to_pylist() == [{"b": 2**64 - 1, "u": 2**63, "b1": 1}]


def test_timestamps_are_utc_whatever_the_servers_zone_and_datetimes_as_written(
    db: Database, source: MySQLSource
) -> None:
    con = admin(db.warehouse.database)
    try:
        with con.cursor() as cursor:
            cursor.execute("SET time_zone = '-05:00'")
            cursor.execute("CREATE TABLE times (at TIMESTAMP NULL, naive DATETIME)")
            cursor.execute(
                "INSERT INTO times VALUES ('2024-06-01 10:00:00', '2024-06-01 10:00:00')"
            )
    finally:
        con.close()

    row = source.read("SELECT at, naive FROM times").read_all().to_pylist()[0]

    assert row["at"].isoformat() == "2024-06-01T15:00:00+00:00"
    assert row["naive"].isoformat() == "2024-06-01T10:00:00"


@pytest.mark.parametrize(
    ("sql_type", "literal", "says"),
    [
        ("DATE", "'0000-00-00'", "zero date"),
        ("DATETIME", "'0000-00-00 00:00:00'", "zero date"),
        ("TIME", "'25:00:00'", "TIME_TO_SEC"),
        ("TIME", "'-01:00:00'", "TIME_TO_SEC"),
    ],
)
def test_a_value_arrow_cannot_hold_is_a_source_error_naming_column_and_value(
    db: Database, source: MySQLSource, sql_type: str, literal: str, says: str
) -> None:
    db.execute(
        "SET SESSION sql_mode = ''",
        f"CREATE TABLE odd (id INT, x {sql_type})",
        f"INSERT INTO odd VALUES (1, NULL), (2, {literal})",
    )

    with pytest.raises(SourceError) as raised:
        source.read("SELECT id, x FROM odd ORDER BY id").read_all()

    message = str(raised.value)
    assert "column 'x'" in message and literal.strip("'") in message and says in message
    assert "MySQL/MariaDB" in message


# --- streaming and locks -----------------------------------------------------------------


def statements_of(user: str) -> list[tuple[str, str]]:
    """What the user's connections are running: (state, statement)."""
    con = admin()
    try:
        with con.cursor() as cursor:
            cursor.execute(
                "SELECT STATE, INFO FROM information_schema.PROCESSLIST"
                " WHERE USER = %s AND COMMAND = 'Query'",
                (user,),
            )
            return list(cursor.fetchall())
    finally:
        con.close()


def test_rows_stream_while_the_server_still_sends_and_close_ends_the_statement(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mysql_source, "BATCH_ROWS", 100)
    source = MySQLSource(db.url)
    query = "SELECT seq AS n, REPEAT('x', 200) AS pad FROM seq_1_to_1000000"  # 200 MB

    first = source.read(query).read_next_batch()
    sending = statements_of(db.warehouse.user)
    source.close()

    assert first.num_rows == 100
    assert sending == [("Writing to net", query)], "the server should wait for us to read"
    connection_gone(db.warehouse)


def test_a_writer_updates_the_table_while_a_read_is_in_progress(
    db: Database, source: MySQLSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mysql_source, "BATCH_ROWS", 1000)
    db.execute(
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance INT) ENGINE=InnoDB",
        "INSERT INTO accounts SELECT seq, 0 FROM seq_1_to_100000",
    )
    reader = source.read("SELECT id, balance FROM accounts ORDER BY id")
    assert reader.read_next_batch().num_rows == 1000  # the read is under way

    writer = admin(db.warehouse.database)
    try:
        with writer.cursor() as cursor:
            # One second to get its locks: a lock the read held would fail this at once.
            cursor.execute("SET SESSION innodb_lock_wait_timeout = 1, lock_wait_timeout = 1")
            cursor.execute("BEGIN")
            changed = cursor.execute("UPDATE accounts SET balance = 7 WHERE id IN (1, 99999)")
            cursor.execute("INSERT INTO accounts VALUES (100001, 7)")
            cursor.execute("COMMIT")
    finally:
        writer.close()

    rest = reader.read_all()
    assert changed == 2
    assert rest.num_rows >= 99_000  # the read finished after the writer committed


def test_the_session_reads_committed_rows_read_only_in_utc(source: MySQLSource) -> None:
    row = (
        source.read(
            "SELECT @@session.tx_isolation AS isolation, @@session.tx_read_only AS read_only,"
            " @@session.time_zone AS zone"
        )
        .read_all()
        .to_pylist()[0]
    )

    assert row == {"isolation": "READ-COMMITTED", "read_only": 1, "zone": "+00:00"}


def test_a_model_cannot_write_to_the_warehouse(db: Database, source: MySQLSource) -> None:
    db.execute("CREATE TABLE kept (id INT)")

    with pytest.raises(SourceError, match="READ ONLY"):
        source.read("INSERT INTO kept VALUES (1)")


def test_a_killed_connection_is_reported_and_the_source_reconnects(
    db: Database, source: MySQLSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mysql_source, "BATCH_ROWS", 100)
    reader = source.read("SELECT seq AS n, REPEAT('x', 200) AS pad FROM seq_1_to_1000000")
    reader.read_next_batch()
    [connection] = db.warehouse.connections()
    con = admin()
    try:
        with con.cursor() as cursor:
            cursor.execute(f"KILL {connection}")
    finally:
        con.close()

    with pytest.raises(SourceError) as raised:
        reader.read_all()

    message = str(raised.value)
    assert "connection to MySQL/MariaDB at mysql://" in message and "was lost" in message
    assert db.password not in message and "***" in message
    assert source.read("SELECT 1 AS one").read_all().to_pylist() == [{"one": 1}]


# --- connection errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://ebb:s3cr3t-pw-XYZ@127.0.0.1:1/test", "Can't connect"),
        ("mysql://ebb:s3cr3t-pw-XYZ@127.0.0.1:3306/test", "Access denied"),
        ("mysql://ebb:s3cr3t-pw-XYZ@127.0.0.1:notaport/test", "Port could not be cast"),
        ("mysql://ebb:s3cr3t-pw-XYZ@127.0.0.1:3306/test?bogus=1", "bogus"),
        ("postgres://ebb:s3cr3t-pw-XYZ@127.0.0.1:3306/test", "must be a mysql:// URL"),
        ("mysql://ebb:s3cr3t%2Dpw%2DXYZ@127.0.0.1:1/test", "Can't connect"),
    ],
)
def test_connection_errors_name_the_server_and_never_the_password(url: str, expected: str) -> None:
    with pytest.raises(SourceError) as raised:
        MySQLSource(url)

    message = str(raised.value)
    assert expected in message and "MySQL/MariaDB" in message
    assert "s3cr3t" not in message
    assert "***" in message and "127.0.0.1" in message


def test_a_bad_url_in_the_workspace_is_refused_without_repeating_it(tmp_path: Path) -> None:
    (tmp_path / "ebbtide.yml").write_text(
        "sources:\n  warehouse: {type: mysql, url: 'mysql://ebb:s3cr3t@127.0.0.1:99999999/t'}\n"
    )

    checked = validate(tmp_path, "--offline")

    assert checked.returncode == 2
    assert "sources.warehouse.url: is not a valid MySQL URL" in checked.stderr
    assert "s3cr3t" not in checked.stderr + checked.stdout


# --- through the engine ------------------------------------------------------------------

WORKSPACE = """\
sources:
  warehouse: {{type: mysql, url: "{url}"}}
models:
  accounts:
    source: warehouse
    primary_key: id
    sql: SELECT id, name, balance, opened_at, meta FROM accounts
destinations:
  out: {{type: file, path: out.jsonl}}
  hook:
    type: webhook
    url: http://127.0.0.1:9/ingest
    fields: [{{name: name, type: string}}, {{name: score, type: number}}]
mappings:
  accounts_out:
    model: accounts
    destination: out
    action: append
    fields: {{name: name, balance: balance, opened_at: opened_at, meta: meta}}
  accounts_hook:
    model: accounts
    destination: hook
    action: upsert
    fields: {{name: name, score: {score}}}
"""


def write_workspace(root: Path, db: Database, score: str) -> None:
    (root / "ebbtide.yml").write_text(WORKSPACE.format(url=db.url, score=score))


def validate(root: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ebbtide", "-w", str(root), "validate", *options],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "400"},
    )


def test_a_mariadb_model_is_validated_and_syncs_through_the_engine(
    tmp_path: Path, db: Database
) -> None:
    db.execute(
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, name VARCHAR(50), balance DECIMAL(14, 2),"
        " opened_at TIMESTAMP NULL, meta JSON)",
        "INSERT INTO accounts SELECT seq, CONCAT('acct ', seq, ' 😀'), seq * 100.25,"
        " TIMESTAMP('2024-01-01') + INTERVAL seq DAY, JSON_OBJECT('tier', seq % 2)"
        " FROM seq_1_to_30",
    )
    write_workspace(tmp_path, db, score="balance")

    checked = validate(tmp_path)
    service = SyncService(load_workspace(tmp_path))
    try:
        run = service.run("accounts_out")
    finally:
        service.state.dispose()

    assert checked.returncode == 0, checked.stderr
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert (run.status, run.extracted, run.added, run.loaded_new) == (RunStatus.SUCCESS, 30, 30, 30)
    third = next(line for line in lines if line["key"] == 3)
    assert third["data"] == {
        "name": "acct 3 😀",
        "balance": 300.75,
        "opened_at": "2024-01-04T00:00:00.000000Z",
        "meta": {"tier": 1},  # the JSON column is sent as JSON, not as its text
    }


def test_validate_checks_mappings_against_the_mariadb_models_columns(
    tmp_path: Path, db: Database
) -> None:
    db.execute(
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, name VARCHAR(50), balance DECIMAL(14, 2),"
        " opened_at TIMESTAMP NULL, meta JSON)"
    )
    write_workspace(tmp_path, db, score="opened_at")

    checked = validate(tmp_path)

    assert checked.returncode == 2, checked.stderr
    assert "field 'score'" in checked.stderr and "cannot be sent as a number" in checked.stderr
    assert db.password not in checked.stderr + checked.stdout
