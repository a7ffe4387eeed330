"""The files source: every table the suite creates is a Parquet file written with pyarrow.

The suite's statements run on a scratch DuckDB database beside the lake; after each, every
table is written to `lake/<table>.parquet` (a dropped table's file is removed) and becomes a
view of the source's `tables:`. The columns are DuckDB's, as DuckDB reads them back from
Parquet.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.conformance.source_case import DUCKDB, SourceCase, Warehouse

LAKE = "lake"
ROW_GROUP_ROWS = 16_384  # several row groups per batch: a file cut short fails mid-read


@dataclass
class LakeWarehouse:
    root: Path
    settings: dict[str, Any]

    def execute(self, *statements: str) -> None:
        with duckdb.connect(str(self.root / "scratch.duckdb")) as con:
            for statement in statements:
                con.execute(statement)
            tables = [
                row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
            ]
            for table in tables:
                self._write(con, table)
        for gone in set(self.settings["tables"]) - set(tables):
            (self.root / LAKE / f"{gone}.parquet").unlink()
            del self.settings["tables"][gone]

    def _write(self, con: duckdb.DuckDBPyConnection, table: str) -> None:
        """Written aside and renamed: a reader of the previous file keeps reading it."""
        path = self.root / LAKE / f"{table}.parquet"
        aside = path.with_suffix(".writing")
        data = con.execute(f'SELECT * FROM "{table}"').to_arrow_table()
        pq.write_table(data, aside, row_group_size=ROW_GROUP_ROWS)
        os.replace(aside, path)
        self.settings["tables"][table] = {"path": f"{LAKE}/{table}.parquet"}


@contextmanager
def _lake(root: Path, request: pytest.FixtureRequest) -> Iterator[Warehouse]:
    (root / LAKE).mkdir()
    warehouse = LakeWarehouse(root, {"type": "files", "tables": {}})
    warehouse.execute("CREATE TABLE created (one INTEGER)")  # a source needs one view
    yield warehouse


def _truncate(warehouse: Warehouse) -> None:
    """The Parquet file being read is emptied (a botched copy over it)."""
    assert isinstance(warehouse, LakeWarehouse)
    os.truncate(warehouse.root / LAKE / "big.parquet", 0)


CASE = SourceCase(
    type="files",
    says=f"{LAKE}/",  # errors name the files' paths
    warehouse=_lake,
    file=f"{LAKE}/big.parquet",
    id_type="BIGINT",
    # Every DuckDB column type survives Parquet as written by pyarrow: JSON is text there too.
    columns=DUCKDB.columns,
    series=DUCKDB.series,
    fails_at=DUCKDB.fails_at,
    fails_saying=DUCKDB.fails_saying,
    lose=_truncate,
)
