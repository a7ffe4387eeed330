"""`change_detection: {cursor: …}` on the warehouses a model is streamed from: PostgreSQL
(timestamptz), MariaDB (DATETIME) and DuckDB (hashed where it lies), through the sync
service, with the history saying how each run found its changes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from ebbtide.config.workspace import load_workspace
from ebbtide.errors import ConfigErrors
from ebbtide.services.history import History
from ebbtide.services.sync import SyncService
from ebbtide.values import RunStatus
from tests.integration.warehouse_kit import Backend, mysql_backend, postgres_backend

CURSOR_TYPES = {"postgres": "timestamptz", "mysql": "DATETIME(6)", "duckdb": "TIMESTAMP"}
NOW = {"postgres": "now()", "mysql": "UTC_TIMESTAMP(6)", "duckdb": "now()::TIMESTAMP"}


class Warehouse:
    """`people(id, name, updated_at)` on one server, and how to write to it."""

    def __init__(self, kind: str, root: Path, backend: Backend | None) -> None:
        self.kind, self.root, self.backend = kind, root, backend

    def execute(self, *statements: str) -> None:
        if self.backend is not None:
            self.backend.execute(*statements)
            return
        with duckdb.connect(str(self.root / "warehouse.duckdb")) as con:
            for statement in statements:
                con.execute(statement)

    def source(self) -> dict[str, Any]:
        if self.backend is not None:
            return {k: v for k, v in self.backend.source.items() if k != "state_schema"}
        return {"type": "duckdb", "path": "warehouse.duckdb"}


@pytest.fixture(params=["duckdb", "postgres", "mysql"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    kind = request.param
    backend = {"postgres": postgres_backend, "mysql": mysql_backend}.get(kind)
    opened = backend("local") if backend else None
    try:
        found = Warehouse(kind, tmp_path, opened)
        found.execute(
            "DROP TABLE IF EXISTS people",
            f"CREATE TABLE people (id BIGINT PRIMARY KEY, name VARCHAR(100),"
            f" updated_at {CURSOR_TYPES[kind]})",
            "INSERT INTO people VALUES "
            + ", ".join(f"({i}, 'person {i}', {NOW[kind]})" for i in range(1, 21)),
        )
        yield found
    finally:
        if opened is not None:
            for cleanup in opened._cleanup:
                cleanup()


def write_workspace(root: Path, warehouse: Warehouse, detection: dict[str, Any]) -> None:
    spec = {
        "sources": {"warehouse": warehouse.source()},
        "models": {
            "people": {
                "source": "warehouse",
                "primary_key": "id",
                "sql": "SELECT id, name, updated_at FROM people",
            }
        },
        "destinations": {"out": {"type": "file", "path": "out.jsonl"}},
        "mappings": {
            "people_out": {
                "model": "people",
                "destination": "out",
                "action": "upsert",
                "fields": {"name": "name"},
                "change_detection": detection,
            }
        },
    }
    (root / "ebbtide.yml").write_text(yaml.safe_dump(spec))


def sync(root: Path) -> Any:
    service = SyncService(load_workspace(root))
    try:
        return service.run("people_out")
    finally:
        service.state.dispose()


def test_a_cursor_sync_finds_updates_adds_and_deletes_and_says_how(
    tmp_path: Path, warehouse: Warehouse
) -> None:
    write_workspace(tmp_path, warehouse, {"cursor": "updated_at", "lookback": "0s"})
    first = sync(tmp_path)
    assert (first.status, first.added, first.detection) == (
        RunStatus.SUCCESS, 20, "full: no snapshot yet"
    )  # fmt: skip
    quiet = sync(tmp_path)
    assert (quiet.added, quiet.updated, quiet.deleted, quiet.detection) == (0, 0, 0, "cursor")

    later = (
        "updated_at + INTERVAL '1' HOUR"
        if warehouse.kind != "mysql"
        else ("updated_at + INTERVAL 1 HOUR")
    )
    warehouse.execute(
        f"UPDATE people SET name = 'renamed', updated_at = {later} WHERE id IN (3, 4)",
        "DELETE FROM people WHERE id = 5",
        f"INSERT INTO people VALUES (21, 'new', {NOW[warehouse.kind]})",
    )
    changed = sync(tmp_path)
    assert (changed.status, changed.extracted) == (RunStatus.SUCCESS, 20)
    assert (changed.added, changed.updated, changed.deleted) == (1, 2, 1)
    assert changed.detection == "cursor"
    sent = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert {r["key"] for r in sent[20:]} == {3, 4, 21}

    service = SyncService(load_workspace(tmp_path))
    try:
        shown = History(service.workspace, service.state).run(changed.id)
    finally:
        service.state.dispose()
    assert shown.detection == "cursor"  # as the CLI's --json, the API and the UI show it


def test_a_cursor_with_the_warehouse_diff_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "ebbtide.yml").write_text(
        yaml.safe_dump(
            {
                "sources": {"w": {"type": "postgres", "url": "postgresql://127.0.0.1/test"}},
                "models": {"m": {"source": "w", "primary_key": "id", "sql": "SELECT 1 AS id"}},
                "destinations": {"out": {"type": "file", "path": "out.jsonl"}},
                "mappings": {
                    "m_out": {
                        "model": "m",
                        "destination": "out",
                        "action": "upsert",
                        "diff": "warehouse",
                        "fields": {"id": "id"},
                        "change_detection": {"cursor": "updated_at"},
                    }
                },
            }
        )
    )
    with pytest.raises(ConfigErrors, match="change_detection applies to the local diff"):
        load_workspace(tmp_path)
