"""An `ebbtide.yml` that is not UTF-8, or that is a YAML bomb, refused by `ebbtide validate` with
one clear message naming the file and line, and exit code 2; never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

GOOD = """\
sources:
  warehouse: {type: duckdb, path: warehouse.duckdb}
models:
  users: {source: warehouse, primary_key: id, sql: "select id, email from users"}
destinations:
  archive: {type: file, path: out/users.jsonl}
mappings:
  users:
    model: users
    destination: archive
    action: upsert
    fields: {email: email}
"""

# Nine levels of nine aliases each: 9**9 (387 million) strings once expanded.
BOMB = "\n".join(
    [
        'lol0: &l0 "lol"',
        *(f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)),
        GOOD,
    ]
)


def validate(root: Path, *, offline: bool = True) -> subprocess.CompletedProcess[str]:
    args = ["validate", "--offline"] if offline else ["validate"]
    done = subprocess.run(
        [sys.executable, "-m", "ebbtide", "-w", str(root), *args],
        capture_output=True,
        text=True,
        timeout=60,  # an expanded bomb would take far longer, or exhaust memory
        env={**os.environ, "COLUMNS": "400"},
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def said(done: subprocess.CompletedProcess[str]) -> str:
    return " ".join(done.stderr.split())


def test_a_workspace_file_that_is_not_utf8_names_the_line_and_byte(tmp_path: Path) -> None:
    text = GOOD.replace("select id, email", "select id, 'caf\u00e9' AS email")
    (tmp_path / "ebbtide.yml").write_bytes(text.encode("latin-1"))
    done = validate(tmp_path)
    assert done.returncode == 2
    offset = text.encode("latin-1").index(b"\xe9")
    column = offset - text.encode("latin-1").rindex(b"\n", 0, offset)
    assert f"{tmp_path / 'ebbtide.yml'}:4:" in said(done)
    assert (
        f"the file is not UTF-8 text: byte 0xE9 at line 4, column {column} (byte offset {offset})"
        " cannot be decoded; save the file as UTF-8"
    ) in said(done)


def test_a_utf8_file_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    (tmp_path / "ebbtide.yml").write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    done = validate(tmp_path)
    assert done.returncode == 0, done.stderr


def test_a_billion_laughs_is_refused_before_it_expands(tmp_path: Path) -> None:
    (tmp_path / "ebbtide.yml").write_text(BOMB)
    done = validate(tmp_path)
    assert done.returncode == 2
    assert f"{tmp_path / 'ebbtide.yml'}:3:" in said(done)  # where *l1 is first used
    assert "the alias *l0 repeats a whole mapping or list" not in said(done)  # l0 is text
    assert "the alias *l1 repeats a whole mapping or list, which ebbtide does not expand" in (
        said(done)
    )
    assert "write the values out where they are needed" in said(done)


def test_an_alias_of_a_single_value_is_still_allowed(tmp_path: Path) -> None:
    text = GOOD.replace("primary_key: id", "primary_key: &key id").replace(
        "fields: {email: email}", "fields: {email: email, user_id: *key}"
    )
    (tmp_path / "ebbtide.yml").write_text(text)
    done = validate(tmp_path)
    assert done.returncode == 0, done.stderr


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ebbtide.yml").write_text("loop: &x [1, *x]\n" + GOOD)
    done = validate(tmp_path)
    assert done.returncode == 2
    assert "the alias *x repeats a whole mapping or list" in said(done)


def test_a_control_character_and_deep_nesting_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "ebbtide.yml").write_text(GOOD.replace("id, email", "id,\x00 email"))
    done = validate(tmp_path)
    assert done.returncode == 2
    assert (
        f"{tmp_path / 'ebbtide.yml'}:4: not valid YAML: the control character U+0000 is not"
        " allowed in YAML"
    ) in said(done)

    (tmp_path / "ebbtide.yml").write_text("deep: " + "[" * 100_000 + "]" * 100_000 + "\n")
    done = validate(tmp_path)
    assert done.returncode == 2
    assert "values are nested too deeply" in said(done)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2021-02-30", "day is out of range for month"),
        ("!!python/object:os.system x", "could not determine a constructor for the tag"),
        ("!!binary 'zz'", "failed to decode base64 data"),
        ("!!int abc", "invalid literal for int()"),
    ],
)
def test_a_value_its_tag_or_form_does_not_fit_names_its_line(
    tmp_path: Path, value: str, reason: str
) -> None:
    text = GOOD.replace("primary_key: id,", f"primary_key: id, description: {value},")
    (tmp_path / "ebbtide.yml").write_text(text)
    done = validate(tmp_path)
    assert done.returncode == 2
    assert f"{tmp_path / 'ebbtide.yml'}:4: the value" in said(done)
    assert reason in said(done) and "quote it to keep it as text" in said(done)


def test_a_dotenv_file_or_a_model_file_that_is_not_utf8_names_it(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"TOKEN=ok\nNAME=caf\xe9\n")
    (tmp_path / "ebbtide.yml").write_text(GOOD)
    done = validate(tmp_path)
    assert done.returncode == 2
    assert f"{tmp_path / '.env'}:2: the file is not UTF-8 text: byte 0xE9 at line 2" in said(done)

    (tmp_path / ".env").unlink()
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("CREATE TABLE users AS SELECT 1 AS id, 'a' AS email")
    (tmp_path / "users.sql").write_bytes(b"select id,\n 'caf\xe9' as email from users")
    sql = 'sql: "select id, email from users"'
    (tmp_path / "ebbtide.yml").write_text(GOOD.replace(sql, "file: users.sql"))
    done = validate(tmp_path, offline=False)
    assert done.returncode == 2
    assert f"{tmp_path / 'users.sql'}:2: the file is not UTF-8 text: byte 0xE9" in said(done)
