"""The files source against real Parquet, CSV and JSON files: inferred types, globs across
files, CSV options, errors that name the path, read-only models and a sync through the engine.

(The Parquet promises of the source conformance suite are in source_cases/files.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ebbtide.config.workspace import load_workspace
from ebbtide.errors import ConfigErrors, SourceError
from ebbtide.ports import AdapterContext
from ebbtide.services.sync import SyncService
from ebbtide.sources import SOURCES
from ebbtide.sources.files import FilesSource
from ebbtide.values import RunStatus


class Lake:
    """A workspace folder; `connect` builds the source from settings as the engine does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.opened: list[FilesSource] = []

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def connect(self, **settings: Any) -> FilesSource:
        plugin = SOURCES.get("files")
        config = plugin.config.model_validate({"type": "files", **settings})
        source = plugin.connect(config, AdapterContext(self.root))
        assert isinstance(source, FilesSource)
        self.opened.append(source)
        return source

    def rows(self, query: str = "SELECT * FROM files ORDER BY id", **settings: Any) -> pa.Table:
        return self.connect(**settings).read(query).read_all()


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[Lake]:
    kit = Lake(tmp_path)
    yield kit
    for source in kit.opened:
        source.close()


CSV = """id,email,score,joined,active,seen_at
1,a@example.com,1.5,2024-01-02,true,2024-01-02 03:04:05
2,b@example.com,,2024-02-29,false,
"""


def test_csv_columns_are_typed_by_what_they_hold(lake: Lake) -> None:
    lake.write("users.csv", CSV)

    table = lake.rows(path="users.csv")

    assert {f.name: f.type for f in table.schema} == {
        "id": pa.int64(),
        "email": pa.string(),
        "score": pa.float64(),
        "joined": pa.date32(),
        "active": pa.bool_(),
        "seen_at": pa.timestamp("us"),
    }
    assert table.to_pylist()[1] == {
        "id": 2,
        "email": "b@example.com",
        "score": None,
        "joined": date(2024, 2, 29),
        "active": False,
        "seen_at": None,
    }


def test_csv_header_and_delimiter_settings_override_sniffing(lake: Lake) -> None:
    # Sniffed, the first line would be taken for a header (every value is text).
    lake.write("exports/people.txt", "ana;oslo\nbo;bergen\n")

    table = lake.rows(
        "SELECT column0 AS name, column1 AS city FROM people ORDER BY name",
        tables={"people": {"path": "exports/people.txt", "header": False, "delimiter": ";"}},
    )

    assert table.to_pylist() == [
        {"name": "ana", "city": "oslo"},
        {"name": "bo", "city": "bergen"},
    ]


def test_json_lines_and_json_arrays_read_alike_with_nested_values(lake: Lake) -> None:
    lake.write(
        "events/a.jsonl",
        '{"id": 1, "name": "a", "tags": ["x", "y"], "meta": {"plan": "pro"}, "price": 1.25}\n'
        '{"id": 2, "name": null}\n',
    )
    lake.write("events/b.json", json.dumps([{"id": 3, "name": "c", "vip": True}]))

    table = lake.rows(path="events/*.json*")

    assert table.schema.field("tags").type == pa.list_(pa.string())
    assert table.schema.field("meta").type == pa.struct([("plan", pa.string())])
    assert table.schema.field("vip").type == pa.bool_()
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert rows[0]["tags"] == ["x", "y"] and rows[0]["meta"] == {"plan": "pro"}
    assert rows[1]["name"] is None and rows[2]["vip"] is True and rows[0]["vip"] is None


def test_a_glob_reads_every_matching_file_matching_columns_by_name(lake: Lake) -> None:
    for part in range(3):
        columns = {"id": [part * 10 + i for i in range(10)], "label": ["x"] * 10}
        if part == 2:  # a later file adds a column and orders them differently
            columns = {"plan": ["pro"] * 10, **columns}
        pq.write_table(pa.table(columns), lake.root / f"part-{part}.parquet")
    lake.write("notes.txt", "not a parquet file, and not matched\n")

    table = lake.rows("SELECT id, label, plan FROM files ORDER BY id", path="part-*.parquet")

    assert table.column("id").to_pylist() == list(range(30))
    assert table.column("plan").to_pylist() == [None] * 20 + ["pro"] * 10


def test_hive_partition_folders_become_columns(lake: Lake) -> None:
    for year in (2023, 2024):
        folder = lake.root / "orders" / f"year={year}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"id": [year]}), folder / "part-0.parquet")

    table = lake.rows("SELECT id, year FROM files ORDER BY id", path="orders/**/*.parquet")

    assert table.to_pylist() == [{"id": 2023, "year": 2023}, {"id": 2024, "year": 2024}]


def test_several_views_join_in_one_model(lake: Lake) -> None:
    lake.write("users.csv", CSV)
    lake.write("plans.jsonl", '{"user_id": 1, "plan": "pro"}\n{"user_id": 2, "plan": "free"}\n')

    table = lake.rows(
        "SELECT u.id, p.plan FROM users u JOIN plans p ON p.user_id = u.id ORDER BY u.id",
        path="users.csv",
        view="users",
        tables={"plans": {"path": "plans.jsonl"}},
    )

    assert table.to_pylist() == [{"id": 1, "plan": "pro"}, {"id": 2, "plan": "free"}]


def test_an_absolute_path_is_read_where_it_is(lake: Lake, tmp_path_factory: Any) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "users.csv"
    elsewhere.write_text(CSV)

    assert lake.rows(path=str(elsewhere)).num_rows == 2


def test_a_large_csv_streams_in_bounded_batches(lake: Lake) -> None:
    rows = 150_000
    lake.write("big.csv", "id,label\n" + "".join(f"{i},row {i}\n" for i in range(rows)))

    reader = lake.connect(path="big.csv").read("SELECT id, label FROM files")
    sizes = [batch.num_rows for batch in reader]

    assert sum(sizes) == rows and len(sizes) >= 3 and max(sizes) <= 65_536


# --- errors --------------------------------------------------------------------------------


def test_a_glob_matching_no_file_is_a_source_error_naming_the_path(lake: Lake) -> None:
    with pytest.raises(SourceError) as raised:
        lake.connect(path="missing/*.parquet")

    assert f"no file matches {lake.root / 'missing/*.parquet'}" in str(raised.value)


def test_an_unreadable_file_is_a_source_error_naming_the_path(lake: Lake) -> None:
    lake.write("broken.parquet", "this is not parquet")

    with pytest.raises(SourceError) as raised:
        lake.connect(path="broken.parquet")

    message = str(raised.value)
    assert f"cannot read {lake.root / 'broken.parquet'} as parquet" in message
    assert "view files" in message


def test_bad_sql_is_a_source_error_naming_the_path(lake: Lake) -> None:
    lake.write("users.csv", CSV)
    source = lake.connect(path="users.csv")

    with pytest.raises(SourceError) as raised:
        source.read("SELECT nope FROM files")

    message = str(raised.value)
    assert "nope" in message and f"files = {lake.root / 'users.csv'}" in message


def test_a_value_unlike_the_sniffed_type_fails_naming_the_path(lake: Lake) -> None:
    """DuckDB types a CSV column from a sample of its first rows; a later misfit fails
    the read, not silently becomes NULL."""
    lines = "".join(f"{i},{i}\n" for i in range(30_000))
    lake.write("late.csv", "id,amount\n" + lines + "30000,lots\n")

    with pytest.raises(SourceError) as raised:
        lake.rows("SELECT id, amount FROM files", path="late.csv")

    message = str(raised.value)
    assert "lots" in message and str(lake.root / "late.csv") in message


@pytest.mark.parametrize(
    "query",
    [
        "COPY (SELECT 1 AS x) TO 'written.csv'",
        "CREATE TABLE t AS SELECT 1",
        "SELECT 1; COPY (SELECT 1) TO 'written.csv'",
        "ATTACH 'written.duckdb'",
    ],
    ids=["copy", "create", "second-statement", "attach"],
)
def test_a_model_only_reads(lake: Lake, query: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(lake.root)
    lake.write("users.csv", CSV)
    source = lake.connect(path="users.csv")

    with pytest.raises(SourceError, match="must be one SELECT query"):
        source.read(query)

    assert sorted(p.name for p in lake.root.iterdir()) == ["users.csv"]


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({}, "give `path:`"),
        ({"path": "data.bin"}, "add `format: parquet`"),
        ({"path": "a.parquet", "header": True}, "apply to CSV files"),
        ({"path": "a.csv", "view": "drop table"}, "view"),
        ({"tables": {"bad name": {"path": "a.csv"}}}, "plain SQL identifiers"),
        ({"path": "a.csv", "tables": {"files": {"path": "b.csv"}}}, "both `view:`"),
    ],
    ids=["nothing", "unknown-format", "csv-option", "view-name", "table-name", "same-view"],
)
def test_settings_are_checked_when_the_workspace_loads(
    tmp_path: Path, settings: dict[str, Any], says: str
) -> None:
    workspace(tmp_path, settings)

    with pytest.raises(ConfigErrors) as raised:
        load_workspace(tmp_path)

    assert says in str(raised.value)


def test_a_format_setting_reads_a_file_whose_name_does_not_tell(lake: Lake) -> None:
    lake.write("export.dat", CSV)

    assert lake.rows(path="export.dat", format="csv").num_rows == 2


# --- through the engine --------------------------------------------------------------------


def workspace(root: Path, source: dict[str, Any], sql: str = "SELECT * FROM files") -> None:
    doc = {
        "sources": {"lake": {"type": "files", **source}},
        "models": {"users": {"source": "lake", "primary_key": "id", "sql": sql}},
        "destinations": {"out": {"type": "file", "path": "out.jsonl"}},
        "mappings": {
            "users_out": {
                "model": "users",
                "destination": "out",
                "action": "append",
                "fields": {"email": "email", "score": "score", "seen_at": "seen_at"},
            }
        },
    }
    (root / "ebbtide.yml").write_text(yaml.safe_dump(doc, sort_keys=False))


def sync(root: Path) -> Any:
    service = SyncService(load_workspace(root))
    try:
        return service.run("users_out")
    finally:
        service.state.dispose()


def test_a_files_model_syncs_through_the_engine_and_sees_new_files(tmp_path: Path) -> None:
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "2024-01.csv").write_text(CSV)
    workspace(
        tmp_path,
        {"path": "users/*.csv"},
        "SELECT id, email, score, seen_at FROM files WHERE active IS NOT NULL",
    )

    first = sync(tmp_path)
    (tmp_path / "users" / "2024-02.csv").write_text(
        "id,email,score,joined,active,seen_at\n3,c@example.com,2.5,2024-03-01,true,\n"
    )
    second = sync(tmp_path)

    assert (first.status, first.extracted, first.added) == (RunStatus.SUCCESS, 2, 2)
    assert (second.status, second.extracted, second.added) == (RunStatus.SUCCESS, 3, 1)
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["key"] for line in lines] == [1, 2, 3]
    assert lines[0]["data"] == {
        "email": "a@example.com",
        "score": 1.5,
        "seen_at": "2024-01-02T03:04:05.000000",  # a timestamp without zone is sent without one
    }


def test_a_run_whose_files_are_gone_fails_naming_the_path(tmp_path: Path) -> None:
    workspace(tmp_path, {"path": "users/*.csv"})

    run = sync(tmp_path)

    assert run.status is RunStatus.FAILED
    assert run.error is not None and "no file matches" in run.error and "users/*.csv" in run.error
