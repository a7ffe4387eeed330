"""The PostgreSQL source's binary COPY path (ADBC): what the server casts to text, what stays
binary, what is refused, and that a read streams in bounded memory and never ends early.

The conformance suite (tests/conformance/test_sources.py -k postgres) covers the promised
types, NULLs, batches, errors and close; these tests cover what that path adds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import psycopg
import pyarrow as pa
import pytest

from ebbtide.errors import SourceError
from ebbtide.ports import iter_batches
from ebbtide.sources import postgres as pg_source
from ebbtide.sources.postgres import PostgresSource, numeric_type

pytestmark = pytest.mark.postgres


def execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def url_for(dsn: str, schema: str) -> str:
    """The schema as search path, and a session zone far from UTC."""
    options = quote(f"-c search_path={schema} -c TimeZone=Asia/Kathmandu")
    return f"{dsn}{'&' if '?' in dsn else '?'}options={options}"


@pytest.fixture
def source(pg_dsn: str, pg_schema: str) -> Iterator[PostgresSource]:
    running = PostgresSource(url_for(pg_dsn, pg_schema))
    yield running
    running.close()


def test_types_without_an_exact_binary_form_arrive_as_the_text_postgres_prints(
    source: PostgresSource, pg_dsn: str, pg_schema: str
) -> None:
    execute(
        pg_dsn,
        f"CREATE TYPE {pg_schema}.mood AS ENUM ('sad', 'ok')",
        f"CREATE DOMAIN {pg_schema}.positive AS int4 CHECK (VALUE > 0)",
    )
    table = source.read(
        "SELECT '6f1f6b0e-2c5c-4b7e-9d0a-3f4e5a6b7c8d'::uuid AS ident,"
        " interval '1 day 02:00:00.5' AS span, ARRAY[1, NULL, 3] AS ints,"
        " ARRAY['a b', 'c'] AS texts, 'ok'::mood AS feeling, 7::positive AS dom,"
        " '192.168.0.1/24'::inet AS net, 'hello'::name AS nm, 'ab'::char(4) AS padded,"
        " '{\"k\": [1, 2.50]}'::jsonb #> '{k}' AS path, 42::oid AS o, 'a'::\"char\" AS letter"
    ).read_all()

    assert table.to_pylist() == [
        {
            "ident": "6f1f6b0e-2c5c-4b7e-9d0a-3f4e5a6b7c8d",
            "span": "1 day 02:00:00.5",
            "ints": "{1,NULL,3}",
            "texts": '{"a b",c}',
            "feeling": "ok",
            "dom": 7,
            "net": "192.168.0.1/24",
            "nm": "hello",
            "padded": "ab  ",
            "path": "[1, 2.50]",
            "o": 42,
            "letter": "a",
        }
    ]
    assert table.schema.field("dom").type == pa.int32()  # a domain reads as its base type
    assert table.schema.field("o").type == pa.int64()  # oid is unsigned 32-bit
    assert table.schema.field("path").type == pa.json_()


def test_a_float4_keeps_its_shortest_decimal_form_as_a_double(source: PostgresSource) -> None:
    table = source.read("SELECT 0.1::float4 AS f, 'NaN'::float4 AS nan, 1.5::float4 AS x")

    row = table.read_all().to_pylist()[0]

    assert row["f"] == 0.1  # not 0.10000000149011612, the float32 widened
    assert row["nan"] != row["nan"] and row["x"] == 1.5
    assert table.schema.field("f").type == pa.float64()


def test_numerics_keep_their_digits_and_non_numbers_are_text_when_unconstrained(
    source: PostgresSource,
) -> None:
    table = source.read(
        "SELECT 'NaN'::numeric AS nan, 'Infinity'::numeric AS inf, 0.000::numeric AS zeros,"
        " (-0.5)::numeric(3, 1) AS neg, 99999999999999999999999999.999999999999::numeric(38, 12)"
        " AS widest, 1.5::numeric(39, 1) AS too_wide"
    ).read_all()

    assert table.to_pylist() == [
        {
            "nan": "NaN",
            "inf": "Infinity",
            "zeros": "0.000",
            "neg": Decimal("-0.5"),
            "widest": Decimal("99999999999999999999999999.999999999999"),
            "too_wide": "1.5",
        }
    ]
    assert table.schema.field("widest").type == pa.decimal128(38, 12)


@pytest.mark.parametrize(
    ("typmod", "expected"),
    [(-1, pa.string()), ((12 << 16 | 2) + 4, pa.decimal128(12, 2)), ((39 << 16) + 4, pa.string())],
)
def test_numeric_typmods_map_to_decimals_only_within_38_digits(
    typmod: int, expected: pa.DataType
) -> None:
    assert numeric_type(typmod) == expected


@pytest.mark.parametrize(
    ("sql_type", "value", "says"),
    [
        ("numeric(10, 2)", "NaN", "holds NaN"),
        ("timestamptz", "infinity", "holds infinity"),
        ("timestamptz", "-infinity", "holds infinity"),
        ("timestamp", "-infinity", "holds infinity"),
        ("timestamp", "infinity", "holds infinity"),
        ("date", "infinity", "holds infinity"),
        ("date", "-infinity", "holds infinity"),
    ],
)
def test_values_arrow_cannot_hold_are_source_errors_naming_the_column(
    source: PostgresSource, pg_dsn: str, pg_schema: str, sql_type: str, value: str, says: str
) -> None:
    execute(
        pg_dsn,
        f"CREATE TABLE {pg_schema}.odd (i int, x {sql_type})",
        f"INSERT INTO {pg_schema}.odd SELECT i, CASE WHEN i = 3 THEN '{value}'"
        f" ELSE '2024-02-29' END::{sql_type} FROM generate_series(1, 5) i"
        if "numeric" not in sql_type
        else f"INSERT INTO {pg_schema}.odd SELECT i, CASE WHEN i = 3 THEN '{value}'"
        f" ELSE '1.5' END::{sql_type} FROM generate_series(1, 5) i",
    )

    with pytest.raises(SourceError, match=f"column 'x'.* {says}"):
        source.read("SELECT i, x FROM odd ORDER BY i").read_all()
    assert source.read("SELECT 1 AS one").read_all().to_pylist() == [{"one": 1}]


def test_the_earliest_and_latest_dates_are_not_taken_for_infinity(source: PostgresSource) -> None:
    table = source.read(
        "SELECT '4714-11-24 BC'::date AS low, '5874897-12-31'::date AS high,"
        " '4714-11-24 00:00:00 BC'::timestamp AS early, '2024-02-29'::timestamptz AS now"
    ).read_all()

    assert table.column("low").cast(pa.int32()).to_pylist() == [-2_440_588]
    assert table.column("high").cast(pa.int32()).to_pylist() == [2_145_042_905]
    assert table.column("early").cast(pa.int64()).to_pylist() == [-2_440_588 * 86_400_000_000]


def test_a_timestamp_past_what_arrow_counts_is_an_error_not_a_wrapped_value(
    source: PostgresSource,
) -> None:
    with pytest.raises(SourceError, match="column 'late'.* year past 294,000"):
        source.read("SELECT '294276-12-31 23:59:59'::timestamp AS late").read_all()


def test_columns_keep_their_names_order_and_rows_their_order_through_the_casts(
    source: PostgresSource,
) -> None:
    table = source.read(
        'SELECT i AS "x", i = 2 AS "x", interval \'1 hour\' * i AS "we""ird",'
        " i::numeric AS n FROM generate_series(1, 3) i ORDER BY i DESC -- a comment\n;"
    ).read_all()

    assert table.column_names == ["x", "x", 'we"ird', "n"]
    assert table.column(0).to_pylist() == [3, 2, 1]
    assert table.column(1).to_pylist() == [False, True, False]
    assert table.column(2).to_pylist() == ["03:00:00", "02:00:00", "01:00:00"]
    assert table.column(3).to_pylist() == ["3", "2", "1"]


def test_batches_are_joined_and_cut_to_batch_rows(
    source: PostgresSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_source, "BATCH_ROWS", 1000)
    reader = source.read("SELECT i, repeat('x', i % 50) AS s FROM generate_series(1, 10500) i")

    batches = list(iter_batches(reader))

    assert [b.num_rows for b in batches] == [1000] * 10 + [500]
    numbers = [n for b in batches for n in b.column("i").to_pylist()]
    assert numbers == list(range(1, 10501))


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def test_a_result_far_larger_than_a_batch_streams_in_flat_memory(
    source: PostgresSource, pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_source, "BATCH_ROWS", 10_000)
    rows, width = 150_000, 2000  # 300 MB of text; a batch is 20 MB
    execute(
        pg_dsn,
        f"CREATE TABLE {pg_schema}.wide AS SELECT i, repeat(md5(i::text), {width // 32}) AS pad,"
        f" i * 1.5 AS n FROM generate_series(1, {rows}) i",
    )
    reader = source.read("SELECT i, pad, n FROM wide")
    start, peak, seen = _rss_mb(), 0.0, 0
    for batch in iter_batches(reader):
        seen += batch.num_rows
        peak = max(peak, _rss_mb())
        del batch

    assert seen == rows
    assert peak - start < 120, f"memory grew by {peak - start:.0f} MB reading 300 MB"


def test_a_new_query_before_the_last_is_read_makes_the_old_reader_fail_not_end_early(
    source: PostgresSource, pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_source, "BATCH_ROWS", 1000)
    execute(pg_dsn, f"CREATE TABLE {pg_schema}.big AS SELECT i FROM generate_series(1, 500000) i")
    first = source.read("SELECT i FROM big")
    assert first.read_next_batch().num_rows == 1000

    started = time.monotonic()
    second = source.read("SELECT count(*) AS n FROM big").read_all()
    elapsed = time.monotonic() - started

    assert second.to_pylist() == [{"n": 500000}]
    assert elapsed < 5, "the abandoned COPY should be cancelled, not read to its end"
    with pytest.raises(SourceError, match="asked for another query"):
        for _ in iter_batches(first):
            pass


def test_the_session_is_read_only_for_copy_too(
    source: PostgresSource, pg_dsn: str, pg_schema: str
) -> None:
    execute(pg_dsn, f"CREATE TABLE {pg_schema}.t (i int)")

    with pytest.raises(SourceError, match="read-only transaction"):
        source.read("WITH w AS (INSERT INTO t VALUES (1) RETURNING i) SELECT i FROM w")


def test_a_connection_lost_mid_read_says_so(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(pg_source, "BATCH_ROWS", 1000)
    app = f"ebbtide_extract_{pg_schema}"[:60]
    source = PostgresSource(f"{url_for(pg_dsn, pg_schema)}&application_name={app}")
    try:
        reader = source.read("SELECT i, repeat('y', 100) AS s FROM generate_series(1, 2000000) i")
        assert reader.read_next_batch().num_rows == 1000
        killer = threading.Thread(
            target=execute,
            args=(
                pg_dsn,
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
                f" WHERE application_name = '{app}'",
            ),
        )
        killer.start()
        killer.join()
        with pytest.raises(SourceError, match="was lost while reading") as raised:
            for _ in iter_batches(reader):
                pass
        assert "PostgreSQL at" in str(raised.value)
    finally:
        source.close()


def test_errors_give_the_servers_words_without_the_copy_statement(
    source: PostgresSource,
) -> None:
    with pytest.raises(SourceError) as raised:
        source.read("SELECT 1 / (i - 3) AS x, 1.5::numeric AS n FROM generate_series(1, 5) i")

    message = str(raised.value)
    assert "division by zero" in message
    assert "COPY" not in message and "q.c0" not in message


def test_a_closed_source_refuses_to_read(pg_dsn: str) -> None:
    source = PostgresSource(pg_dsn)
    source.close()

    with pytest.raises(SourceError, match="PostgreSQL source at .* is closed"):
        source.read("SELECT 1 AS one")
