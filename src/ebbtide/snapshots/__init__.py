"""Snapshot stores: per mapping, primary key → hash of the row the destination accepted."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ebbtide.mapping.compiler import CompiledMapping

if TYPE_CHECKING:
    from ebbtide.config.models import SnapshotsSpec
    from ebbtide.ports import SnapshotPointerBook, WarehouseSession
    from ebbtide.snapshots.duckdb import DuckDBSnapshotStore
    from ebbtide.snapshots.remote import SharedSnapshots
    from ebbtide.values import Lease


def open_snapshot_store(
    state_dir: Path,
    mapping: CompiledMapping,
    *,
    read_only: bool = False,
    max_record_bytes: int | None = None,
    shared: SharedSnapshots | None = None,
    lease: Lease | None = None,
    warehouse: WarehouseSession | None = None,
) -> DuckDBSnapshotStore:
    """The snapshot store of `mapping`, the one place services get one from.

    The DuckDB file under the workspace's `.ebbtide/`; with `shared` (the workspace's
    `snapshots:` setting), that file is a cache of the version every worker reads: fetched
    here, published at commit under the run's `lease`; with `warehouse` (`diff: warehouse`),
    the snapshot is a table in the warehouse, fenced by the run of `lease`. DuckDB is imported
    on first use, so importing this package stays cheap.
    """
    from ebbtide.snapshots.duckdb import DuckDBSnapshotStore

    if warehouse is not None:  # `diff: warehouse`: the snapshot is a table there
        from ebbtide.snapshots.warehouse import WarehouseSnapshotStore

        return WarehouseSnapshotStore(
            state_dir,
            mapping,
            warehouse,
            run_id=lease.run_id if lease is not None else None,
            read_only=read_only,
            max_record_bytes=max_record_bytes,
        )
    if shared is None:
        return DuckDBSnapshotStore(
            state_dir, mapping, read_only=read_only, max_record_bytes=max_record_bytes
        )
    from ebbtide.snapshots.shared import SharedSnapshotStore, open_read_only

    if read_only:
        return open_read_only(state_dir, mapping, shared, max_record_bytes=max_record_bytes)
    assert lease is not None, "a shared snapshot is written under the run's lease"
    return SharedSnapshotStore(state_dir, mapping, shared, lease, max_record_bytes=max_record_bytes)


def shared_snapshots(
    spec: SnapshotsSpec | None,
    root: Path,
    state_dir: Path,
    mapping: str,
    pointers: SnapshotPointerBook,
    keep_sent_days: float | None = None,
) -> SharedSnapshots | None:
    """Where `mapping`'s state is shared between workers; None: only in `.ebbtide/` (default)."""
    if spec is None:
        return None
    from ebbtide.snapshots.remote import SharedSnapshots, open_object_store

    return SharedSnapshots(
        open_object_store(spec, root),
        pointers,
        state_dir,
        mapping,
        spec.keep_versions,
        keep_sent_days,
    )
