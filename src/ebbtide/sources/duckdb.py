"""DuckDB files: the embedded default warehouse."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pyarrow as pa

from ebbtide.config.models import SourceConfig
from ebbtide.errors import SourceError
from ebbtide.ports import AdapterContext, SourcePlugin
from ebbtide.sources import BATCH_ROWS


class DuckDBSourceConfig(SourceConfig):
    path: str
    memory_limit: str = "256MB"


class DuckDBSource:
    """Reads a DuckDB file, read-only, streaming Arrow batches."""

    def __init__(self, path: Path, memory_limit: str) -> None:
        if not path.is_file():
            raise SourceError(f"DuckDB file {path} does not exist")
        try:
            self._con = duckdb.connect(
                str(path), read_only=True, config={"memory_limit": memory_limit, "threads": 1}
            )
        except duckdb.Error as exc:
            raise SourceError(_cannot_open(path, exc)) from exc

    def read(self, query: str) -> pa.RecordBatchReader:
        try:
            return self._con.execute(query).to_arrow_reader(BATCH_ROWS)
        except duckdb.Error as exc:
            raise SourceError(f"the model's SQL failed on DuckDB: {exc}") from exc

    def close(self) -> None:
        self._con.close()


def _cannot_open(path: Path, error: duckdb.Error) -> str:
    holder = _LOCK_HOLDER.search(str(error))
    if holder is None:
        return f"cannot open DuckDB file {path}: {error}"
    # DuckDB lets one process write a file, or any number read it, never both at once.
    return (
        f"the warehouse file {path} is locked by another process ({holder['program']},"
        f" pid {holder['pid']}) that has it open for writing; nothing was read or sent. Run"
        " the sync again once that process has closed the file, or point the source at a"
        " copy that nothing writes to."
    )


_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")


def _connect(config: DuckDBSourceConfig, context: AdapterContext) -> DuckDBSource:
    return DuckDBSource(context.root / config.path, config.memory_limit)


PLUGIN = SourcePlugin(config=DuckDBSourceConfig, connect=_connect)
