"""Snapshot stores: per mapping, primary key → hash of the row the destination accepted."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ebbtide.mapping.compiler import CompiledMapping

if TYPE_CHECKING:
    from ebbtide.snapshots.duckdb import DuckDBSnapshotStore


def open_snapshot_store(
    state_dir: Path,
    mapping: CompiledMapping,
    *,
    read_only: bool = False,
    max_record_bytes: int | None = None,
) -> DuckDBSnapshotStore:
    """The snapshot store of `mapping`, the one place services get one from.

    Today always the local DuckDB file under the workspace's `.ebbtide/`; a store kept where
    every worker reads it (object store, warehouse) is chosen here, not in each service.
    DuckDB is imported on first use, so importing this package stays cheap.
    """
    from ebbtide.snapshots.duckdb import DuckDBSnapshotStore

    return DuckDBSnapshotStore(
        state_dir, mapping, read_only=read_only, max_record_bytes=max_record_bytes
    )
