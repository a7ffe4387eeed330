"""Parquet, CSV and JSON files (or globs of them) read through an in-memory DuckDB.

For teams whose warehouse is a lake folder: each configured path becomes a view, and a model's
SQL selects from those views. Nothing is ever written to the files.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from ebbtide.config.models import SourceConfig, Spec
from ebbtide.errors import SourceError
from ebbtide.ports import AdapterContext, SourcePlugin, iter_batches
from ebbtide.sources import BATCH_ROWS

# DuckDB and pyarrow are imported when a source is opened, not when a workspace that names
# one is loaded.
if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

Format = Literal["parquet", "csv", "json"]
# How a file's name tells its format; `format:` says it where the name does not.
_SUFFIXES: dict[str, Format] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
}
_COMPRESSED = (".gz", ".zst")
_VIEW_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class FileTable(Spec):
    """One view: a file or glob, its format, and the CSV options DuckDB would otherwise sniff."""

    path: str
    format: Format | None = None
    header: bool | None = None  # CSV: whether the first line names the columns
    delimiter: str | None = Field(default=None, min_length=1, max_length=1)  # CSV

    @model_validator(mode="after")
    def _format_known(self) -> FileTable:
        if self.format is None and _format_of(self.path) is None:
            raise ValueError(
                f"cannot tell the format of {self.path!r} from its name: add"
                " `format: parquet`, `format: csv` or `format: json`"
            )
        if (self.header is not None or self.delimiter is not None) and self.file_format != "csv":
            raise ValueError(f"header and delimiter apply to CSV files, not to {self.path!r}")
        return self

    @property
    def file_format(self) -> Format:
        found = self.format or _format_of(self.path)
        assert found is not None  # checked by the validator
        return found


class FilesSourceConfig(SourceConfig):
    """`path:` (a file or glob) read as the view `view` (default `files`), and/or `tables:`,
    a view name for each further path."""

    path: str | None = None
    view: str = Field(default="files", pattern=_VIEW_NAME)
    format: Format | None = None
    header: bool | None = None
    delimiter: str | None = Field(default=None, min_length=1, max_length=1)
    tables: dict[str, FileTable] = Field(default_factory=dict)
    memory_limit: str = "256MB"

    @field_validator("tables")
    @classmethod
    def _view_names(cls, tables: dict[str, FileTable]) -> dict[str, FileTable]:
        bad = [name for name in tables if not re.match(_VIEW_NAME, name)]
        if bad:
            raise ValueError(
                f"view names must be plain SQL identifiers (letters, digits, _): {bad}"
            )
        return tables

    @model_validator(mode="after")
    def _some_path(self) -> FilesSourceConfig:
        if self.path is None:
            if not self.tables:
                raise ValueError("give `path:` (a file or glob) or `tables:` (view: path)")
            if self.format or self.header is not None or self.delimiter:
                raise ValueError("format, header and delimiter go with `path:`")
        elif self.view in self.tables:
            raise ValueError(f"the view {self.view!r} is both `view:` and one of `tables:`")
        else:
            self.views()  # checks the format of `path`
        return self

    def views(self) -> dict[str, FileTable]:
        """Every view the source declares, by name."""
        views = dict(self.tables)
        if self.path is not None:
            views[self.view] = FileTable(
                path=self.path, format=self.format, header=self.header, delimiter=self.delimiter
            )
        return views


def _format_of(path: str) -> Format | None:
    # `events/*.json*` matches .json and .jsonl alike: its format is still JSON.
    suffixes = [s.lower().rstrip("*?") for s in PurePath(path).suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes.pop()
    return _SUFFIXES.get(suffixes[-1]) if suffixes else None


class FilesSource:
    """Views over files in an in-memory DuckDB; a model's query streams as Arrow batches."""

    def __init__(self, views: dict[str, FileTable], root: Path, memory_limit: str) -> None:
        import duckdb

        self._paths = {name: _resolve(root, table.path) for name, table in views.items()}
        self.where = ", ".join(f"{name} = {path}" for name, path in self._paths.items())
        self._reading: dict[int, pa.RecordBatchReader] = {}
        # An in-memory database spills to a folder of ours, not to `.tmp` wherever we run.
        self._spill = tempfile.mkdtemp(prefix="ebbtide-files-")
        config: dict[str, str | bool | int | float | list[str]] = {
            "memory_limit": memory_limit,
            "threads": 1,
            "temp_directory": self._spill,
        }
        self._con = duckdb.connect(":memory:", config=config)
        try:
            self._con.execute("SET TimeZone = 'UTC'")  # timestamps with a zone come out in UTC
            for name, table in views.items():
                self._create_view(name, table, self._paths[name])
        except SourceError:
            self.close()
            raise

    def _create_view(self, name: str, table: FileTable, path: str) -> None:
        """DuckDB reads the files' schema here: no match, or an unreadable file, fails now."""
        import duckdb

        try:
            self._con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM {_reader(table, path)}')
        except duckdb.Error as exc:
            if "No files found" in str(exc):
                raise SourceError(
                    f"no file matches {path} (the files source's view {name}): check the path;"
                    " a relative one starts at the workspace folder"
                ) from exc
            raise SourceError(
                f"cannot read {path} as {table.file_format} (the files source's view {name}):"
                f" {_say(exc)}"
            ) from exc

    def read(self, query: str) -> pa.RecordBatchReader:
        import duckdb
        import pyarrow as pa

        self._check_reads_only(query)
        try:
            reader = self._con.execute(query).to_arrow_reader(BATCH_ROWS)
        except duckdb.Error as exc:
            raise SourceError(
                f"the model's SQL failed on the files source ({self.where}): {_say(exc)}"
            ) from exc
        self._reading[id(reader)] = reader
        return pa.RecordBatchReader.from_batches(reader.schema, self._batches(reader))

    def _check_reads_only(self, query: str) -> None:
        """One SELECT: a COPY … TO, ATTACH or INSTALL would write, to the lake or elsewhere."""
        import duckdb

        try:
            statements = self._con.extract_statements(query)
        except duckdb.Error as exc:
            raise SourceError(
                f"the model's SQL failed on the files source ({self.where}): {_say(exc)}"
            ) from exc
        kinds = [statement.type for statement in statements]
        if kinds != [duckdb.StatementType.SELECT]:
            said = ", ".join(kind.name for kind in kinds) or "nothing"
            raise SourceError(
                f"a model on the files source ({self.where}) must be one SELECT query, not"
                f" {said}: the source only reads"
            )

    def _batches(self, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        """DuckDB reads the files as batches are pulled: an unreadable row group, a file
        emptied underneath, or an error in a later row arrives here."""
        import duckdb
        import pyarrow as pa

        try:
            yield from iter_batches(reader)
        except (duckdb.Error, OSError, pa.ArrowException) as exc:
            raise SourceError(
                f"reading the model's rows from the files source ({self.where}) failed: {exc}"
            ) from exc
        finally:
            self._reading.pop(id(reader), None)
            reader.close()

    def close(self) -> None:
        for reader in self._reading.values():
            reader.close()
        self._reading.clear()
        self._con.close()
        shutil.rmtree(self._spill, ignore_errors=True)


def _resolve(root: Path, path: str) -> str:
    """A relative path (or glob) is the workspace's."""
    return path if PurePath(path).is_absolute() else str(root / path)


def _reader(table: FileTable, path: str) -> str:
    """The DuckDB table function that reads `path`; columns are matched by name across
    the files of a glob, and hive partitions (`year=2024/`) become columns."""
    literal = "'" + path.replace("'", "''") + "'"
    if table.file_format == "parquet":
        return f"read_parquet({literal}, union_by_name = true)"
    if table.file_format == "json":
        # `auto`: newline-delimited records or a JSON array of records, file by file.
        return f"read_json({literal}, format = 'auto', union_by_name = true)"
    options = ["union_by_name = true"]
    if table.header is not None:
        options.append(f"header = {str(table.header).lower()}")
    if table.delimiter is not None:
        options.append("delim = '" + table.delimiter.replace("'", "''") + "'")
    return f"read_csv({literal}, {', '.join(options)})"


def _say(error: duckdb.Error) -> str:
    return " ".join(str(error).split())


def _connect(config: FilesSourceConfig, context: AdapterContext) -> FilesSource:
    return FilesSource(config.views(), context.root, config.memory_limit)


PLUGIN = SourcePlugin(config=FilesSourceConfig, connect=_connect)
