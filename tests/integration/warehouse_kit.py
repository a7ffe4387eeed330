"""The `users` model on a real PostgreSQL or MariaDB server, diffed locally or in the warehouse.

A scenario test module takes its `kit` fixture from `backend_kit` to run the same scenarios
against DuckDB (the default), and against PostgreSQL and MariaDB with `diff: warehouse`: the
issue's promise that the counts, guards, retries, reset and replay behave exactly alike.
Statements given to `kit.sql` are plain SQL every backend reads.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PG_DSN, PG_START, require_server
from tests.integration.workspace_kit import USERS_SQL, Kit

# The backends a scenario runs on: `duckdb` is the local diff on a DuckDB file.
ALL_BACKENDS = ("duckdb", "postgres-warehouse", "mysql-warehouse")


@dataclass
class Backend:
    """A warehouse server holding the test's own `users` table, and ebbtide's state schema."""

    name: str
    diff: str
    source: dict[str, Any]
    users_sql: str
    state_schema: str
    _cleanup: list[Any] = field(default_factory=list)

    def execute(self, *statements: str) -> None:
        raise NotImplementedError

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def create_users(self, rows: int) -> None:
        """`users(id, email, plan, ltv)` as workspace_kit.users_table makes them in DuckDB."""
        self.execute(
            "DROP TABLE IF EXISTS users",
            "CREATE TABLE users (id BIGINT PRIMARY KEY, email VARCHAR(10000),"
            " plan VARCHAR(100), ltv DECIMAL(18, 1))",
        )
        values = ", ".join(
            f"({i}, 'user{i}@example.com', '{'pro' if i % 3 == 0 else 'free'}', {i * 1.5})"
            for i in range(1, rows + 1)
        )
        if values:
            self.execute(f"INSERT INTO users VALUES {values}")

    def quote(self, name: str) -> str:
        q = '"' if self.name == "postgres" else "`"
        return f"{q}{name}{q}"

    def snapshot_table(self, mapping: str) -> str:
        """The warehouse snapshot table of `mapping`, schema-qualified and quoted."""
        from ebbtide.snapshots.warehouse_sql import snapshot_table_name

        return f"{self.quote(self.state_schema)}.{self.quote(snapshot_table_name(mapping))}"

    def snapshot_exists(self, mapping: str) -> bool:
        """Whether ebbtide's schema holds a snapshot table for `mapping`."""
        from ebbtide.snapshots.warehouse_sql import snapshot_table_name

        found = self.rows(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema ="
            f" '{self.state_schema}' AND table_name = '{snapshot_table_name(mapping)}'"
        )
        return bool(int(found[0][0]))

    def snapshot_keys(self, mapping: str, key: str = "id") -> set[Any]:
        """The keys the warehouse snapshot of `mapping` holds (none before its first diff)."""
        if not self.snapshot_exists(mapping):
            return set()
        rows = self.rows(f"SELECT {self.quote(key)} FROM {self.snapshot_table(mapping)}")
        return {row[0] for row in rows}

    def close(self) -> None:
        for undo in reversed(self._cleanup):
            undo()


class PostgresBackend(Backend):
    def execute(self, *statements: str) -> None:
        import psycopg

        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{self.schema}"')
            for statement in statements:
                conn.execute(statement)

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{self.schema}"')
            return list(conn.execute(query).fetchall())

    @property
    def schema(self) -> str:
        return str(self.source["url"]).rsplit("search_path%3D", 1)[1]


def postgres_backend(diff: str) -> Backend:
    import psycopg

    require_server(5432, "PostgreSQL", PG_START)
    schema = f"t_{uuid.uuid4().hex[:10]}"
    state = f"{schema}_state"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')

    def drop() -> None:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.execute(f'DROP SCHEMA IF EXISTS "{state}" CASCADE')

    url = f"{PG_DSN}?options=-csearch_path%3D{schema}"
    backend = PostgresBackend(
        "postgres",
        diff,
        {"type": "postgres", "url": url, "state_schema": state},
        USERS_SQL,
        state,
    )
    backend._cleanup.append(drop)
    return backend


class MySQLBackend(Backend):
    database: str = ""

    def _connect(self) -> Any:
        from tests.conformance.source_cases.mysql import admin

        return admin(self.database)

    def execute(self, *statements: str) -> None:
        con = self._connect()
        try:
            with con.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
        finally:
            con.close()

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        con = self._connect()
        try:
            with con.cursor() as cursor:
                cursor.execute(query)
                return list(cursor.fetchall())
        finally:
            con.close()


def mysql_backend(diff: str) -> Backend:
    from tests.conformance.source_cases.mysql import START, admin

    require_server(3306, "MariaDB", START)
    name = f"ebb_{uuid.uuid4().hex[:12]}"
    state = f"{name}_state"
    password = f"pw-{uuid.uuid4().hex[:8]}"
    con = admin()
    try:
        with con.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
            cursor.execute(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'")
            cursor.execute(f"GRANT ALL ON {name}.* TO '{name}'@'%'")
            cursor.execute(f"GRANT ALL ON {state}.* TO '{name}'@'%'")
    finally:
        con.close()

    def drop() -> None:
        con = admin()
        try:
            with con.cursor() as cursor:
                cursor.execute(f"DROP USER IF EXISTS '{name}'@'%'")
                cursor.execute(f"DROP DATABASE IF EXISTS {name}")
                cursor.execute(f"DROP DATABASE IF EXISTS {state}")
        finally:
            con.close()

    url = f"mysql://{name}:{password}@127.0.0.1:3306/{name}"
    backend = MySQLBackend(
        "mysql", diff, {"type": "mysql", "url": url, "state_schema": state}, USERS_SQL, state
    )
    backend.database = name
    backend._cleanup.append(drop)
    return backend


def open_backend(name: str) -> Backend | None:
    """None for `duckdb` (the kit's own DuckDB file); else the server, `diff` as named."""
    if name == "duckdb":
        return None
    server, diff = name.split("-")
    return postgres_backend(diff) if server == "postgres" else mysql_backend(diff)


def snapshot_exists(kit: Kit, mapping: str) -> bool:
    """Whether the kit's mapping has a snapshot where its diff keeps it: the local DuckDB file
    (`diff: local`, the default) or the table in ebbtide's schema (`diff: warehouse`)."""
    if kit.backend is None or kit.backend.diff == "local":
        return (kit.root / ".ebbtide" / "snapshots" / f"{mapping}.duckdb").exists()
    return kit.backend.snapshot_exists(mapping)


def backend_kit(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Kit]:
    """A kit on the backend named by the fixture's parameter."""
    backend = open_backend(str(request.param))
    made = Kit(tmp_path, monkeypatch, backend=backend)
    try:
        yield made
    finally:
        made.close()
        if backend is not None:
            backend.close()
