"""JSONL files: one line per record operation, for debugging and demos."""

from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import IO, cast

from pydantic import field_validator

from ebbtide.config.models import DestinationConfig
from ebbtide.ports import (
    RECORD_COLUMN,
    ActionSpec,
    AdapterContext,
    BatchResult,
    DestinationPlugin,
    OutboundBatch,
)


class FileDestinationConfig(DestinationConfig):
    path: str
    concurrency: int = 1

    @field_validator("path")
    @classmethod
    def _stays_inside_unless_absolute(cls, value: str) -> str:
        """A relative path is the workspace's; leaving it takes an absolute path, on purpose."""
        if PurePath(value).is_absolute():
            return value
        if PurePath(os.path.normpath(value)).parts[:1] == ("..",):
            raise ValueError(
                f"{value!r} leads outside the workspace (through '..'): write a path inside"
                " the workspace, or an absolute path if the file is meant to be elsewhere"
            )
        return value


class FileDestination:
    """Appends each record as `{"op", "key", "data"}` on its own line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    async def send(self, batch: OutboundBatch) -> BatchResult:
        assert self._file is not None, "open() comes first"
        lines = cast(list[str], batch.records.column(RECORD_COLUMN).to_pylist())
        self._file.write("\n".join(lines) + "\n")
        self._file.flush()
        return BatchResult()

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


ACTIONS = {
    "append": ActionSpec(
        "append", "Append each record operation as one JSON line.", field_columns=False
    ),
    "upsert": ActionSpec(
        "upsert", "Same as append: the file keeps every operation in order.", field_columns=False
    ),
}


def _build(config: FileDestinationConfig, context: AdapterContext) -> FileDestination:
    return FileDestination(context.root / config.path)


PLUGIN = DestinationPlugin(config=FileDestinationConfig, actions=ACTIONS, build=_build)
