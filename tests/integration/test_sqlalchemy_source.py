"""The SQLAlchemy source: the whole source conformance suite against SQLite through
`sqlite:///` (PostgreSQL through `postgresql+psycopg://` is the suite's own case), plus what
the suite does not check: server-side cursors, misfits named by row, drivers not installed,
models that only read, and a sync through the engine."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pyarrow as pa
import pytest
import yaml

from ebbtide.config.workspace import load_workspace
from ebbtide.errors import ConfigErrors, SourceError
from ebbtide.ports import AdapterContext, iter_batches
from ebbtide.services.sync import SyncService
from ebbtide.sources import SOURCES
from ebbtide.sources import sqlalchemy as sa_source
from ebbtide.sources.sqlalchemy import SQLAlchemySource
from ebbtide.values import RunStatus
from tests.conformance import test_sources as suite
from tests.conformance.source_case import SourceCase
from tests.conformance.source_cases.sqlalchemy import SQLITE_CASE
from tests.conformance.test_sources import sources, warehouse  # noqa: F401  (the suite's fixtures)

# --- the conformance suite against SQLite through SQLAlchemy --------------------------------


@pytest.fixture
def case() -> SourceCase:
    return SQLITE_CASE


for _name in dir(suite):
    if _name.startswith("test_"):
        globals()[f"{_name}_on_sqlite"] = getattr(suite, _name)


# --- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture
def pg(pg_dsn: str, pg_schema: str) -> Iterator[tuple[str, str]]:
    """A postgresql+psycopg:// URL whose connection names itself, and that name."""
    app = f"ebbtide_sa_{uuid.uuid4().hex[:10]}"
    options = quote(f"-c search_path={pg_schema}")
    url = pg_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{url}?application_name={app}&options={options}", app


def execute(dsn: str, schema: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}") as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.mark.postgres
def test_postgres_rows_stream_through_a_server_side_cursor(
    pg: tuple[str, str], pg_dsn: str, pg_schema: str
) -> None:
    url, app = pg
    execute(pg_dsn, pg_schema, "CREATE TABLE big AS SELECT i FROM generate_series(1, 200000) i")
    source = SQLAlchemySource(url)
    try:
        reader = source.read("SELECT i FROM big")
        first = reader.read_next_batch()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            cursors = conn.execute(
                "SELECT query FROM pg_stat_activity WHERE application_name = %s", (app,)
            ).fetchall()
        rest = sum(batch.num_rows for batch in iter_batches(reader))
    finally:
        source.close()

    assert first.num_rows == 65_536 and first.num_rows + rest == 200_000
    # The source's session is fetching from a cursor it declared, not holding every row.
    assert len(cursors) == 1, cursors
    fetched = re.match(r"FETCH FORWARD (\d+) FROM", cursors[0][0])
    assert fetched is not None and 0 < int(fetched[1]) <= 65_536, cursors


@pytest.mark.postgres
def test_a_value_that_does_not_fit_names_the_column_and_the_row(
    pg: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sa_source, "BATCH_ROWS", 10)
    source = SQLAlchemySource(pg[0])
    try:
        reader = source.read(
            "SELECT id, CASE WHEN id = 13 THEN 'NaN' ELSE id::numeric END::numeric(10, 2) AS amount"
            " FROM generate_series(1, 20) id ORDER BY id"
        )
        assert reader.read_next_batch().num_rows == 10
        with pytest.raises(SourceError) as raised:
            reader.read_next_batch()
    finally:
        source.close()

    message = str(raised.value)
    assert "column 'amount'" in message and "row 13 (id = 13)" in message
    assert "Decimal('NaN')" in message and "postgresql+psycopg://" in message


@pytest.mark.postgres
def test_a_percent_sign_in_the_sql_is_not_a_parameter(pg: tuple[str, str]) -> None:
    source = SQLAlchemySource(pg[0])
    try:
        rows = source.read("SELECT 'a%' AS p WHERE 'abc' LIKE 'a%%' OR 'abc' LIKE 'a%'")
        assert rows.read_all().to_pylist() == [{"p": "a%"}]
    finally:
        source.close()


@pytest.mark.postgres
def test_a_model_that_writes_is_refused_and_rolled_back(
    pg: tuple[str, str], pg_dsn: str, pg_schema: str
) -> None:
    execute(pg_dsn, pg_schema, "CREATE TABLE kept AS SELECT 1 AS id")
    source = SQLAlchemySource(pg[0])
    try:
        with pytest.raises(SourceError, match="postgresql"):
            source.read("DELETE FROM kept RETURNING id").read_all()
    finally:
        source.close()

    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute(f"SELECT count(*) FROM {pg_schema}.kept").fetchone() == (1,)


@pytest.mark.postgres
def test_a_wrong_password_is_not_repeated(pg_dsn: str) -> None:
    url = pg_dsn.replace("postgresql://postgres@", "postgresql+psycopg://nobody:s3cr3t@", 1)

    with pytest.raises(SourceError) as raised:
        SQLAlchemySource(url)

    message = str(raised.value)
    assert "cannot connect to postgresql+psycopg://nobody:***@" in message
    assert "s3cr3t" not in message


# --- SQLite ----------------------------------------------------------------------------------


def test_sqlite_values_unlike_the_first_batch_name_the_column_and_the_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sa_source, "BATCH_ROWS", 10)
    with sqlite3.connect(tmp_path / "w.sqlite") as con:
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x INTEGER)")
        con.executemany("INSERT INTO t VALUES (?, ?)", [(i, i) for i in range(1, 15)])
        con.execute("INSERT INTO t VALUES (15, 'abc')")
    source = SQLAlchemySource(f"sqlite:///{tmp_path / 'w.sqlite'}")
    try:
        reader = source.read("SELECT id, x FROM t ORDER BY id")
        with pytest.raises(SourceError) as raised:
            reader.read_all()
    finally:
        source.close()

    assert "column 'x'" in str(raised.value) and "'abc' in row 15 (id = 15)" in str(raised.value)


def test_sqlite_values_of_two_types_in_the_first_batch_name_the_row(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "w.sqlite") as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS id, NULL AS x UNION ALL SELECT 2, 1.5")
        con.execute("INSERT INTO t VALUES (3, 'abc')")
    source = SQLAlchemySource(f"sqlite:///{tmp_path / 'w.sqlite'}")
    try:
        with pytest.raises(SourceError) as raised:
            source.read("SELECT id, x FROM t ORDER BY id")
    finally:
        source.close()

    assert "column 'x'" in str(raised.value) and "'abc' in row 3 (id = 3)" in str(raised.value)


def test_a_sqlite_model_that_writes_is_refused_and_rolled_back(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "w.sqlite") as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS id")
    source = SQLAlchemySource(f"sqlite:///{tmp_path / 'w.sqlite'}")
    try:
        with pytest.raises(SourceError, match="returned no rows on sqlite:///.*rolled back"):
            source.read("DELETE FROM t")
    finally:
        source.close()

    with sqlite3.connect(tmp_path / "w.sqlite") as con:
        assert con.execute("SELECT count(*) FROM t").fetchone() == (1,)


def test_a_relative_sqlite_path_is_the_workspaces(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "w.sqlite") as con:
        con.execute("CREATE TABLE t AS SELECT 7 AS id")
    plugin = SOURCES.get("sqlalchemy")
    config = plugin.config.model_validate({"type": "sqlalchemy", "url": "sqlite:///w.sqlite"})
    source = plugin.connect(config, AdapterContext(tmp_path))
    try:
        assert source.read("SELECT id FROM t").read_all().to_pylist() == [{"id": 7}]
    finally:
        source.close()


# --- drivers not installed -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("snowflake://me:s3cr3t@acct/db/schema", "pip install snowflake-sqlalchemy"),
        ("bigquery://project/dataset", "pip install sqlalchemy-bigquery"),
        ("databricks://token:s3cr3t@host?http_path=/sql", "pip install databricks-sqlalchemy"),
        ("postgresql+psycopg2://me:s3cr3t@host/db", "pip install psycopg2-binary"),
        ("sqlite+aiosqlite:///w.sqlite", "asyncio driver"),
        ("not a url at all", "is not a SQLAlchemy URL"),
    ],
    ids=["snowflake", "bigquery", "databricks", "psycopg2", "async", "garbage"],
)
def test_a_missing_driver_says_what_to_install(tmp_path: Path, url: str, says: str) -> None:
    workspace(tmp_path, url)

    with pytest.raises(ConfigErrors) as at_load:
        load_workspace(tmp_path)
    with pytest.raises(SourceError) as at_connect:
        SQLAlchemySource(url)

    for message in (str(at_load.value), str(at_connect.value)):
        assert says in message and "s3cr3t" not in message
    assert "sources.warehouse" in str(at_load.value)


# --- through the engine ----------------------------------------------------------------------


def workspace(root: Path, url: str, sql: str = "SELECT * FROM accounts") -> None:
    doc: dict[str, Any] = {
        "sources": {"warehouse": {"type": "sqlalchemy", "url": url}},
        "models": {"accounts": {"source": "warehouse", "primary_key": "id", "sql": sql}},
        "destinations": {"out": {"type": "file", "path": "out.jsonl"}},
        "mappings": {
            "accounts_out": {
                "model": "accounts",
                "destination": "out",
                "action": "append",
                "fields": {"name": "name", "balance": "balance", "meta": "meta"},
            }
        },
    }
    (root / "ebbtide.yml").write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.mark.postgres
def test_a_sqlalchemy_model_syncs_through_the_engine(
    tmp_path: Path, pg: tuple[str, str], pg_dsn: str, pg_schema: str
) -> None:
    execute(
        pg_dsn,
        pg_schema,
        "CREATE TABLE accounts (id int8 PRIMARY KEY, name text, balance numeric(14, 2),"
        " meta jsonb)",
        "INSERT INTO accounts SELECT i, 'acct ' || i, i * 100.25,"
        " jsonb_build_object('tier', i % 2) FROM generate_series(1, 30) i",
    )
    workspace(tmp_path, pg[0])

    service = SyncService(load_workspace(tmp_path))
    try:
        run = service.run("accounts_out")
    finally:
        service.state.dispose()

    assert (run.status, run.extracted, run.added, run.loaded_new) == (RunStatus.SUCCESS, 30, 30, 30)
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    third = next(line for line in lines if line["key"] == 3)
    assert third["data"] == {"name": "acct 3", "balance": 300.75, "meta": {"tier": 1}}


# --- type names of dialects not installed here (as their drivers report them) ---------------


class _Reported:
    """A dialect as far as the type mapping sees it: its name, and no ischema_names."""

    def __init__(self, name: str) -> None:
        self.name = name


@pytest.mark.parametrize(
    ("dialect", "reported", "precision", "scale", "arrow"),
    [
        ("snowflake", "FIXED", 38, 0, pa.decimal128(38, 0)),
        ("snowflake", "FIXED", 12, 2, pa.decimal128(12, 2)),
        ("snowflake", "REAL", None, None, pa.float64()),
        ("snowflake", "TEXT", None, None, pa.string()),
        ("snowflake", "TIMESTAMP_NTZ", None, None, pa.timestamp("us")),
        ("snowflake", "TIMESTAMP_LTZ", None, None, pa.timestamp("us", tz="UTC")),
        ("snowflake", "VARIANT", None, None, pa.json_()),
        ("snowflake", "BINARY", None, None, pa.binary()),
        ("bigquery", "INTEGER", None, None, pa.int64()),
        ("bigquery", "NUMERIC", None, None, pa.decimal128(38, 9)),
        ("bigquery", "BIGNUMERIC", None, None, pa.string()),
        ("bigquery", "TIMESTAMP", None, None, pa.timestamp("us", tz="UTC")),
        ("bigquery", "DATETIME", None, None, pa.timestamp("us")),
        ("bigquery", "BYTES", None, None, pa.binary()),
        ("bigquery", "JSON", None, None, pa.json_()),
        ("bigquery", "RECORD", None, None, pa.string()),
        ("databricks", "bigint", None, None, pa.int64()),
        ("databricks", "decimal", 10, 3, pa.decimal128(10, 3)),
        ("databricks", "string", None, None, pa.string()),
        ("databricks", "boolean", None, None, pa.bool_()),
    ],
)
def test_type_names_of_other_warehouses_map_as_documented(
    dialect: str, reported: str, precision: int | None, scale: int | None, arrow: pa.DataType
) -> None:
    described = ("c", reported, None, None, precision, scale, True)

    column = sa_source._column(_Reported(dialect), described)  # type: ignore[arg-type]

    assert column.arrow == arrow
