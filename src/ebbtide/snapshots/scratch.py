"""Scratch folders of runs: one per run, and those of dead processes removed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def remove_orphans(work: Path, mapping: str) -> None:
    """Scratch folders of processes that died (SIGKILL) without cleaning up after themselves."""
    for folder in work.glob(f"{mapping}-*-*"):
        pid = folder.name.removeprefix(f"{mapping}-").split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
