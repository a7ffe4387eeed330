"""The PostgreSQL source against a real server: Arrow types, streaming, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest

from ebbtide.config.workspace import load_workspace
from ebbtide.errors import SourceError
from ebbtide.services.sync import SyncService
from ebbtide.sources import postgres as pg_source
from ebbtide.sources.postgres import PostgresSource
from ebbtide.values import RunStatus

pytestmark = pytest.mark.postgres

TYPES_TABLE = """
CREATE TABLE {schema}.typed (
    id int8 PRIMARY KEY, small int2, normal int4, real4 float4, double8 float8,
    money numeric(12, 2), exact numeric, wide numeric(50, 5), label text, code varchar(10),
    flag bool, day date, at timestamp, at_tz timestamptz, doc json, docb jsonb, ident uuid,
    blob bytea, span interval, tags text[]
)
"""
TYPES_ROW = """
INSERT INTO {schema}.typed VALUES (
    1, 7, 70000, 1.5, 2.25, 1234567890.12,
    123456789012345678901234567890.000000000000000000000000000001,
    123456789012345678901234567890123456789012345.12345, 'hello', 'AB-1',
    true, '2024-02-29', '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15+02',
    '{{"b": 1, "a": [1, 2]}}', '{{"z": {{"n": null}}, "a": 1.50}}',
    '6f1f6b0e-2c5c-4b7e-9d0a-3f4e5a6b7c8d', '\\x00ff10', '1 day 02:00:00', '{{x,y}}'
)
"""


@pytest.fixture
def source(pg_dsn: str, pg_schema: str) -> Iterator[PostgresSource]:
    """Closed before the schema is dropped: an unread cursor holds locks on its tables."""
    running = PostgresSource(pg_dsn)
    yield running
    running.close()


def execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture
def typed(pg_dsn: str, pg_schema: str) -> str:
    """A table with a column of each supported type, one full row and one all-NULL row."""
    execute(
        pg_dsn,
        TYPES_TABLE.format(schema=pg_schema),
        TYPES_ROW.format(schema=pg_schema),
        f"INSERT INTO {pg_schema}.typed (id) VALUES (2)",
    )
    return f"SELECT * FROM {pg_schema}.typed ORDER BY id"


def test_columns_come_out_as_the_arrow_type_of_their_postgres_type(
    source: PostgresSource, typed: str
) -> None:
    schema = source.read(typed).schema

    assert {field.name: field.type for field in schema} == {
        "id": pa.int64(),
        "small": pa.int16(),
        "normal": pa.int32(),
        "real4": pa.float64(),
        "double8": pa.float64(),
        "money": pa.decimal128(12, 2),
        "exact": pa.string(),
        "wide": pa.string(),
        "label": pa.string(),
        "code": pa.string(),
        "flag": pa.bool_(),
        "day": pa.date32(),
        "at": pa.timestamp("us"),
        "at_tz": pa.timestamp("us", tz="UTC"),
        "doc": pa.json_(),
        "docb": pa.json_(),
        "ident": pa.string(),
        "blob": pa.binary(),
        "span": pa.string(),
        "tags": pa.string(),
    }


def test_values_survive_the_trip_exactly(source: PostgresSource, typed: str) -> None:
    row = source.read(typed).read_all().to_pylist()[0]

    assert row["small"] == 7 and row["normal"] == 70000 and row["real4"] == 1.5
    assert row["money"] == Decimal("1234567890.12")
    assert row["day"] == date(2024, 2, 29)
    assert row["at"] == datetime(2024, 2, 29, 13, 14, 15, 123456, tzinfo=UTC).replace(tzinfo=None)
    assert row["at_tz"] == datetime(2024, 2, 29, 11, 14, 15, tzinfo=UTC)
    assert row["ident"] == "6f1f6b0e-2c5c-4b7e-9d0a-3f4e5a6b7c8d"
    assert row["blob"] == b"\x00\xff\x10"
    assert row["span"] == "1 day 02:00:00"
    assert row["tags"] == "{x,y}"


def test_numerics_wider_than_a_decimal_keep_every_digit_as_text(
    source: PostgresSource, typed: str
) -> None:
    row = source.read(typed).read_all().to_pylist()[0]

    assert row["exact"] == "123456789012345678901234567890.000000000000000000000000000001"
    assert row["wide"] == "123456789012345678901234567890123456789012345.12345"


def test_tiny_unconstrained_numerics_are_written_without_exponent(
    source: PostgresSource,
) -> None:
    table = source.read("SELECT 0.0000001::numeric AS tiny, 1e20::numeric AS huge").read_all()

    assert table.to_pylist() == [{"tiny": "0.0000001", "huge": "100000000000000000000"}]


def test_json_and_jsonb_arrive_as_their_json_text(source: PostgresSource, typed: str) -> None:
    row = source.read(typed).read_all().to_pylist()[0]

    assert json.loads(row["doc"]) == {"b": 1, "a": [1, 2]}
    assert json.loads(row["docb"]) == {"z": {"n": None}, "a": 1.50}
    assert row["docb"] == '{"a": 1.50, "z": {"n": null}}'  # jsonb's own text, digits kept


def test_nulls_come_out_as_nulls_in_every_column(source: PostgresSource, typed: str) -> None:
    row = source.read(typed).read_all().to_pylist()[1]

    assert row.pop("id") == 2
    assert set(row.values()) == {None}


def test_rows_stream_in_batches_of_batch_rows(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Streaming itself (binary COPY read batch by batch, memory flat) is shown in
    # tests/integration/test_postgres_extract.py.
    monkeypatch.setattr(pg_source, "BATCH_ROWS", 100)
    source = PostgresSource(pg_dsn)
    try:
        reader = source.read("SELECT i AS n, 'row ' || i AS label FROM generate_series(1, 1050) i")
        batches = list(reader)
    finally:
        source.close()

    assert [len(b) for b in batches] == [100] * 10 + [50]
    assert {b.schema for b in batches} == {pa.schema([("n", pa.int32()), ("label", pa.string())])}
    assert sum(b.column("n").to_pylist()[-1] == 1050 for b in batches) == 1


def test_a_column_null_in_the_first_batch_keeps_its_declared_type(
    source: PostgresSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_source, "BATCH_ROWS", 10)
    reader = source.read(
        "SELECT i, CASE WHEN i > 15 THEN i * 1.5 END::numeric(8, 1) AS late"
        " FROM generate_series(1, 20) i"
    )

    table = reader.read_all()

    assert table.schema.field("late").type == pa.decimal128(8, 1)
    assert table.column("late").to_pylist()[-1] == Decimal("30.0")


def test_sql_error_raises_source_error_with_the_database_message(
    source: PostgresSource,
) -> None:
    with pytest.raises(SourceError, match='relation "no_such_table" does not exist'):
        source.read("SELECT * FROM no_such_table")


def test_error_while_streaming_raises_source_error(
    source: PostgresSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_source, "BATCH_ROWS", 100)
    reader = source.read("SELECT 1 / (i - 250) AS x FROM generate_series(1, 300) i")

    with pytest.raises(SourceError, match="division by zero"):
        reader.read_all()
    # the connection is usable again afterwards
    assert source.read("SELECT 1 AS one").read_all().to_pylist() == [{"one": 1}]


def test_nan_in_a_fixed_precision_numeric_is_a_clear_source_error(
    source: PostgresSource,
) -> None:
    with pytest.raises(SourceError, match="column 'x' holds NaN"):
        source.read("SELECT 'NaN'::numeric(10, 2) AS x").read_all()


def test_the_source_reads_in_a_read_only_transaction(
    source: PostgresSource, pg_dsn: str, pg_schema: str
) -> None:
    execute(pg_dsn, f"CREATE SEQUENCE {pg_schema}.counter")

    with pytest.raises(SourceError, match="read-only transaction"):
        source.read(f"SELECT nextval('{pg_schema}.counter') AS n")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://ebb:s3cr3t-pw-XYZ@127.0.0.1:1/test", "Connection refused"),
        ("postgresql://ebb:s3cr3t-pw-XYZ@127.0.0.1:notaport/test", "notaport"),
        ("postgresql://ebb:s3cr3t-pw-XYZ@[::1/test", "IPv6"),
        ("postgresql://ebb@127.0.0.1:1/test?password=s3cr3t-pw-XYZ&bogus=1", "bogus"),
        ("postgresql://ebb:s3cr3t%2Dpw%2DXYZ@127.0.0.1:1/test", "Connection refused"),
    ],
)
def test_connection_errors_never_show_the_password(url: str, expected: str) -> None:
    with pytest.raises(SourceError) as raised:
        PostgresSource(url)

    message = str(raised.value)
    assert expected in message
    assert "s3cr3t" not in message
    assert "***" in message


WORKSPACE = """\
sources:
  warehouse: {{type: postgres, url: "{url}"}}
models:
  accounts:
    source: warehouse
    primary_key: id
    sql: SELECT id, name, balance, opened_at, meta FROM {schema}.accounts
destinations:
  out: {{type: file, path: out.jsonl}}
mappings:
  accounts_out:
    model: accounts
    destination: out
    action: append
    fields: {{name: name, balance: balance, opened_at: opened_at, meta: meta}}
"""


def test_a_postgres_model_syncs_through_the_engine(
    tmp_path: Path, pg_dsn: str, pg_schema: str
) -> None:
    execute(
        pg_dsn,
        f"CREATE TABLE {pg_schema}.accounts (id int8 PRIMARY KEY, name text,"
        " balance numeric(14, 2), opened_at timestamptz, meta jsonb)",
        f"INSERT INTO {pg_schema}.accounts SELECT i, 'acct ' || i, i * 100.25,"
        " '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 day',"
        " jsonb_build_object('tier', i % 2) FROM generate_series(1, 30) i",
    )
    (tmp_path / "ebbtide.yml").write_text(WORKSPACE.format(url=pg_dsn, schema=pg_schema))
    service = SyncService(load_workspace(tmp_path))
    try:
        run = service.run("accounts_out")
    finally:
        service.state.dispose()

    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert (run.status, run.extracted, run.added, run.loaded_new) == (RunStatus.SUCCESS, 30, 30, 30)
    third = next(line for line in lines if line["key"] == 3)
    assert third["data"] == {
        "name": "acct 3",
        "balance": 300.75,
        "opened_at": "2024-01-04T00:00:00.000000Z",
        "meta": {"tier": 1},  # jsonb is sent as JSON, not as its text
    }


def test_a_model_failing_mid_stream_fails_the_run_with_the_source_message(
    tmp_path: Path, pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_source, "BATCH_ROWS", 10)
    execute(
        pg_dsn,
        f"CREATE TABLE {pg_schema}.accounts (id int8 PRIMARY KEY, name text,"
        " balance numeric(14, 2), opened_at timestamptz, meta jsonb)",
        f"INSERT INTO {pg_schema}.accounts SELECT i, 'acct ' || i, 1, now(), '{{}}'"
        " FROM generate_series(1, 30) i",
    )
    workspace = WORKSPACE.replace(
        "SELECT id, name, balance", "SELECT id, name, 1 / (id - 25) AS balance"
    )
    (tmp_path / "ebbtide.yml").write_text(workspace.format(url=pg_dsn, schema=pg_schema))
    service = SyncService(load_workspace(tmp_path))
    try:
        run = service.run("accounts_out")
    finally:
        service.state.dispose()

    assert run.status is RunStatus.FAILED
    assert run.error is not None and "division by zero" in run.error
