"""The `snapshots:` setting: where mappings' snapshots are shared; errors name file, line, key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ebbtide.config.workspace import WORKSPACE_FILE, load_workspace
from ebbtide.errors import ConfigErrors

WORKSPACE = """\
state: sqlite:///.ebbtide/state.db
snapshots:
  {setting}
sources:
  warehouse: {{type: duckdb, path: warehouse.duckdb}}
models:
  users: {{source: warehouse, primary_key: id, sql: 'SELECT id, email FROM users'}}
destinations:
  archive: {{type: file, path: out/users.jsonl}}
mappings:
  users_to_archive: {{model: users, destination: archive, action: append, fields: {{email: email}}}}
"""


def load(root: Path, setting: str) -> object:
    (root / WORKSPACE_FILE).write_text(WORKSPACE.format(setting=setting))
    return load_workspace(root).spec.snapshots


def error_of(root: Path, setting: str) -> str:
    with pytest.raises(ConfigErrors) as raised:
        load(root, setting)
    [error] = raised.value.errors
    return error.describe()


@pytest.mark.parametrize(
    ("setting", "url"),
    [
        ("url: s3://acme-etl/ebbtide", "s3://acme-etl/ebbtide"),
        ("url: s3://acme-etl", "s3://acme-etl"),
        ("url: file:///mnt/share/etl", "file:///mnt/share/etl"),
        ("url: shared/etl", "shared/etl"),
    ],
)
def test_object_store_and_shared_folder_urls_are_accepted(
    tmp_path: Path, setting: str, url: str
) -> None:
    snapshots = load(tmp_path, setting)
    assert getattr(snapshots, "url", None) == url


def test_without_the_setting_snapshots_stay_in_the_workspace(tmp_path: Path) -> None:
    (tmp_path / WORKSPACE_FILE).write_text(
        WORKSPACE.format(setting="").replace("snapshots:\n  \n", "")
    )
    assert load_workspace(tmp_path).spec.snapshots is None


@pytest.mark.parametrize(
    ("setting", "words", "line"),
    [
        ("url: gs://bucket/x", "s3://bucket/prefix, file:///path or a plain path", 3),
        ("url: s3:///no-bucket", "names no bucket", 3),
        ("url: file://relative/path", "absolute path", 3),
        ("{url: 's3://b', endpoint_url: 'minio:9000'}", "not an http:// or https:// URL", 3),
        ("{url: 's3://key:secret@b/x'}", "must not hold credentials", 3),
        ("{url: 's3://b', aws_secret_access_key: abc}", "environment variables", 2),
        ("{url: 's3://b', keep_versions: 0}", "greater than or equal to 1", 3),
        ("{endpoint_url: 'http://minio:9000'}", "'url' is required", 2),
    ],
)
def test_a_wrong_setting_is_refused_with_file_line_and_key(
    tmp_path: Path, setting: str, words: str, line: int
) -> None:
    message = error_of(tmp_path, setting)
    assert words in message
    assert f"{WORKSPACE_FILE}:{line}" in message and "snapshots" in message
    assert "abc" not in message and "secret@" not in message
