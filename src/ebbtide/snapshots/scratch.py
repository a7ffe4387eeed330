"""Scratch folders of runs: one per run, and those of dead processes removed.

A folder is named `<mapping>-<pid>-<token>`. Mapping names may hold `-` and `_`, so a folder
is told apart by its last two parts, and belongs to a mapping only when what is left is the
mapping's name exactly: clean-up for `a` never touches `a_b-…` or `a-b-…`.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

_TAIL = re.compile(r"^(?P<mapping>.+)-(?P<pid>[0-9]+)-(?P<token>[0-9a-f]{8})$")


# Space held for the whole run and given back with the scratch folder: a run that fills the
# disk can still record its failure in a state store on the same disk.
RESERVE_BYTES = 1 << 20


def new_scratch(work: Path, mapping: str) -> Path:
    """A fresh scratch folder for one run of `mapping`, after clearing out dead runs'.

    A disk without room for the reserve fails here, before anything is read or sent.
    """
    remove_orphans(work, mapping)
    folder = work / f"{mapping}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    try:
        with open(folder / "reserve", "wb") as reserve:
            os.posix_fallocate(reserve.fileno(), 0, RESERVE_BYTES)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def remove_orphans(work: Path, mapping: str) -> None:
    """Scratch folders of this mapping's processes that died (SIGKILL) without cleaning up."""
    if not work.is_dir():
        return
    for folder in work.iterdir():
        owner = owner_of(folder.name)
        if owner is not None and owner[0] == mapping and not _alive(owner[1]):
            shutil.rmtree(folder, ignore_errors=True)


def owner_of(name: str) -> tuple[str, int] | None:
    """The mapping and process a scratch folder's name says it belongs to."""
    match = _TAIL.match(name)
    return (match["mapping"], int(match["pid"])) if match else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
