"""The SQL of the diff in the warehouse, dialect by dialect.

Every dialect's generated SQL for the whole flow, for a model keyed by (text, integer) with a
mapped column of every ColumnKind; then, on the real PostgreSQL and MariaDB servers, what
the rendering and the hash must guarantee: the same hash in any session time zone, 1.0 and
1.00 alike, NULL and '' apart, 'a' and 'A' two different keys.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from ebbtide.ports import ColumnKind
from ebbtide.snapshots import warehouse_sql as wsql
from ebbtide.snapshots.warehouse_sql import Column, Dialect

NAMES = ["postgres", "mariadb", "mysql", "snowflake", "bigquery", "redshift", "databricks"]
SQL_ONLY = ["snowflake", "bigquery", "redshift", "databricks"]
KEYS = [Column("region", ColumnKind.TEXT), Column("id", ColumnKind.INTEGER)]
HASHED = [Column(f"c_{kind.value}", kind) for kind in ColumnKind]
SIGNATURE = "sig-v1:it's"
MODEL = "SELECT * FROM shop.customers WHERE active"
SCHEMA = "ebbtide_state"
SNAPSHOT = "ebbtide_state.snapshot_customers"

# The part of each dialect's hash63 that names its hash function.
HASH_FUNCTION = {
    "postgres": "hashtextextended(",
    "mariadb": "CONV(LEFT(MD5(",
    "mysql": "CONV(LEFT(MD5(",
    "snowflake": "TO_NUMBER(UPPER(LEFT(MD5(",
    "bigquery": "SUBSTR(TO_HEX(MD5(",
    "redshift": "STRTOL(LEFT(MD5(",
    "databricks": "CONV(SUBSTR(MD5(",
}


def sql(name: str) -> Dialect:
    return wsql.dialect(name)


def flat(statements: Sequence[str]) -> str:
    return "\n".join(statements)


# -- the registry ----------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_dialect_is_registered_under_its_name(name: str) -> None:
    dialect = sql(name)
    assert dialect.name == name
    assert type(dialect) is wsql.DIALECTS[name]


# -- names and strings -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("postgres", '"we""ird`x"'),
        ("mariadb", '`we"ird``x`'),
        ("mysql", '`we"ird``x`'),
        ("snowflake", '"we""ird`x"'),
        ("bigquery", '`we"ird\\`x`'),
        ("redshift", '"we""ird`x"'),
        ("databricks", '`we"ird``x`'),
    ],
)
def test_a_name_with_the_quote_character_inside_is_escaped(name: str, expected: str) -> None:
    assert sql(name).quote('we"ird`x') == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("postgres", "'it''s \\ x'"),
        ("mariadb", "'it''s \\\\ x'"),
        ("mysql", "'it''s \\\\ x'"),
        ("snowflake", "'it''s \\\\ x'"),
        ("bigquery", "'it\\'s \\\\ x'"),
        ("redshift", "'it''s \\\\ x'"),
        ("databricks", "'it\\'s \\\\ x'"),
    ],
)
def test_a_literal_escapes_quotes_and_backslashes_as_the_database_reads_them(
    name: str, expected: str
) -> None:
    assert sql(name).literal("it's \\ x") == expected


def test_a_bigquery_literal_holds_no_raw_newline() -> None:
    assert sql("bigquery").literal("a\nb\rc") == "'a\\nb\\rc'"


@pytest.mark.parametrize("name", NAMES)
def test_null_and_the_empty_string_are_quoted_apart(name: str) -> None:
    text = sql(name).quote_nullable("x")
    # Either the database's own quote function (NULL → the bare word NULL) or the quoted
    # text with NULL falling back to the bare word, which no quoted value can be.
    assert text in ("quote_nullable(x)", "QUOTE(x)") or (
        text.startswith("COALESCE(") and text.endswith(", 'NULL')")
    )


# -- the hash --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_the_hash_is_a_non_negative_bigint_of_a_named_function(name: str) -> None:
    expression = sql(name).hash63("t")
    assert HASH_FUNCTION[name] in expression
    if name == "postgres":  # its own 64-bit text hash, without the sign bit
        assert "& 9223372036854775807" in expression
    else:
        assert "15" in expression  # 15 hex digits of MD5: 60 bits, a non-negative BIGINT


@pytest.mark.parametrize("name", NAMES)
def test_the_row_hash_is_seeded_with_the_mapping_signature(name: str) -> None:
    dialect = sql(name)
    row = dialect.row_hash(SIGNATURE, HASHED, "m")
    at = row.index(HASH_FUNCTION[name])
    assert dialect.literal(SIGNATURE) in row[at:], "the signature is outside the hash"
    for column in HASHED:
        assert dialect.render(f"m.{dialect.quote(column.name)}", column.kind) in row


@pytest.mark.parametrize("name", NAMES)
def test_every_kind_renders_its_own_way_where_text_differs(name: str) -> None:
    dialect = sql(name)
    rendered = {kind: dialect.render("v", kind) for kind in ColumnKind}
    for kind in (ColumnKind.DECIMAL, ColumnKind.TIMESTAMPTZ, ColumnKind.JSON):
        assert rendered[kind] != rendered[ColumnKind.TEXT], kind
    # An instant is rendered in UTC or as a zone-free count, never in the session's zone.
    instant = rendered[ColumnKind.TIMESTAMPTZ]
    assert "UTC" in instant or "UNIX_" in instant


# -- the full flow ---------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_stage_hashes_every_mapped_column_and_keeps_the_keys(name: str) -> None:
    dialect = sql(name)
    q = dialect.quote
    drop, create = dialect.stage(MODEL, SIGNATURE, KEYS, HASHED)
    assert drop == dialect.drop_temp(wsql.STAGE)
    assert create.startswith(f"{dialect.temp_table} {q(wsql.STAGE)} ")
    assert f"FROM ({MODEL}\n) m" in create
    assert dialect.row_hash(SIGNATURE, HASHED, "m") + f" AS {wsql.HASH}" in create
    for key in KEYS:
        assert f"{dialect.key(f'm.{q(key.name)}', key.kind)} AS {q(key.name)}" in create


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("include", [False, True])
def test_changes_join_on_every_key_column(name: str, include: bool) -> None:
    dialect = sql(name)
    q = dialect.quote
    statements = dialect.changes(SNAPSHOT, KEYS, include)
    text = flat(statements)
    assert statements[0] == dialect.drop_temp(wsql.CHANGES)
    for key in KEYS:
        assert f"s.{q(key.name)} = n.{q(key.name)}" in text
    assert dialect.distinct(f"s.{wsql.HASH}", f"n.{wsql.HASH}") in text
    for op in ("added", "updated", "deleted"):
        assert f"'{op}'" in text
    present = [s for s in statements if f"'{wsql.PRESENT}'" in s]
    if include:
        assert len(present) == 1
        for key in KEYS:
            assert f"s.{q(key.name)} = i.{q(key.name)}" in present[0]
        assert q(wsql.INCLUDE) in present[0]
    else:
        assert present == []


@pytest.mark.parametrize("name", NAMES)
def test_the_full_outer_join_is_used_or_emulated(name: str) -> None:
    dialect = sql(name)
    text = flat(dialect.changes(SNAPSHOT, KEYS, False))
    if dialect.full_outer_join:
        assert "FULL OUTER JOIN" in text
        return
    # MariaDB: added and updated from the stage's side, then the deleted from the snapshot's.
    assert name in ("mariadb", "mysql")
    assert "FULL OUTER JOIN" not in text
    assert text.count("LEFT JOIN") == 2
    assert f"FROM {SNAPSHOT} n LEFT JOIN {dialect.quote(wsql.STAGE)} s" in text
    assert f"WHERE s.{wsql.HASH} IS NULL" in text


@pytest.mark.parametrize("name", NAMES)
def test_changed_rows_read_the_model_for_every_key_but_the_deleted(name: str) -> None:
    dialect = sql(name)
    q = dialect.quote
    text = dialect.changed_rows(MODEL, KEYS)
    assert f"FROM ({MODEL}\n) m" in text
    for key in KEYS:
        assert f"{dialect.key(f'm.{q(key.name)}', key.kind)} = c.{q(key.name)}" in text
    assert f"c.{wsql.OP} <> 'deleted'" in text


@pytest.mark.parametrize("name", NAMES)
def test_old_hashes_name_every_key(name: str) -> None:
    dialect = sql(name)
    text = dialect.old_hashes(KEYS)
    for key in KEYS:
        assert dialect.quote(key.name) in text
    assert f"{wsql.OLD_HASH} IS NOT NULL" in text


@pytest.mark.parametrize("name", NAMES)
def test_apply_accepted_removes_deleted_keys_and_writes_the_others(name: str) -> None:
    dialect = sql(name)
    q = dialect.quote
    statements = dialect.apply_accepted(SNAPSHOT, KEYS)
    text = flat(statements)
    assert q(wsql.ACCEPTED) in text
    assert "'deleted'" in text
    for key in KEYS:
        assert q(key.name) in text
    if name == "databricks":  # one MERGE: atomic without a transaction
        (merge,) = statements
        assert merge.startswith(f"MERGE INTO {SNAPSHOT} n USING")
        assert "THEN DELETE" in merge and "WHEN NOT MATCHED" in merge
        for key in KEYS:
            assert f"n.{q(key.name)} = a.{q(key.name)}" in merge
    else:
        delete, insert = statements
        assert delete.startswith("DELETE")
        assert insert.startswith("INSERT") and f"INTO {SNAPSHOT}" in insert


@pytest.mark.parametrize("name", NAMES)
def test_schema_and_mapping_statements(name: str) -> None:
    dialect = sql(name)
    assert dialect.quote(SCHEMA) in dialect.create_schema(SCHEMA)
    assert "fence_run" in dialect.mappings_table(SCHEMA)
    table = dialect.table(SCHEMA, wsql.MAPPINGS)

    upsert = dialect.upsert_mapping(SCHEMA)
    assert upsert.count("%s") == 4  # mapping, snapshot table, meta, fence run
    assert table in upsert
    # As the store fills it in: literals by position.
    filled = upsert.replace("%s", "{}").format(
        dialect.literal("m1"), dialect.literal("snapshot_m1"), dialect.literal('{"a": 1}'), "NULL"
    )
    assert dialect.literal('{"a": 1}') in filled
    if name in ("snowflake", "bigquery", "databricks"):
        assert upsert.startswith(f"MERGE INTO {table}")
        assert "fence_run = " not in upsert.split("WHEN NOT MATCHED")[0]  # fence kept

    fence = dialect.claim_fence(SCHEMA)
    assert fence.count("%s") == 3
    assert "fence_run IS NULL OR fence_run < %s" in fence


@pytest.mark.parametrize(
    ("name", "consistent", "lock"),
    [
        (
            "postgres",
            [
                "BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                "SET LOCAL parallel_tuple_cost = 0.001",
            ],
            " FOR UPDATE",
        ),
        *(
            (
                name,
                [
                    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                    "START TRANSACTION WITH CONSISTENT SNAPSHOT",
                ],
                " FOR UPDATE",
            )
            for name in ("mariadb", "mysql")
        ),
        ("snowflake", ["BEGIN TRANSACTION"], ""),
        ("bigquery", ["BEGIN TRANSACTION"], ""),
        ("redshift", ["BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE"], ""),
        ("databricks", [], ""),
    ],
)
def test_consistency_and_locking(name: str, consistent: list[str], lock: str) -> None:
    dialect = sql(name)
    assert dialect.begin_consistent() == consistent
    assert dialect.lock_row() == lock


@pytest.mark.parametrize("name", NAMES)
def test_text_keys_compare_byte_for_byte(name: str) -> None:
    dialect = sql(name)
    text_key = dialect.key("k", ColumnKind.TEXT)
    expected = {
        "mariadb": "COLLATE utf8mb4_nopad_bin",
        "mysql": "COLLATE utf8mb4_0900_bin",
        "snowflake": "COLLATE(k, 'utf8')",
        "redshift": "COLLATE(k, 'case_sensitive')",
    }
    if name in expected:
        assert expected[name] in text_key
    else:  # binary already: PostgreSQL's deterministic collations, BigQuery, Databricks
        assert text_key == "k"
    assert dialect.key("k", ColumnKind.INTEGER) == "k"


@pytest.mark.parametrize("name", SQL_ONLY)
def test_the_sql_only_dialects_need_no_on_conflict_and_no_for_update(name: str) -> None:
    dialect = sql(name)
    every = flat(
        [
            *dialect.stage(MODEL, SIGNATURE, KEYS, HASHED),
            *dialect.changes(SNAPSHOT, KEYS, True),
            dialect.changed_rows(MODEL, KEYS),
            dialect.old_hashes(KEYS),
            *dialect.apply_accepted(SNAPSHOT, KEYS),
            dialect.create_schema(SCHEMA),
            dialect.mappings_table(SCHEMA),
            dialect.upsert_mapping(SCHEMA),
            dialect.claim_fence(SCHEMA),
            dialect.primary_key(SNAPSHOT, KEYS),
        ]
    )
    assert "ON CONFLICT" not in every
    assert "ON DUPLICATE KEY" not in every
    assert "FOR UPDATE" not in every
    assert "DISTINCT ON" not in every


# -- on the real servers ---------------------------------------------------------------


class Server:
    """A connection to a real server and what differs in setting its session's zone."""

    def __init__(self, dialect: Dialect, run: Callable[[str], list[tuple[Any, ...]]]) -> None:
        self.dialect = dialect
        self.run = run

    def one(self, query: str) -> Any:
        return self.run(query)[0][0]

    def hash_of(self, select: str, columns: Sequence[Column]) -> int:
        """The row hash of the single row `select` returns."""
        return int(
            self.one(f"SELECT {self.dialect.row_hash(SIGNATURE, columns, 'm')} FROM ({select}) m")
        )

    def set_zone(self, zone: str) -> None:
        if self.dialect.name == "postgres":
            self.run(f"SET TIME ZONE '{zone}'")
        else:
            self.run(f"SET time_zone = '{zone}'")


@pytest.fixture(scope="module")
def postgres() -> Iterator[Server]:
    from tests.conftest import PG_DSN, PG_START, require_server

    require_server(5432, "PostgreSQL", PG_START)
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:

        def run(statement: str) -> list[tuple[Any, ...]]:
            cursor = conn.execute(statement)
            return list(cursor.fetchall()) if cursor.description else []

        yield Server(sql("postgres"), run)


@pytest.fixture(scope="module")
def mariadb() -> Iterator[Server]:
    from tests.conformance.source_cases.mysql import START, admin
    from tests.conftest import require_server

    require_server(3306, "MariaDB", START)
    database = f"ebb_{uuid.uuid4().hex[:12]}"
    con = admin()
    try:
        with con.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {database} CHARACTER SET utf8mb4")
            cursor.execute(f"USE {database}")

        def run(statement: str) -> list[tuple[Any, ...]]:
            with con.cursor() as cursor:
                cursor.execute(statement)
                return [tuple(row) for row in cursor.fetchall()]

        yield Server(sql("mariadb"), run)
    finally:
        with con.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {database}")
        con.close()


@pytest.fixture(params=["postgres", "mariadb"])
def server(request: pytest.FixtureRequest) -> Server:
    found: Server = request.getfixturevalue(request.param)
    return found


def _decimal(server: Server, value: str, scale: int) -> str:
    return f"CAST({value} AS DECIMAL(12, {scale}))"


def test_the_hash_is_the_one_the_docs_name(server: Server) -> None:
    found = set()
    for text in ("abc", "", "it's ünïcode", "abd"):
        value = int(server.one(f"SELECT {server.dialect.hash63(server.dialect.literal(text))}"))
        if server.dialect.name == "postgres":  # its 64-bit text hash, sign bit dropped
            assert 0 <= value < 2**63
        else:
            assert value == int(hashlib.md5(text.encode()).hexdigest()[:15], 16)
        found.add(value)
    assert len(found) == 4


def test_one_and_one_point_zero_zero_hash_alike(server: Server) -> None:
    column = [Column("d", ColumnKind.DECIMAL)]

    def hashed(value: str, scale: int) -> int:
        return server.hash_of(f"SELECT {_decimal(server, value, scale)} AS d", column)

    assert hashed("1.0", 1) == hashed("1.00", 4) == hashed("1", 0)
    assert hashed("10.00", 2) == hashed("10", 0)
    assert hashed("10.00", 2) != hashed("1", 0)  # trailing zeros of the fraction only
    assert hashed("1.5", 1) != hashed("1.05", 2)


def test_null_and_the_empty_string_hash_differently(server: Server) -> None:
    column = [Column("t", ColumnKind.TEXT)]
    text = "CHAR" if server.dialect.name == "mariadb" else "TEXT"
    null = server.hash_of(f"SELECT CAST(NULL AS {text}) AS t", column)
    empty = server.hash_of("SELECT '' AS t", column)
    word = server.hash_of("SELECT 'NULL' AS t", column)
    assert len({null, empty, word}) == 3
    # Nor does a comma inside a value shift it into the next column.
    pair = [Column("a", ColumnKind.TEXT), Column("b", ColumnKind.TEXT)]
    assert server.hash_of("SELECT 'x,' AS a, 'y' AS b", pair) != server.hash_of(
        "SELECT 'x' AS a, ',y' AS b", pair
    )


def test_json_with_its_keys_in_another_order_hashes_alike(server: Server) -> None:
    column = [Column("j", ColumnKind.JSON)]
    cast = "CAST({} AS JSON)" if server.dialect.name == "postgres" else "{}"
    spaced = server.dialect.literal('{"b": 1, "a": [2]}')
    compact = server.dialect.literal('{"a":[2],"b":1}')
    one = server.hash_of(f"SELECT {cast.format(spaced)} AS j", column)
    two = server.hash_of(f"SELECT {cast.format(compact)} AS j", column)
    assert one == two


def test_text_keys_that_differ_in_case_are_different_keys(server: Server) -> None:
    def key(ref: str) -> str:
        return server.dialect.key(ref, ColumnKind.TEXT)

    lower, upper = key("'a'"), key("'A'")
    assert not int(server.one(f"SELECT {lower} = {upper}"))
    distinct = server.one(
        f"SELECT COUNT(DISTINCT k) FROM (SELECT {key('u.x')} AS k FROM"
        " (SELECT 'a' AS x UNION ALL SELECT 'A' UNION ALL SELECT 'a') u) v"
    )
    assert int(distinct) == 2


def test_a_trailing_space_makes_another_key(request: pytest.FixtureRequest, server: Server) -> None:
    key = server.dialect.key("u.x", ColumnKind.TEXT)
    distinct = server.one(
        f"SELECT COUNT(DISTINCT k) FROM (SELECT {key} AS k FROM"
        " (SELECT 'a' AS x UNION ALL SELECT 'a ') u) v"
    )
    assert int(distinct) == 2


def test_mariadb_would_fold_case_without_the_binary_key(mariadb: Server) -> None:
    # What the key guards against: the connection's default collation is case-insensitive.
    assert int(mariadb.one("SELECT 'a' = 'A'")) == 1


INSTANT = "2024-03-31 01:30:05.250000"


def test_postgres_hash_is_the_same_in_any_session_time_zone(postgres: Server) -> None:
    columns = [
        Column("tz", ColumnKind.TIMESTAMPTZ),
        Column("ts", ColumnKind.TIMESTAMP),
        Column("d", ColumnKind.DATE),
    ]
    select = (
        f"SELECT CAST('{INSTANT}+00' AS TIMESTAMPTZ) AS tz,"
        f" CAST('{INSTANT}' AS TIMESTAMP) AS ts, CAST('2024-03-31' AS DATE) AS d"
    )
    hashes = set()
    for zone in ("UTC", "Europe/London", "Asia/Kolkata", "America/St_Johns"):
        postgres.set_zone(zone)
        hashes.add(postgres.hash_of(select, columns))
    postgres.set_zone("UTC")
    assert len(hashes) == 1


@pytest.fixture
def mariadb_instants(mariadb: Server) -> Iterator[str]:
    mariadb.set_zone("+00:00")
    mariadb.run("CREATE TABLE instants (tz TIMESTAMP(6), ts DATETIME(6), d DATE)")
    mariadb.run(f"INSERT INTO instants VALUES ('{INSTANT}', '{INSTANT}', '2024-03-31')")
    yield "SELECT tz, ts, d FROM instants"
    mariadb.run("DROP TABLE instants")
    mariadb.set_zone("+00:00")


def test_mariadb_wall_clock_values_hash_the_same_in_any_session_time_zone(
    mariadb: Server, mariadb_instants: str
) -> None:
    columns = [Column("ts", ColumnKind.TIMESTAMP), Column("d", ColumnKind.DATE)]
    hashes = set()
    for zone in ("+00:00", "+05:30", "-03:30"):
        mariadb.set_zone(zone)
        hashes.add(mariadb.hash_of(mariadb_instants, columns))
    assert len(hashes) == 1


def test_mariadb_instants_hash_the_same_in_any_session_time_zone(
    mariadb: Server, mariadb_instants: str
) -> None:
    columns = [Column("tz", ColumnKind.TIMESTAMPTZ)]
    hashes = set()
    for zone in ("+00:00", "+05:30"):
        mariadb.set_zone(zone)
        hashes.add(mariadb.hash_of(mariadb_instants, columns))
    assert len(hashes) == 1


@pytest.mark.parametrize("name", NAMES)
def test_each_dialect_says_how_it_ends_a_transaction_and_finds_a_table(name: str) -> None:
    dialect = sql(name)
    assert dialect.commit() == ([] if name == "databricks" else ["COMMIT"])
    assert dialect.rollback() == ([] if name == "databricks" else ["ROLLBACK"])
    found = dialect.table_exists("st", "ebbtide_mappings")
    assert "'ebbtide_mappings'" in found
    if name == "bigquery":  # per dataset, and no CHAR(n) type
        assert f"{dialect.quote('st')}.INFORMATION_SCHEMA.TABLES" in found
        assert dialect.op_type == "STRING"
    else:
        assert "information_schema.tables" in found and "'st'" in found
