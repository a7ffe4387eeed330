"""Where a command finds its workspace: `--workspace` as a folder or its `ebbtide.yml`, or the
nearest folder holding one."""

from __future__ import annotations

from pathlib import Path

import pytest

from ebbtide.config.workspace import workspace_root
from ebbtide.errors import ConfigError


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "ws" / "sub").mkdir(parents=True)
    (tmp_path / "ws" / "ebbtide.yml").write_text("state: sqlite:///.ebbtide/state.db\n")
    (tmp_path / "ws" / "other.yml").write_text("")
    monkeypatch.chdir(tmp_path / "ws" / "sub")
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("given", [None, "ws", "ws/ebbtide.yml", "~/ws"])
def test_a_folder_its_file_or_the_nearest_parent_is_the_workspace(
    tree: Path, given: str | None
) -> None:
    path = None if given is None else Path(given) if given.startswith("~") else tree / given
    assert workspace_root(path) == (tree / "ws").resolve()


def test_a_folder_given_is_taken_as_it_is(tree: Path) -> None:
    assert workspace_root(tree / "ws" / "sub") == (tree / "ws" / "sub").resolve()


def test_a_yaml_file_of_another_name_is_refused_naming_it(tree: Path) -> None:
    with pytest.raises(ConfigError, match="named ebbtide.yml") as refused:
        workspace_root(tree / "ws" / "other.yml")
    assert str(tree / "ws" / "other.yml") in refused.value.describe()


def test_no_workspace_up_the_tree_says_how_to_make_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="ebbtide init"):
        workspace_root(None)
