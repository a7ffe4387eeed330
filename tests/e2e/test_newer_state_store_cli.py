"""A state store written by a newer ebbtide is refused with a message, never migrated or
misread: this version does not know its tables."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.e2e.test_cli import ebbtide, workspace  # noqa: F401 - the fixture is used by name

EXIT_STORAGE = 5


def _revision(state_db: Path) -> list[str]:
    with sqlite3.connect(state_db) as db:
        return [row[0] for row in db.execute("SELECT version_num FROM alembic_version")]


def test_a_store_from_a_newer_ebbtide_is_refused_with_a_clear_message(
    workspace: Path,  # noqa: F811
) -> None:
    created = ebbtide(workspace, "runs", "list", "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout) == []
    state_db = workspace / ".ebbtide" / "state.db"
    with sqlite3.connect(state_db) as db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")

    for command in (("runs", "list"), ("sync", "run", "users_to_archive")):
        refused = ebbtide(workspace, *command)
        assert refused.returncode == EXIT_STORAGE, refused.stderr
        message = " ".join(refused.stderr.split())
        assert "Traceback" not in refused.stderr and "internal error" not in message
        assert f"the state store {state_db} was written by a newer ebbtide" in message
        assert "(revision 9999); upgrade ebbtide" in message
        assert refused.stdout == ""
    assert _revision(state_db) == ["9999"]  # refused, not downgraded or stamped over
