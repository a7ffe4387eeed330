"""Shared fixtures: real servers on 127.0.0.1, skipped outside CI when they are not running."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

# The local S3 server and AWS settings: fixtures `s3_server` and `aws_env`.
pytest_plugins = ["tests.s3_kit"]

PG_DSN = os.environ.get("EBBTIDE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def require_server(port: int, name: str, how_to_start: str) -> None:
    """Skip with instructions outside CI; inside CI a missing server is a failure."""
    if _listening(port):
        return
    message = f"{name} is not running on 127.0.0.1:{port}; start it with: {how_to_start}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def pg_dsn() -> str:
    require_server(5432, "PostgreSQL", PG_START)
    return PG_DSN


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh schema in the test database, dropped afterwards."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield schema
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
