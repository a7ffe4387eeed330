"""`ebbtide users` as an admin runs it: the first admin, the list, a role change, a disabled
user; the password never shows in any output or in the state store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from ebbtide.services.workspace_init import init_workspace
from tests.e2e.test_cli import ebbtide

PASSWORD = "a long enough passphrase"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    init_workspace(root, demo=True)
    return root


def test_the_first_admin_then_a_viewer_listed_changed_and_disabled(workspace: Path) -> None:
    made = ebbtide(
        workspace,
        "users",
        "create",
        "Ops@Example.com",
        "--role",
        "admin",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert made.returncode == 0, made.stderr
    assert "ops@example.com (admin) created" in made.stderr
    viewer = ebbtide(
        workspace, "users", "create", "ada@example.com", "--password-stdin", stdin=PASSWORD
    )
    assert viewer.returncode == 0, viewer.stderr
    twice = ebbtide(
        workspace, "users", "create", "ada@example.com", "--password-stdin", stdin=PASSWORD
    )
    assert twice.returncode != 0 and "exists already" in twice.stderr
    assert ebbtide(workspace, "users", "set-role", "ada@example.com", "editor").returncode == 0
    assert ebbtide(workspace, "users", "disable", "ada@example.com").returncode == 0
    listed = json.loads(ebbtide(workspace, "users", "list", "--json").stdout)
    assert [(u["email"], u["role"], u["disabled"]) for u in listed] == [
        ("ada@example.com", "editor", True),
        ("ops@example.com", "admin", False),
    ]
    state = next((workspace / ".ebbtide").glob("*.db"))
    with sqlite3.connect(state) as db:
        hashes = [row[0] for row in db.execute("SELECT password_hash FROM ui_users")]
    assert all(h.startswith("$argon2") and PASSWORD not in h for h in hashes)
    for done in (made, viewer, twice):
        assert PASSWORD not in done.stdout + done.stderr


def test_bad_input_changes_nothing_and_says_why(workspace: Path) -> None:
    short = ebbtide(workspace, "users", "create", "a@example.com", "--password-stdin", stdin="x")
    assert short.returncode == 2 and "at least 10 characters" in short.stderr
    empty = ebbtide(workspace, "users", "create", "a@example.com", "--password-stdin", stdin="")
    assert empty.returncode == 2 and "held no password" in empty.stderr
    bad = ebbtide(workspace, "users", "create", "not-an-email", "--password-stdin", stdin=PASSWORD)
    assert bad.returncode == 2 and "is not an email address" in bad.stderr
    unknown = ebbtide(workspace, "users", "disable", "nobody@example.com")
    assert unknown.returncode == 2 and "no user nobody@example.com" in unknown.stderr
    assert json.loads(ebbtide(workspace, "users", "list", "--json").stdout) == []
    for done in (short, empty, bad, unknown):
        assert "Traceback" not in done.stderr
