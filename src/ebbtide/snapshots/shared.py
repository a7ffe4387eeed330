"""The DuckDB snapshot store of a mapping whose state is kept in a shared store.

The run works on the local copy in `.ebbtide/` exactly as the default store does; around it:
the current version is fetched when the store opens, every acknowledged batch is published as
it is journaled, and the commit publishes the new snapshot, fenced by the run's lease.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from ebbtide.mapping.compiler import CompiledMapping
from ebbtide.ports import Operation, SentLog
from ebbtide.snapshots.duckdb import DuckDBSnapshotStore
from ebbtide.snapshots.journal import AckJournal
from ebbtide.snapshots.remote import SharedSnapshots
from ebbtide.snapshots.scratch import new_scratch
from ebbtide.values import Lease


class SharedSnapshotStore(DuckDBSnapshotStore):
    """Fetched on opening, published at commit (and once before the first load)."""

    def __init__(
        self,
        state_dir: Path,
        mapping: CompiledMapping,
        shared: SharedSnapshots,
        lease: Lease,
        *,
        max_record_bytes: int | None = None,
    ) -> None:
        shared.fetch()
        self.shared, self.lease = shared, lease
        super().__init__(state_dir, mapping, max_record_bytes=max_record_bytes)

    def merge_journals(self, unsent: frozenset[Operation] = frozenset()) -> int:
        """A dead run's acknowledgements, into the local copy only: published at commit."""
        return super().apply_accepted(self.collect_accepted(unsent))

    def release(self) -> None:
        """Before the first load of a mapping (or the first after a reset), its new empty
        snapshot is published: a run that dies mid-load leaves acknowledgements that the next
        run, on any machine, applies to it instead of sending everything again."""
        first = self.shared.pointer.version is None and self._snapshot_exists()
        self._seal()
        if first:
            self.shared.publish(self.lease, self.shared.fetched_through)

    def apply_accepted(self, files: list[Path], *, complete: bool = False) -> int:
        """The commit: the local copy absorbs the acknowledgements, then becomes the current
        version for every worker (unless nothing changed)."""
        merged = super().apply_accepted(files, complete=complete)
        self._seal()
        if self.shared.changed():
            self.shared.publish(self.lease, self.lease.run_id)
        return merged

    def open_journal(self, run_id: int) -> AckJournal:
        return MirroredJournal(self.journal_dir, run_id, self.journal_schema(), self.shared)

    def _seal(self) -> None:
        """Write everything into the file itself (no WAL beside it) and let go of it."""
        if self._attached:
            self.con.execute("CHECKPOINT snap")
        super().release()


class MirroredJournal(AckJournal):
    """The local acknowledgement journal, each batch also published before it counts."""

    remote = True

    def __init__(
        self, directory: Path, run_id: int, schema: pa.Schema, shared: SharedSnapshots
    ) -> None:
        super().__init__(directory, run_id, schema)
        self.shared, self.run_id = shared, run_id
        self._batches = 0

    def append(self, records: pa.RecordBatch) -> None:
        super().append(records)
        selected = records.select(self.schema.names)
        if not selected.schema.equals(self.schema):
            selected = selected.cast(self.schema)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, self.schema) as writer:
            writer.write_batch(selected)
        self.shared.put_acknowledged(self.run_id, self._batches, sink.getvalue().to_pybytes())
        self._batches += 1


class MirroredSentLog:
    """The run's sent journal, published when it is complete (replays read it anywhere)."""

    def __init__(self, local: SentLog, path: Path, shared: SharedSnapshots, run_id: int) -> None:
        self.local, self.path, self.shared, self.run_id = local, path, shared, run_id

    def write(self, records: pa.RecordBatch, outcomes: Sequence[str | None]) -> None:
        self.local.write(records, outcomes)

    def close(self) -> None:
        self.local.close()
        if self.path.exists():
            self.shared.put_sent(self.run_id, self.path)


class PeekSnapshotStore(DuckDBSnapshotStore):
    """A read-only look at the current version (sync plan, reset's count), downloaded into a
    scratch folder of its own when the local copy is not that version."""

    def __init__(
        self,
        folder: Path,
        mapping: CompiledMapping,
        *,
        max_record_bytes: int | None = None,
    ) -> None:
        self._folder = folder
        try:
            super().__init__(folder, mapping, read_only=True, max_record_bytes=max_record_bytes)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)


def open_read_only(
    state_dir: Path,
    mapping: CompiledMapping,
    shared: SharedSnapshots,
    *,
    max_record_bytes: int | None = None,
) -> DuckDBSnapshotStore:
    """The current version, read-only: the local copy when it is that version, else a copy."""
    shared.objects.check()
    shared.pointer = shared.pointers.current(mapping.name)
    version = shared.pointer.version
    if shared.is_cached(version) or shared.adopts_local():
        return DuckDBSnapshotStore(
            state_dir, mapping, read_only=True, max_record_bytes=max_record_bytes
        )
    folder = new_scratch(state_dir / "work", mapping.name)
    try:
        if version is not None:
            shared.download(version, folder / "snapshots" / f"{mapping.name}.duckdb")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return PeekSnapshotStore(folder, mapping, max_record_bytes=max_record_bytes)
