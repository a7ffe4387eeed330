"""The PostgreSQL destination against a real server, driven with outbound batches shaped as
the engine shapes them, then end to end through the sync service. No mocks."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pytest

from ebbtide.config.models import SyncMode
from ebbtide.config.workspace import load_workspace
from ebbtide.destinations import DESTINATIONS
from ebbtide.destinations.postgres import PostgresDestination
from ebbtide.errors import ConfigErrors, DestinationError, ErrorClass
from ebbtide.ports import (
    HASH_COLUMN,
    KEY_COLUMN,
    OP_COLUMN,
    RECORD_COLUMN,
    AdapterContext,
    BatchResult,
    OutboundBatch,
)
from ebbtide.services.sync import SyncService
from ebbtide.values import RunStatus

pytestmark = pytest.mark.postgres

USERS = """
CREATE TABLE {schema}.users (
    id bigint PRIMARY KEY,
    email text NOT NULL UNIQUE,
    plan text CHECK (plan IN ('free', 'pro')),
    age int CONSTRAINT age_is_positive CHECK (age > 0)
)
"""
FIELDS: dict[str, pa.DataType] = {"email": pa.string(), "plan": pa.string(), "age": pa.int32()}

Row = tuple[str, Any, dict[str, Any] | None]  # op, key, data


def outbound(
    rows: list[Row],
    mode: SyncMode = SyncMode.UPSERT,
    fields: dict[str, pa.DataType] = FIELDS,
    key_types: tuple[pa.DataType, ...] = (pa.int64(),),
    number: int = 1,
) -> OutboundBatch:
    """A batch with the columns the snapshot store's outbound query gives the loader."""
    keys = [key if isinstance(key, tuple) else (key,) for _, key, _ in rows]
    key_json = [json.dumps(k[0] if len(k) == 1 else list(k)) for k in keys]
    columns: dict[str, pa.Array[Any]] = {
        OP_COLUMN: pa.array([op for op, _, _ in rows]),
        KEY_COLUMN: pa.array(key_json),
        RECORD_COLUMN: pa.array(
            [
                json.dumps({"op": op, "key": json.loads(k), "data": data}, default=str)
                for (op, _, data), k in zip(rows, key_json, strict=True)
            ]
        ),
        HASH_COLUMN: pa.array(range(len(rows)), pa.uint64()),
    }
    for i, kind in enumerate(key_types):
        columns[f"__k{i}"] = pa.array([k[i] for k in keys], kind)
    for name, kind in fields.items():
        columns[name] = pa.array([(data or {}).get(name) for _, _, data in rows], kind)
    records = pa.RecordBatch.from_pydict(columns)
    return OutboundBatch(1, number, "users_to_db", "upsert", mode, records)


def destination(url: str, table: str, **options: Any) -> PostgresDestination:
    """Built through the registry, from options as they would be written in ebbtide.yml."""
    plugin = DESTINATIONS.get("postgres")
    config = plugin.config.model_validate(
        {"type": "postgres", "url": url, "table": table, "key": "id", **options}
    )
    built = plugin.build(config, AdapterContext(Path.cwd()))
    assert isinstance(built, PostgresDestination)
    return built


async def _deliver(
    target: PostgresDestination, batches: tuple[OutboundBatch, ...]
) -> list[BatchResult]:
    await target.open()
    try:
        return [await target.send(batch) for batch in batches]
    finally:
        await target.close()


def deliver(target: PostgresDestination, *batches: OutboundBatch) -> list[BatchResult]:
    return asyncio.run(_deliver(target, batches))


def rejected(result: BatchResult) -> dict[str, tuple[ErrorClass, str]]:
    return {r.key: (r.error_class, r.message) for r in result.rejected}


def execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def query(dsn: str, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(statement).fetchall()


@pytest.fixture
def users(pg_dsn: str, pg_schema: str) -> str:
    """`<schema>.users` with a primary key, NOT NULL, UNIQUE and CHECK constraints."""
    execute(pg_dsn, USERS.format(schema=pg_schema))
    return f"{pg_schema}.users"


def user(email: str, plan: str = "free", age: int | None = 30) -> dict[str, Any]:
    return {"email": email, "plan": plan, "age": age}


def seed(dsn: str, table: str, *ids: int) -> None:
    values = ", ".join(f"({i}, 'old{i}@example.com', 'free', 20)" for i in ids)
    execute(dsn, f"INSERT INTO {table} VALUES {values}")


def rows_of(dsn: str, table: str) -> list[tuple[Any, ...]]:
    return query(dsn, f"SELECT id, email, plan, age FROM {table} ORDER BY id")


# -- writing by mode ------------------------------------------------------------------------


def test_upsert_inserts_new_rows_and_updates_existing_ones(pg_dsn: str, users: str) -> None:
    seed(pg_dsn, users, 1)
    batch = outbound(
        [("updated", 1, user("one@example.com", "pro", 41)), ("added", 2, user("two@example.com"))]
    )

    [result] = deliver(destination(pg_dsn, users), batch)

    assert result.rejected == ()
    assert rows_of(pg_dsn, users) == [
        (1, "one@example.com", "pro", 41),
        (2, "two@example.com", "free", 30),
    ]


def test_mirror_deletes_the_rows_of_deleted_records_in_the_same_batch_as_upserts(
    pg_dsn: str, users: str
) -> None:
    seed(pg_dsn, users, 1, 2, 3)
    batch = outbound(
        [
            ("deleted", 1, None),
            ("updated", 2, user("two@example.com", "pro")),
            ("added", 4, user("four@example.com")),
            ("deleted", 99, None),  # already gone: deleting it again is no error
        ],
        SyncMode.MIRROR,
    )

    [result] = deliver(destination(pg_dsn, users), batch)

    assert result.rejected == ()
    assert rows_of(pg_dsn, users) == [
        (2, "two@example.com", "pro", 30),
        (3, "old3@example.com", "free", 20),
        (4, "four@example.com", "free", 30),
    ]


def test_insert_mode_rejects_taken_keys_as_conflicts_and_inserts_the_rest(
    pg_dsn: str, users: str
) -> None:
    seed(pg_dsn, users, 1)
    batch = outbound(
        [("added", 1, user("new1@example.com")), ("added", 2, user("two@example.com"))],
        SyncMode.INSERT,
    )

    [result] = deliver(destination(pg_dsn, users), batch)

    assert rejected(result) == {
        "1": (ErrorClass.CONFLICT, f"a row of {users} already has this key")
    }
    assert rows_of(pg_dsn, users) == [
        (1, "old1@example.com", "free", 20),
        (2, "two@example.com", "free", 30),
    ]


def test_update_mode_rejects_absent_keys_as_not_found_and_updates_the_rest(
    pg_dsn: str, users: str
) -> None:
    seed(pg_dsn, users, 1)
    batch = outbound(
        [("updated", 1, user("one@example.com", "pro")), ("added", 2, user("two@example.com"))],
        SyncMode.UPDATE,
    )

    [result] = deliver(destination(pg_dsn, users), batch)

    assert rejected(result) == {"2": (ErrorClass.NOT_FOUND, f"no row of {users} has this key")}
    assert rows_of(pg_dsn, users) == [(1, "one@example.com", "pro", 30)]


def test_composite_keys_write_each_key_part_to_its_column(pg_dsn: str, pg_schema: str) -> None:
    table = f"{pg_schema}.memberships"
    execute(pg_dsn, f"CREATE TABLE {table} (org text, id int, role text, PRIMARY KEY (org, id))")
    execute(pg_dsn, f"INSERT INTO {table} VALUES ('acme', 1, 'viewer')")
    batch = outbound(
        [("updated", ("acme", 1), {"role": "admin"}), ("added", ("beta", 1), {"role": "viewer"})],
        fields={"role": pa.string()},
        key_types=(pa.string(), pa.int64()),
    )

    [result] = deliver(destination(pg_dsn, table, key=["org", "id"]), batch)

    assert result.rejected == ()
    assert query(pg_dsn, f"SELECT * FROM {table} ORDER BY org") == [
        ("acme", 1, "admin"),
        ("beta", 1, "viewer"),
    ]


# -- records the database refuses -----------------------------------------------------------


def test_rows_refused_by_constraints_are_rejected_alone_and_the_rest_commit(
    pg_dsn: str, users: str
) -> None:
    seed(pg_dsn, users, 1)
    batch = outbound(
        [
            ("added", 2, user("two@example.com")),
            ("added", 3, user("three@example.com", plan="gold")),
            ("added", 4, user("four@example.com", age=-1)),
            ("added", 5, {"plan": "free", "age": 5}),  # no email
            ("added", 6, user("old1@example.com")),  # email of row 1
            ("updated", 1, user("one@example.com", "pro")),
            ("added", 7, user("seven@example.com")),
        ]
    )

    [result] = deliver(destination(pg_dsn, users), batch)

    refused = rejected(result)
    assert set(refused) == {"3", "4", "5", "6"}
    assert refused["3"][0] is ErrorClass.VALIDATION and "users_plan_check" in refused["3"][1]
    assert refused["4"][0] is ErrorClass.VALIDATION and "age_is_positive" in refused["4"][1]
    assert refused["5"][0] is ErrorClass.VALIDATION
    assert 'column "email"' in refused["5"][1] and "not-null" in refused["5"][1]
    assert refused["6"][0] is ErrorClass.CONFLICT and "users_email_key" in refused["6"][1]
    assert "old1@example.com" not in " ".join(m for _, m in refused.values())  # no values
    assert {r.code for r in result.rejected} == {"23514", "23502", "23505"}
    assert rows_of(pg_dsn, users) == [
        (1, "one@example.com", "pro", 30),
        (2, "two@example.com", "free", 30),
        (7, "seven@example.com", "free", 30),
    ]


def test_scattered_bad_rows_in_a_large_batch_are_each_found_and_the_rest_commit(
    pg_dsn: str, users: str
) -> None:
    bad = {i for i in range(1, 301) if i % 7 == 0 or i in (1, 300)}
    batch = outbound(
        [("added", i, user(f"u{i}@example.com", age=-i if i in bad else i)) for i in range(1, 301)]
    )

    [result] = deliver(destination(pg_dsn, users), batch)

    assert {r.key for r in result.rejected} == {str(i) for i in bad}
    assert len(result.rejected) == len(bad)  # each bad row rejected once
    assert [r[0] for r in rows_of(pg_dsn, users)] == sorted(set(range(1, 301)) - bad)


def test_a_value_the_column_cannot_hold_is_rejected_naming_the_column(
    pg_dsn: str, users: str
) -> None:
    batch = outbound(
        [
            ("added", 1, user("one@example.com") | {"age": "42"}),
            ("added", 2, user("x") | {"age": "old"}),
        ],
        fields={**FIELDS, "age": pa.string()},
    )

    [result] = deliver(destination(pg_dsn, users), batch)

    [refusal] = result.rejected
    assert (refusal.key, refusal.error_class) == ("2", ErrorClass.VALIDATION)
    assert "invalid input syntax for type integer" in refusal.message
    assert "(column age)" in refusal.message
    assert rows_of(pg_dsn, users) == [(1, "one@example.com", "free", 42)]


def guard_id_13(dsn: str, table: str, refusal: str) -> None:
    """A trigger that refuses to insert the row with id 13."""
    execute(
        dsn,
        f"""CREATE FUNCTION {table}_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.id = 13 THEN {refusal}; END IF;
            RETURN NEW;
        END $$""",
        f"CREATE TRIGGER guard BEFORE INSERT ON {table}"
        f" FOR EACH ROW EXECUTE FUNCTION {table}_guard()",
    )


def test_a_trigger_that_raises_rejects_only_its_row(pg_dsn: str, users: str) -> None:
    guard_id_13(pg_dsn, users, "RAISE EXCEPTION 'thirteen is not allowed'")
    batch = outbound([("added", i, user(f"u{i}@example.com")) for i in (12, 13, 14)])

    [result] = deliver(destination(pg_dsn, users), batch)

    assert rejected(result) == {"13": (ErrorClass.VALIDATION, "thirteen is not allowed")}
    assert [r[0] for r in rows_of(pg_dsn, users)] == [12, 14]


def test_a_batch_failing_for_a_reason_other_than_its_data_commits_nothing(
    pg_dsn: str, users: str
) -> None:
    guard_id_13(pg_dsn, users, "RAISE EXCEPTION 'try again' USING ERRCODE = '40001'")
    batch = outbound([("added", i, user(f"u{i}@example.com")) for i in (12, 13, 14)])

    with pytest.raises(DestinationError) as raised:
        deliver(destination(pg_dsn, users), batch)

    assert raised.value.error_class is ErrorClass.SERVER_ERROR  # retried by the engine
    assert raised.value.code == "40001" and "try again" in raised.value.message
    assert rows_of(pg_dsn, users) == []


# -- the table ------------------------------------------------------------------------------


def test_a_missing_table_fails_open_naming_the_table(pg_dsn: str, pg_schema: str) -> None:
    with pytest.raises(DestinationError) as raised:
        deliver(destination(pg_dsn, f"{pg_schema}.nowhere"))

    assert raised.value.error_class is ErrorClass.NOT_FOUND
    assert f"table {pg_schema}.nowhere does not exist" in raised.value.message
    assert "create_table: true" in raised.value.message


def test_mapped_fields_the_table_lacks_fail_the_batch_naming_them(pg_dsn: str, users: str) -> None:
    batch = outbound(
        [("added", 1, {"email": "a@example.com", "nickname": "a", "score": 1.5})],
        fields={"email": pa.string(), "nickname": pa.string(), "score": pa.float64()},
    )

    with pytest.raises(DestinationError) as raised:
        deliver(destination(pg_dsn, users), batch)

    assert raised.value.error_class is ErrorClass.NOT_FOUND
    assert f"table {users} has no column(s) nickname, score" in raised.value.message
    assert rows_of(pg_dsn, users) == []


def test_a_table_without_a_unique_key_is_refused_at_open(pg_dsn: str, pg_schema: str) -> None:
    execute(pg_dsn, f"CREATE TABLE {pg_schema}.loose (id bigint, email text)")

    with pytest.raises(DestinationError) as raised:
        deliver(destination(pg_dsn, f"{pg_schema}.loose"))

    assert raised.value.error_class is ErrorClass.VALIDATION
    assert "no primary key or unique constraint on (id)" in raised.value.message


def test_create_table_creates_the_table_from_the_batch_types_with_the_key(
    pg_dsn: str, pg_schema: str
) -> None:
    table = f"{pg_schema}.created"
    fields: dict[str, pa.DataType] = {
        "name": pa.string(),
        "visits": pa.int32(),
        "score": pa.float64(),
        "ltv": pa.decimal128(12, 2),
        "active": pa.bool_(),
        "born": pa.date32(),
        "seen_at": pa.timestamp("us", tz="UTC"),
        "avatar": pa.binary(),
        "tags": pa.list_(pa.string()),
    }
    data = {
        "name": "Ada",
        "visits": 3,
        "score": 0.5,
        "ltv": Decimal("1234.50"),
        "active": True,
        "born": date(1815, 12, 10),
        "seen_at": datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
        "avatar": b"\x00\x01\xff",
        "tags": ["math", "engines"],
    }

    [result] = deliver(
        destination(pg_dsn, table, create_table=True),
        outbound([("added", 7, data)], fields=fields),
    )

    assert result.rejected == ()
    types = query(
        pg_dsn,
        "SELECT column_name, data_type FROM information_schema.columns"
        f" WHERE table_schema = '{pg_schema}' AND table_name = 'created' ORDER BY ordinal_position",
    )
    assert types == [
        ("id", "bigint"),
        ("name", "text"),
        ("visits", "integer"),
        ("score", "double precision"),
        ("ltv", "numeric"),
        ("active", "boolean"),
        ("born", "date"),
        ("seen_at", "timestamp with time zone"),
        ("avatar", "bytea"),
        ("tags", "jsonb"),
    ]
    primary_key = query(
        pg_dsn,
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
        f" AND a.attnum = ANY(i.indkey) WHERE i.indrelid = '{table}'::regclass AND i.indisprimary",
    )
    assert primary_key == [("id",)]
    [row] = query(pg_dsn, f"SELECT * FROM {table}")
    assert row == (7, *list(data.values())[:-1], ["math", "engines"])


def test_create_table_adds_mapped_columns_an_existing_table_lacks(pg_dsn: str, users: str) -> None:
    batch = outbound(
        [("added", 1, user("one@example.com") | {"nickname": "uno"})],
        fields={**FIELDS, "nickname": pa.string()},
    )

    [result] = deliver(destination(pg_dsn, users, create_table=True), batch)

    assert result.rejected == ()
    assert query(pg_dsn, f"SELECT id, nickname FROM {users}") == [(1, "uno")]


# -- connections ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "error_class"),
    [
        ("postgresql://no_such_role_x:s3cr3t-pw-XYZ@127.0.0.1:5432/test", ErrorClass.AUTH),
        ("postgresql://postgres:s3cr3t-pw-XYZ@127.0.0.1:5432/no_such_db", ErrorClass.NOT_FOUND),
        ("postgresql://postgres:s3cr3t-pw-XYZ@127.0.0.1:1/test", ErrorClass.NETWORK),
    ],
)
def test_connection_errors_are_classified_and_never_show_the_password(
    pg_dsn: str, url: str, error_class: ErrorClass
) -> None:
    with pytest.raises(DestinationError) as raised:
        deliver(destination(url, "public.users"))

    assert raised.value.error_class is error_class
    assert "s3cr3t" not in str(raised.value)


@pytest.fixture
def reader_role(pg_dsn: str, users: str) -> Iterator[str]:
    """A role that may read the users table but not write it."""
    role = f"ebbtide_reader_{uuid.uuid4().hex[:8]}"
    schema = users.split(".")[0]
    execute(
        pg_dsn,
        f"CREATE ROLE {role} LOGIN",
        f"GRANT USAGE ON SCHEMA {schema} TO {role}",
        f"GRANT SELECT ON {users} TO {role}",
    )
    yield role
    execute(pg_dsn, f"DROP OWNED BY {role}", f"DROP ROLE {role}")


def test_missing_privileges_are_a_permission_error(
    pg_dsn: str, users: str, reader_role: str
) -> None:
    url = pg_dsn.replace("postgres@", f"{reader_role}@")

    with pytest.raises(DestinationError) as raised:
        deliver(destination(url, users), outbound([("added", 1, user("one@example.com"))]))

    assert raised.value.error_class is ErrorClass.PERMISSION
    assert raised.value.error_class.fatal
    assert "permission denied for table users" in raised.value.message


def test_concurrent_batches_use_at_most_concurrency_connections(pg_dsn: str, users: str) -> None:
    app = f"ebbtide_test_{uuid.uuid4().hex[:8]}"
    url = f"{pg_dsn}?application_name={app}"
    target = destination(url, users, concurrency=2)
    batches = [
        outbound(
            [("added", n * 10 + i, user(f"u{n}-{i}@example.com")) for i in range(10)], number=n
        )
        for n in range(1, 9)
    ]

    async def send_all() -> int:
        await target.open()
        try:
            results = await asyncio.gather(*(target.send(b) for b in batches))
            assert all(r.rejected == () for r in results)
            [(connections,)] = query(
                pg_dsn, f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"
            )
            return int(connections)
        finally:
            await target.close()

    assert asyncio.run(send_all()) == 2
    assert len(rows_of(pg_dsn, users)) == 80
    assert connections_closed(pg_dsn, app)


def connections_closed(dsn: str, application_name: str, wait_s: float = 30.0) -> bool:
    """Whether every session of the application ended (a backend exits just after close)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        [(open_sessions,)] = query(
            dsn,
            f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{application_name}'",
        )
        if open_sessions == 0:
            return True
        time.sleep(0.05)
    return False


# -- through the engine ---------------------------------------------------------------------

WORKSPACE = """\
sources:
  warehouse: {{type: duckdb, path: warehouse.duckdb}}
models:
  users:
    source: warehouse
    primary_key: id
    sql: SELECT id, email, plan, ltv, signed_up_at FROM users
destinations:
  app_db:
    type: postgres
    url: "${{APP_DB_URL}}"
    table: {table}
    key: id
    create_table: {create_table}
    batch_size: {batch_size}
    concurrency: 3
mappings:
  users_to_app:
    model: users
    destination: app_db
    action: upsert
    mode: mirror
    fields: {{email: email, plan: plan, ltv: ltv, signed_up_at: signed_up_at}}
"""
APP_USERS = """
CREATE TABLE {table} (
    id bigint PRIMARY KEY,
    email text NOT NULL,
    plan text CHECK (plan IN ('free', 'pro')),
    ltv numeric(12, 2),
    signed_up_at timestamptz
)
"""


def warehouse(root: Path, *statements: str) -> None:
    with duckdb.connect(str(root / "warehouse.duckdb")) as con:
        for statement in statements:
            con.execute(statement)


def make_workspace(
    root: Path, table: str, rows: int, *, create_table: bool = False, batch_size: int = 7
) -> SyncService:
    (root / "ebbtide.yml").write_text(
        WORKSPACE.format(table=table, create_table=str(create_table).lower(), batch_size=batch_size)
    )
    warehouse(
        root,
        "CREATE TABLE users AS SELECT i::BIGINT AS id, 'user' || i || '@example.com' AS email,"
        " CASE WHEN i = 13 THEN 'gold' WHEN i % 3 = 0 THEN 'pro' ELSE 'free' END AS plan,"
        " (i * 10.25)::DECIMAL(12, 2) AS ltv,"
        " TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_days(i::INT) AS signed_up_at"
        f" FROM range(1, {rows + 1}) t(i)",
    )
    return SyncService(load_workspace(root))


def warehouse_rows(root: Path) -> set[tuple[Any, ...]]:
    with duckdb.connect(str(root / "warehouse.duckdb")) as con:
        found = con.execute("SELECT id, email, plan, ltv FROM users WHERE plan <> 'gold'")
        return {tuple(row) for row in found.fetchall()}


def versions(dsn: str, table: str) -> dict[int, str]:
    """Each row's xmin: it changes exactly when the row is written."""
    return dict(query(dsn, f"SELECT id, xmin::text FROM {table}"))


@pytest.fixture
def app_db(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("APP_DB_URL", pg_dsn)
    return pg_dsn


def test_sync_mirrors_the_model_into_the_table_then_sends_only_the_changes(
    tmp_path: Path, app_db: str, pg_schema: str
) -> None:
    table = f"{pg_schema}.users"
    execute(app_db, APP_USERS.format(table=table))
    service = make_workspace(tmp_path, table, rows=40)
    try:
        first = service.run("users_to_app")
        [failure] = service.state.failures(first.id)

        assert first.status is RunStatus.PARTIAL_SUCCESS, first.error
        assert (first.extracted, first.added, first.loaded_new) == (40, 40, 39)
        assert (first.failed, first.failed_by_class) == (1, {"validation": 1})
        assert failure.key == "13" and "users_plan_check" in failure.message
        in_table = query(app_db, f"SELECT id, email, plan, ltv FROM {table}")
        assert set(in_table) == warehouse_rows(tmp_path)
        [(signed_up,)] = query(app_db, f"SELECT signed_up_at FROM {table} WHERE id = 2")
        assert signed_up == datetime(2024, 1, 3, tzinfo=UTC)

        before = versions(app_db, table)
        warehouse(
            tmp_path,
            "UPDATE users SET plan = 'pro' WHERE id = 13",
            "UPDATE users SET email = 'new' || id || '@example.com' WHERE id IN (5, 6)",
            "DELETE FROM users WHERE id = 10",
            "INSERT INTO users VALUES (41, 'user41@example.com', 'free', 1.50, NULL)",
        )
        second = service.run("users_to_app")

        assert second.status is RunStatus.SUCCESS, second.error
        assert (second.added, second.updated, second.deleted) == (2, 2, 1)  # 13 retried, 41
        assert (second.loaded_new, second.loaded_updated, second.loaded_deleted) == (2, 2, 1)
        assert set(query(app_db, f"SELECT id, email, plan, ltv FROM {table}")) == warehouse_rows(
            tmp_path
        )
        after = versions(app_db, table)
        rewritten = {i for i in after if before.get(i) != after[i]}
        assert rewritten == {5, 6, 13, 41}  # untouched rows were not written again

        third = service.run("users_to_app")
        assert third.status is RunStatus.SUCCESS
        assert (third.added, third.updated, third.deleted, third.failed) == (0, 0, 0, 0)
        assert versions(app_db, table) == after
    finally:
        service.state.dispose()


def test_sync_creates_the_table_and_loads_concurrent_batches(
    tmp_path: Path, app_db: str, pg_schema: str
) -> None:
    table = f"{pg_schema}.fresh_users"
    service = make_workspace(tmp_path, table, rows=95, create_table=True, batch_size=10)
    warehouse(tmp_path, "UPDATE users SET plan = 'free' WHERE id = 13")
    try:
        run = service.run("users_to_app")
    finally:
        service.state.dispose()

    assert run.status is RunStatus.SUCCESS, run.error
    assert (run.extracted, run.loaded_new) == (95, 95)
    assert set(query(app_db, f"SELECT id, email, plan, ltv FROM {table}")) == warehouse_rows(
        tmp_path
    )
    types = dict(
        query(
            app_db,
            "SELECT column_name, format_type(atttypid, atttypmod) FROM pg_attribute a"
            " JOIN information_schema.columns c ON c.column_name = a.attname"
            f" AND c.table_schema = '{pg_schema}' AND c.table_name = 'fresh_users'"
            f" WHERE a.attrelid = '{table}'::regclass",
        )
    )
    assert types == {
        "id": "bigint",
        "email": "text",
        "plan": "text",
        "ltv": "numeric(12,2)",
        "signed_up_at": "timestamp with time zone",
    }


def test_sync_fails_naming_a_missing_table_and_sends_everything_once_it_exists(
    tmp_path: Path, app_db: str, pg_schema: str
) -> None:
    table = f"{pg_schema}.users"
    service = make_workspace(tmp_path, table, rows=12)
    try:
        failed = service.run("users_to_app")
        execute(app_db, APP_USERS.format(table=table))
        retried = service.run("users_to_app")
    finally:
        service.state.dispose()

    assert failed.status is RunStatus.FAILED
    assert failed.error is not None and f"table {table} does not exist" in failed.error
    assert failed.loaded_new == 0
    assert retried.status is RunStatus.SUCCESS, retried.error
    assert (retried.added, retried.loaded_new) == (12, 12)
    assert set(query(app_db, f"SELECT id, email, plan, ltv FROM {table}")) == warehouse_rows(
        tmp_path
    )


def test_a_malformed_url_is_a_workspace_error_that_hides_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_DB_URL", "postgresql://app:s3cr3t-pw-XYZ@[::1/app")
    (tmp_path / "ebbtide.yml").write_text(
        WORKSPACE.format(table="public.users", create_table="false", batch_size=10)
    )

    with pytest.raises(ConfigErrors) as raised:
        load_workspace(tmp_path)

    message = str(raised.value)
    assert "destinations.app_db.url" in message and "not a valid PostgreSQL URL" in message
    assert "s3cr3t" not in message
