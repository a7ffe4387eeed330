"""`ebbtide validate` against the model's real columns: every error a model's columns cause
names the file, the line and the key path, all of them in one pass, and exits 2.

The line numbers of WORKSPACE are shown beside it, so each expected line can be read off.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

WORKSPACE = """\
sources:
  warehouse: {type: duckdb, path: warehouse.duckdb}
models:
  users:
    source: warehouse
    primary_key: id
    sql: SELECT id, email, address FROM users
destinations:
  hook:
    type: webhook
    url: http://127.0.0.1:9/ingest
    fields: [{name: email, type: string}, {name: ltv, type: number}]
mappings:
  users_to_hook:
    model: users
    destination: hook
    action: upsert
    fields:
      email: email
      ltv: address
  users_again:
    model: users
    destination: hook
    action: upsert
    fields:
      email: mail
"""
#  1 sources / 4 users / 6 primary_key / 7 sql / 18 fields / 20 ltv / 25 fields / 26 email


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute(
            "CREATE TABLE users AS SELECT 1 AS id, 'a@example.com' AS email,"
            " {'city': 'Oslo'} AS address"
        )
    (tmp_path / "ebbtide.yml").write_text(WORKSPACE)
    return tmp_path


def validate(root: Path) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "ebbtide", "-w", str(root), "validate"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stderr


def test_each_mapping_reading_what_the_model_lacks_is_reported_at_its_line(
    workspace: Path,
) -> None:
    code, said = validate(workspace)
    file = workspace / "ebbtide.yml"
    assert code == 2
    assert "The workspace has 2 error(s):" in said
    assert (
        f"{file}:20: mappings.users_to_hook.fields.ltv: mapping 'users_to_hook': field 'ltv':"
        " address is a struct, which cannot be sent as a number"
    ) in said
    assert (
        f"{file}:26: mappings.users_again.fields.email: mapping 'users_again': field 'email':"
        " model 'users' has no column 'mail'"
    ) in said


def test_a_primary_key_the_model_lacks_points_at_the_model(workspace: Path) -> None:
    text = WORKSPACE.replace("primary_key: id", "primary_key: user_id")
    text = text.replace("ltv: address", "ltv: {value: 1}").replace("email: mail", "email: email")
    (workspace / "ebbtide.yml").write_text(text)
    code, said = validate(workspace)
    assert code == 2
    assert "The workspace has 2 error(s):" in said
    for name in ("users_to_hook", "users_again"):
        assert (
            f"{workspace / 'ebbtide.yml'}:6: models.users.primary_key: mapping {name!r}:"
            " model 'users' has no column 'user_id' (it has: id, email, address)"
        ) in said


def test_a_model_whose_sql_fails_points_at_its_sql(workspace: Path) -> None:
    text = WORKSPACE.replace("email, address FROM", "email, adress FROM")
    (workspace / "ebbtide.yml").write_text(text)
    code, said = validate(workspace)
    assert code == 2
    assert f"{workspace / 'ebbtide.yml'}:7: models.users.sql: the model's SQL failed" in said
    assert "The workspace has 1 error(s):" in said  # both mappings read it: said once
    assert "adress" in said


def test_a_source_that_cannot_be_opened_is_not_a_workspace_error(workspace: Path) -> None:
    (workspace / "warehouse.duckdb").unlink()
    code, said = validate(workspace)
    assert code == 1
    assert "warehouse.duckdb does not exist" in " ".join(said.split())
