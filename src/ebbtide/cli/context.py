"""What every command shares: the consoles, the global options and the workspace they pick.

Nothing heavy is imported here or at the top of any `cli/` module: `ebbtide --help` loads
Typer and Rich alone, and each command imports the services it calls when it runs
(`tests/unit/test_lean_imports.py` holds that line).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from ebbtide.config.workspace import Workspace
    from ebbtide.services.history import History
    from ebbtide.services.sync import SyncService
    from ebbtide.services.views import RunView
    from ebbtide.values import RunFilter

out = Console()
err = Console(stderr=True)


@dataclass
class Options:
    workspace: Path | None = None
    debug: bool = False
    # The loaded workspace's secret masking, for messages printed outside any command.
    redact: Callable[[str], str] = field(default=lambda text: text)


options = Options()

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output (stable keys).")]


def workspace() -> Workspace:
    from ebbtide.config.workspace import load_workspace, workspace_root

    loaded = load_workspace(workspace_root(options.workspace))
    options.redact = loaded.redact
    return loaded


def service() -> SyncService:
    from ebbtide.services.sync import SyncService

    return SyncService(workspace())


def history(sync: SyncService) -> History:
    """The read service over the same workspace and state store as `sync`."""
    from ebbtide.services.history import History

    return History(sync.workspace, sync.state)


def recent_runs(mapping: str | None, limit: int, where: RunFilter) -> list[RunView]:
    """`History.runs` over the workspace's state store, for `runs list`.

    The one read that skips the services: importing `ebbtide.services.history` and
    `ebbtide.services.sync` brings pyarrow.compute, Parquet, DuckDB and aiohttp, and this
    listing needs only the workspace, the state store and the run's view.
    """
    from ebbtide.services.views import RunView
    from ebbtide.state.store import SqlStateStore

    loaded = workspace()
    state = SqlStateStore(loaded.spec.state, loaded.root)
    try:
        if mapping is not None:
            loaded.mapping(mapping)  # an unknown name is a usage error, not no runs
        return [RunView.of(r) for r in state.list_runs(mapping, limit, where=where)]
    finally:
        state.dispose()
