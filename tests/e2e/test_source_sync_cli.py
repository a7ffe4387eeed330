"""Every source type synced end to end by `ebbtide sync run`, a subprocess, to the receiver on
127.0.0.1: what arrived is what the warehouse holds.

`validate` only reads a model's columns; these syncs stream its rows, which DuckDB pulls from
the source on threads of its own (the SQLite source once failed there on every sync).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from ebbtide.demo.receiver import Receiver

ROWS = 250  # several batches of the destination
BATCH_SIZE = 40


def expected(i: int) -> dict[str, Any]:
    return {"email": f"user{i}@example.com", "score": i / 4, "note": None if i % 5 else "vip"}


ROW_VALUES = [(i, *expected(i).values()) for i in range(1, ROWS + 1)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def duckdb_source(root: Path) -> tuple[dict[str, Any], str]:
    with duckdb.connect(str(root / "warehouse.duckdb")) as con:
        con.execute("CREATE TABLE users (id BIGINT, email VARCHAR, score DOUBLE, note VARCHAR)")
        con.executemany("INSERT INTO users VALUES (?, ?, ?, ?)", ROW_VALUES)
    return {"type": "duckdb", "path": "warehouse.duckdb"}, "users"


def sqlite_source(root: Path) -> tuple[dict[str, Any], str]:
    with sqlite3.connect(root / "warehouse.sqlite") as con:
        con.execute(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, score REAL, note TEXT)"
        )
        con.executemany("INSERT INTO users VALUES (?, ?, ?, ?)", ROW_VALUES)
    con.close()
    return {"type": "sqlite", "path": "warehouse.sqlite"}, "users"


SourceMaker = Callable[[Path], tuple[dict[str, Any], str]]


def write_workspace(root: Path, source: dict[str, Any], table: str) -> None:
    doc = {
        "sources": {"warehouse": source},
        "models": {
            "users": {
                "source": "warehouse",
                "primary_key": "id",
                "sql": f"select id, email, score, note from {table}",
            }
        },
        "destinations": {
            "hook": {"type": "webhook", "url": "${HOOK_URL}", "batch_size": BATCH_SIZE}
        },
        "mappings": {
            "users": {
                "model": "users",
                "destination": "hook",
                "action": "upsert",
                "mode": "mirror",
                "fields": {"email": "email", "score": "score", "note": "note"},
            }
        },
    }
    (root / "ebbtide.yml").write_text(yaml.safe_dump(doc, sort_keys=False))


def sync(root: Path, receiver: Receiver, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ebbtide", "-w", str(root), "sync", "run", "users", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env, "HOOK_URL": receiver.url},
    )


def assert_synced_everything(root: Path, receiver: Receiver, env: dict[str, str]) -> None:
    done = sync(root, receiver, env)
    assert done.returncode == 0, done.stderr
    [run] = json.loads(done.stdout)
    assert (run["status"], run["extracted"], run["loaded_new"]) == ("success", ROWS, ROWS)
    arrived = {r["key"]: r["data"] for r in receiver.records if r["accepted"]}
    assert arrived == {i: expected(i) for i in range(1, ROWS + 1)}
    assert {r["op"] for r in receiver.records} == {"added"}

    receiver.reset()
    again = sync(root, receiver, env)  # nothing changed: nothing travels
    assert again.returncode == 0, again.stderr
    assert receiver.records == []


@pytest.mark.parametrize("make_source", [duckdb_source, sqlite_source], ids=["duckdb", "sqlite"])
def test_file_warehouses_sync_every_row_through_the_cli(
    tmp_path: Path, receiver: Receiver, make_source: SourceMaker
) -> None:
    source, table = make_source(tmp_path)
    write_workspace(tmp_path, source, table)
    assert_synced_everything(tmp_path, receiver, {})


def test_postgres_warehouse_syncs_every_row_through_the_cli(
    tmp_path: Path, receiver: Receiver, pg_dsn: str, pg_schema: str
) -> None:
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            f'CREATE TABLE "{pg_schema}".users'
            " (id BIGINT PRIMARY KEY, email TEXT, score DOUBLE PRECISION, note TEXT)"
        )
        with conn.cursor() as cursor:
            cursor.executemany(
                f'INSERT INTO "{pg_schema}".users VALUES (%s, %s, %s, %s)', ROW_VALUES
            )
    write_workspace(tmp_path, {"type": "postgres", "url": "${WAREHOUSE_URL}"}, f"{pg_schema}.users")
    assert_synced_everything(tmp_path, receiver, {"WAREHOUSE_URL": pg_dsn})
