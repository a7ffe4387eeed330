"""What every command shares: the consoles, the global options and the workspace they pick."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ebbtide.config.workspace import Workspace
from ebbtide.services.history import History
from ebbtide.services.sync import SyncService
from ebbtide.services.workspace_services import open_workspace

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
    loaded = open_workspace(options.workspace)
    options.redact = loaded.redact
    return loaded


def service() -> SyncService:
    return SyncService(workspace())


def history(sync: SyncService) -> History:
    """The read service over the same workspace and state store as `sync`."""
    return History(sync.workspace, sync.state)
