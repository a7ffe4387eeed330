"""What every command shares: the consoles, the global options and the workspace they pick."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ebbtide.config.workspace import Workspace, find_workspace, load_workspace
from ebbtide.services.sync import SyncService

out = Console()
err = Console(stderr=True)


@dataclass
class Options:
    workspace: Path | None = None
    debug: bool = False


options = Options()

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output (stable keys).")]


def workspace() -> Workspace:
    root = options.workspace if options.workspace else find_workspace(Path.cwd())
    return load_workspace(root.resolve())


def service() -> SyncService:
    return SyncService(workspace())
