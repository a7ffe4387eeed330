"""The services of one workspace, built one way for the CLI and the Python API.

Where a workspace is found, who calls, how every mapping is checked, and which services run
over one state store: the CLI (`cli/context.py`) and `ebbtide.Workspace` both come here.
"""

from __future__ import annotations

import getpass
import os
from functools import cached_property
from pathlib import Path

from ebbtide.config.workspace import Workspace, load_workspace, workspace_root
from ebbtide.errors import ConfigError, ConfigErrors
from ebbtide.services.history import History
from ebbtide.services.replay import ReplayService
from ebbtide.services.reset import ResetService
from ebbtide.services.scheduler import ScheduleService
from ebbtide.services.sync import SyncService
from ebbtide.state.store import SqlStateStore


def open_workspace(path: Path | None) -> Workspace:
    """Load and check the workspace at `path` (see `workspace_root`); raises ConfigErrors."""
    return load_workspace(workspace_root(path))


def default_actor() -> str:
    """Who runs the command or the script, as the history records it."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def check_mappings(sync: SyncService, *, offline: bool) -> None:
    """Check every mapping against its destination action and, unless `offline`, its model's
    columns (no rows read); raises ConfigErrors with each error once."""
    errors: list[ConfigError] = []
    for name in sync.workspace.spec.mappings:
        try:
            if offline:
                sync.compile(name)
            else:
                sync.check(name)
        except ConfigError as error:
            errors.append(error)  # every mapping is checked: one pass fixes them all
    if errors:  # mappings of one model share its errors: each is said once
        raise ConfigErrors(list({e.describe(): e for e in errors}.values()))


class WorkspaceServices:
    """The services of one loaded workspace over one state store; `close()` releases it."""

    def __init__(self, workspace: Workspace, state: SqlStateStore | None = None) -> None:
        self.workspace = workspace
        self.store = state or SqlStateStore(workspace.spec.state, workspace.root)
        self.sync = SyncService(workspace, self.store)

    @classmethod
    def open(cls, path: Path | None) -> WorkspaceServices:
        return cls(open_workspace(path))

    @cached_property
    def history(self) -> History:
        return History(self.workspace, self.store)

    @cached_property
    def resets(self) -> ResetService:
        return ResetService(self.sync)

    @cached_property
    def replays(self) -> ReplayService:
        return ReplayService(self.sync)

    @cached_property
    def schedules(self) -> ScheduleService:
        return ScheduleService(self.workspace, self.store)

    def close(self) -> None:
        self.store.dispose()
