"""A DuckDB model hashed where it lies, for the local diff.

Streaming a model out of its DuckDB file as Arrow, only to load every row into the scratch
database and hash it there, is most of a no-change sync's work. Instead the warehouse file is
attached read-only to the snapshot store's own connection: the keys and row hashes of every row
are computed there in one statement, and only the rows that changed (or that a replay asks
for) are copied out, once the diff has named them.

The hashes must be those the streaming path computes, or the first sync after a switch would
resend everything: the streaming path hashes each column as DuckDB sees it after a trip
through Arrow. So each mapped column is read as that trip would type it; where the trip
changes a type in a way not known to keep every value (HUGEINT, nested UUIDs, …), the model is
streamed as before.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from ebbtide.errors import SourceError
from ebbtide.ports import HASH_COLUMN
from ebbtide.snapshots.cursor import PAST_COLUMN, column_index
from ebbtide.snapshots.sql_text import bare_query, literal, quote

# Casts the Arrow trip makes that keep every value, its text included.
_SAME_VALUES = {("UUID", "VARCHAR"), ("JSON", "VARCHAR")}
# Names the store's connection already uses for its own databases.
_TAKEN = {"memory", "system", "temp", "main", "work", "snap"}
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class InPlaceModel:
    """A model's query over its DuckDB file, attached read-only to `con` as `catalog`."""

    con: duckdb.DuckDBPyConnection
    catalog: str
    query: str
    schema: pa.Schema  # the model's columns as the streaming path would see them
    _reads: dict[str, str | None]  # column → how to read it so it hashes as when streamed

    @classmethod
    def attach(
        cls,
        con: duckdb.DuckDBPyConnection,
        file: Path,
        query: str,
        trips: MutableMapping[str, str] | None = None,
    ) -> InPlaceModel | None:
        """The model in place, or None when it must be streamed: its file's name is one the
        store's connection uses, or the file cannot be attached (the streaming path then says
        why). `trips` keeps, between runs, how the Arrow trip types the model's columns."""
        catalog = file.stem
        if catalog.lower() in _TAKEN or not _PLAIN_NAME.fullmatch(catalog):
            return None  # the model's SQL may name the catalog: it keeps the file's own name
        try:
            con.execute(f"ATTACH {literal(str(file))} AS {quote(catalog)} (READ_ONLY)")
        except duckdb.Error:
            return None  # streamed instead, whose reading says what is wrong with the file
        model = cls(con, catalog, bare_query(query), pa.schema([]), {})
        try:
            model._reads, model.schema = model._how_to_read({} if trips is None else trips)
        except BaseException:
            model.detach()
            raise
        return model

    def can_read(self, columns: tuple[str, ...]) -> bool:
        """Whether these columns hash in place as they would when streamed."""
        return all(self._reads.get(c) is not None for c in columns)

    def rows(self, columns: tuple[str, ...], row_hash: str, flag: str = "") -> str:
        """SELECT of `columns` and the row hash, run in `scope()`. With `flag` (a condition on
        the model's own columns, as `m`), each row also says whether it meets it
        (PAST_COLUMN), and only the rows that do are hashed."""
        reads = ", ".join(f"{self._reads[c]} AS {quote(c)}" for c in columns)
        listed = ", ".join(quote(c) for c in columns)
        if not flag:
            return (
                f"SELECT {listed}, {row_hash} AS {HASH_COLUMN}"
                f" FROM (SELECT {reads} FROM ({self.query}\n) m) model_rows"
            )
        return (
            f"SELECT {listed}, CASE WHEN {PAST_COLUMN} THEN {row_hash} END AS {HASH_COLUMN},"
            f" {PAST_COLUMN} FROM (SELECT {reads}, coalesce({flag}, false) AS {PAST_COLUMN}"
            f" FROM ({self.query}\n) m) model_rows"
        )

    def greatest(self, column: str, where: str = "") -> object:
        """The greatest value of one of the model's columns (a cursor), over the rows `where`
        keeps."""
        column_index(self.schema.names, column)  # a column the model lacks is named as such
        with self.scope():
            row = self.con.execute(
                f"SELECT max(m.{quote(column)}) FROM ({self.query}\n) m{_where(where)}"
            ).fetchone()
        return row[0] if row else None

    @contextmanager
    def scope(self) -> Iterator[None]:
        """Unqualified names in the model's SQL resolve in its file, as they do when streamed."""
        (previous,) = self.con.execute("SELECT current_database()").fetchone() or ("memory",)
        self.con.execute(f"USE {quote(self.catalog)}")
        try:
            yield
        except (duckdb.IOException, duckdb.OutOfMemoryException):
            raise  # the scratch space's, told as a storage failure like any other
        except duckdb.Error as exc:
            raise SourceError(f"the model's SQL failed on DuckDB: {exc}") from exc
        finally:
            self.con.execute(f"USE {quote(str(previous))}")

    def detach(self) -> None:
        """Let go of the file, so that a process that writes it may open it during the load."""
        self.con.execute(f"DETACH DATABASE IF EXISTS {quote(self.catalog)}")

    def _how_to_read(
        self, trips: MutableMapping[str, str]
    ) -> tuple[dict[str, str | None], pa.Schema]:
        probe = f"SELECT * FROM ({self.query}\n) model_rows"
        with self.scope():
            native = self.con.execute(f"DESCRIBE {probe}").fetchall()
            schema = self.con.execute(f"{probe} LIMIT 0").to_arrow_table().schema
        native_types = [str(row[1]) for row in native]
        # The trip is the same for the same types and versions; scanning Arrow to learn it
        # imports pyarrow.dataset, a tenth of a no-change sync's start-up: learnt once.
        key = (
            "arrow_trip:"
            + hashlib.sha256(
                json.dumps([duckdb.__version__, pa.__version__, native_types]).encode()
            ).hexdigest()[:24]
        )
        if key in trips:
            tripped_types: list[str] = json.loads(trips[key])
        else:
            self.con.register("arrow_trip", schema.empty_table())
            try:
                tripped = self.con.execute("DESCRIBE arrow_trip").fetchall()
            finally:
                self.con.unregister("arrow_trip")
            tripped_types = [str(row[1]) for row in tripped]
            trips[key] = json.dumps(tripped_types)
        reads: dict[str, str | None] = {}
        for (name, native_type, *_), arrow_type in zip(native, tripped_types, strict=True):
            if native_type == arrow_type:
                reads[str(name)] = quote(str(name))
            elif (native_type, arrow_type) in _SAME_VALUES:
                reads[str(name)] = f"CAST({quote(str(name))} AS {arrow_type})"
            else:
                reads[str(name)] = None
        return reads, schema


def _where(condition: str) -> str:
    return f" WHERE {condition}" if condition else ""
