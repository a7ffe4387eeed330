"""The PostgreSQL destination's "emulator" is the real server on 127.0.0.1: a schema of its own
holding the destination table, refusing records through a CHECK constraint."""

from __future__ import annotations

import os
import uuid
from typing import Any

import psycopg

from tests.conformance.case import DestinationCase
from tests.emulators.base import Seen

DSN = os.environ.get("EBBTIDE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


class PostgresTable:
    """`users(id, email, name, plan)` in a fresh schema; refusals as constraints."""

    name = "postgres"

    def __init__(self, *, credential: str, **_: Any) -> None:
        self.schema = f"conf_{uuid.uuid4().hex[:10]}"
        self.seen: list[Seen] = []  # no HTTP: no requests to count
        self._reject: set[str] = set()

    @property
    def url(self) -> str:
        return DSN

    @property
    def table(self) -> str:
        return f"{self.schema}.users"

    @property
    def reject_values(self) -> set[str]:
        return self._reject

    @reject_values.setter
    def reject_values(self, values: set[str]) -> None:
        """Rows holding these emails break a CHECK: PostgreSQL refuses them one by one."""
        self._reject = set(values)
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"ALTER TABLE {self.table} DROP CONSTRAINT IF EXISTS refused")
            if values:
                listed = ", ".join("'" + v.replace("'", "''") + "'" for v in sorted(values))
                conn.execute(
                    f"ALTER TABLE {self.table} ADD CONSTRAINT refused"
                    f" CHECK (email NOT IN ({listed}))"
                )

    # A constraint refuses the statement that holds the row: the same fault, seen whole.
    refuse_whole_values = reject_values

    def held(self) -> dict[str, Any]:
        with psycopg.connect(DSN) as conn:
            rows = conn.execute(f"SELECT id, email FROM {self.table}").fetchall()
        return {str(key): email for key, email in rows}

    def __enter__(self) -> PostgresTable:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.schema}")
            conn.execute(
                f"CREATE TABLE {self.table} (id BIGINT PRIMARY KEY, email TEXT, name TEXT,"
                " plan TEXT)"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {self.schema} CASCADE")


CASE = DestinationCase(
    type="postgres",
    emulator=PostgresTable,
    settings=lambda url: {"url": url, "key": "id"},
    action="upsert",
    fields={"id": "id", "email": "email", "name": "name", "plan": "plan"},
    held=lambda table: table.held(),
    records_in=lambda seen: 0,
    record_paths=frozenset(),
    max_batch_size=100_000,
    declares_fields=False,
    http=False,
    table_setting="table",
)
