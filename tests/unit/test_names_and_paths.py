"""Names become file names: they are checked as names when the workspace loads, a file
destination leaves the workspace only through an absolute path, and one mapping's clean-up
never removes another's scratch folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from ebbtide.config.models import NAME_RULE, WorkspaceSpec
from ebbtide.config.workspace import load_workspace
from ebbtide.snapshots.scratch import remove_orphans
from tests.unit.test_config_errors import VALID, only_error, write


@pytest.mark.parametrize(
    ("old", "new", "line", "path"),
    [
        ("  users_to_crm:", "  ../users_to_crm:", 19, "mappings.../users_to_crm"),
        ("  users:", "  us/ers:", 7, "models.us/ers"),
        ("  warehouse: {", "  -warehouse: {", 4, "sources.-warehouse"),
        ("  crm:", "  c rm:", 14, "destinations.c rm"),
        ("  users_to_crm:", "  usérs_to_crm:", 19, "mappings.usérs_to_crm"),
    ],
    ids=["mapping-dotdot", "model-slash", "source-leading-dash", "destination-space", "accent"],
)
def test_a_name_that_is_not_a_name_is_refused_at_its_line(
    tmp_path: Path, old: str, new: str, line: int, path: str
) -> None:
    write(tmp_path, VALID, replace={old: new})
    error = only_error(tmp_path)
    assert (error.line, error.path) == (line, path)
    assert "is not a valid name" in error.message and NAME_RULE in error.message


def test_names_with_dashes_underscores_and_digits_load(tmp_path: Path) -> None:
    write(tmp_path, VALID, replace={"  users_to_crm:": "  users-to_crm2:"})
    assert set(load_workspace(tmp_path).spec.mappings) == {"users-to_crm2"}


def test_a_workspace_built_in_python_checks_its_names_too() -> None:
    with pytest.raises(ValidationError, match="is not a valid name"):
        WorkspaceSpec(sources={"../warehouse": {"type": "duckdb"}})


@pytest.mark.parametrize("path", ["../users.jsonl", "out/../../users.jsonl", ".."])
def test_a_relative_file_path_that_leaves_the_workspace_is_refused(
    tmp_path: Path, path: str
) -> None:
    write(tmp_path, VALID, replace={"path: out/users.jsonl": f"path: {path}"})
    error = only_error(tmp_path)
    assert (error.line, error.path) == (13, "destinations.archive.path")
    assert "outside the workspace" in error.message and "absolute path" in error.message


@pytest.mark.parametrize("path", ["out/../users.jsonl", "/var/tmp/users.jsonl"])
def test_paths_inside_the_workspace_and_absolute_paths_are_allowed(
    tmp_path: Path, path: str
) -> None:
    write(tmp_path, VALID, replace={"path: out/users.jsonl": f"path: {path}"})
    assert "archive" in load_workspace(tmp_path).destinations


# -- scratch folders -----------------------------------------------------------------------


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_clean_up_removes_only_the_mappings_own_dead_scratch_folders(tmp_path: Path) -> None:
    dead, alive = dead_pid(), os.getpid()
    folders = {
        "own-dead": f"a-{dead}-0123abcd",
        "own-alive": f"a-{alive}-0123abcd",
        "a_b": f"a_b-{dead}-0123abcd",
        "a-b": f"a-b-{dead}-0123abcd",
        # Mapping `a-<dead pid>`'s live folder: its name starts like a dead folder of `a`.
        "a-number": f"a-{dead}-{alive}-0123abcd",
        "not-scratch": f"a-{dead}",
    }
    for name in folders.values():
        (tmp_path / name).mkdir()
    remove_orphans(tmp_path, "a")
    left = {key for key, name in folders.items() if (tmp_path / name).exists()}
    assert left == set(folders) - {"own-dead"}

    remove_orphans(tmp_path, "a_b")
    assert not (tmp_path / folders["a_b"]).exists()
    assert (tmp_path / folders["a-number"]).exists()
