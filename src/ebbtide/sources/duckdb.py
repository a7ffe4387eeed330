"""DuckDB files: the embedded default warehouse."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ebbtide.config.models import SourceConfig
from ebbtide.errors import SourceError
from ebbtide.ports import AdapterContext, SourcePlugin, iter_batches
from ebbtide.sources import BATCH_ROWS

# DuckDB and pyarrow are imported when a source is opened: loading a workspace imports each
# source type it names to check its settings, and `ebbtide runs list` does no more than that.
if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa


class DuckDBSourceConfig(SourceConfig):
    path: str
    memory_limit: str = "256MB"


class DuckDBSource:
    """Reads a DuckDB file, read-only, streaming Arrow batches."""

    def __init__(self, path: Path, memory_limit: str) -> None:
        if not path.is_file():
            raise SourceError(f"DuckDB file {path} does not exist")
        self._path = path
        # Readers not yet read to the end, by id: each holds the database (and its file lock)
        # open past the connection's close, so `close` ends them first.
        self._reading: dict[int, pa.RecordBatchReader] = {}
        self._memory_limit = memory_limit
        self._con: duckdb.DuckDBPyConnection | None = self._open()

    def _open(self) -> duckdb.DuckDBPyConnection:
        import duckdb

        try:
            return duckdb.connect(
                str(self._path),
                read_only=True,
                config={"memory_limit": self._memory_limit, "threads": 1},
            )
        except duckdb.Error as exc:
            raise SourceError(_cannot_open(self._path, exc)) from exc

    def duckdb_file(self) -> Path:
        return self._path

    def read(self, query: str) -> pa.RecordBatchReader:
        import duckdb
        import pyarrow as pa

        if self._con is None:  # closed for a diff in place that then streamed after all
            self._con = self._open()
        try:
            reader = self._con.execute(query).to_arrow_reader(BATCH_ROWS)
        except duckdb.Error as exc:
            raise SourceError(f"the model's SQL failed on DuckDB: {exc}") from exc
        self._reading[id(reader)] = reader
        return pa.RecordBatchReader.from_batches(reader.schema, self._batches(reader))

    def _batches(self, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        """DuckDB runs the query as its batches are pulled: an error in a later row, or the
        file failing underneath, arrives here (through Arrow, as an OSError)."""
        import duckdb
        import pyarrow as pa

        try:
            yield from iter_batches(reader)
        except (duckdb.Error, OSError, pa.ArrowException) as exc:
            raise SourceError(
                f"reading the model's rows from DuckDB file {self._path} failed: {exc}"
            ) from exc
        finally:
            self._reading.pop(id(reader), None)
            reader.close()

    def close(self) -> None:
        for reader in self._reading.values():
            reader.close()
        self._reading.clear()
        if self._con is not None:
            self._con.close()
            self._con = None


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
