"""Names and paths through the real `ebbtide` command: a mapping named to climb out of the
workspace is refused before anything is written, and a file destination writes outside the
workspace only where an absolute path says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import yaml

ROWS = 5


def workspace(root: Path, *, mapping: str, file_path: str) -> Path:
    root.mkdir(parents=True)
    with duckdb.connect(str(root / "warehouse.duckdb")) as con:
        con.execute(
            f"CREATE TABLE users AS SELECT i AS id, 'u' || i AS name FROM range({ROWS}) t(i)"
        )
    doc = {
        "sources": {"warehouse": {"type": "duckdb", "path": "warehouse.duckdb"}},
        "models": {"users": {"source": "warehouse", "primary_key": "id", "table": "users"}},
        "destinations": {"archive": {"type": "file", "path": file_path}},
        "mappings": {
            mapping: {
                "model": "users",
                "destination": "archive",
                "action": "append",
                "fields": {"name": "name"},
            }
        },
    }
    (root / "ebbtide.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


def ebbtide(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ebbtide", "-w", str(root), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_a_mapping_named_to_climb_out_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    name = "../../../escaped"
    root = workspace(tmp_path / "ws", mapping=name, file_path="out/users.jsonl")
    before = files_under(tmp_path)
    for args in (("validate", "--offline"), ("sync", "run", name)):
        done = ebbtide(root, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "is not a valid name" in done.stderr and "ebbtide.yml:" in done.stderr
        assert "Traceback" not in done.stderr
    assert files_under(tmp_path) == before


def test_a_file_destination_leaves_the_workspace_only_through_an_absolute_path(
    tmp_path: Path,
) -> None:
    relative = workspace(tmp_path / "rel", mapping="users", file_path="../outside.jsonl")
    refused = ebbtide(relative, "sync", "run", "users")
    assert refused.returncode == 2, refused.stderr
    assert "outside the workspace" in refused.stderr and "absolute path" in refused.stderr
    assert not (tmp_path / "outside.jsonl").exists()

    target = tmp_path / "elsewhere" / "users.jsonl"
    absolute = workspace(tmp_path / "abs", mapping="users", file_path=str(target))
    done = ebbtide(absolute, "sync", "run", "users", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["loaded_new"] == ROWS
    assert len(target.read_text().splitlines()) == ROWS
