"""What each run sent: every record with its outcome, as Parquet (zstd), so a run can be replayed.

One file per run under `.ebbtide/journals/<mapping>/`: the outbound columns (key, operation,
the JSON record, the row hash, key parts, the typed field columns and why a record could not be
converted) and `__outcome`, null for a record the destination accepted, else the error class it
failed with. The schema's metadata says what the records were sent as (key, model,
destination). The file is written under a `.partial` name and renamed when the run closes it,
so a run that died mid-way leaves a journal that says so.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ebbtide.ports import OP_COLUMN, OUTCOME_COLUMN, PROBLEM_COLUMN

JOURNALS_DIR = "journals"
_REPEATING = (OP_COLUMN, OUTCOME_COLUMN, PROBLEM_COLUMN)
ROW_GROUP_ROWS = 16_384  # buffered before writing: large enough to compress well, small to hold
MAX_QUEUED_GROUPS = 2  # row groups waiting for the encoder before a run waits for it
PARTIAL = ".partial"


def journal_path(state_dir: Path, mapping: str, run_id: int) -> Path:
    return state_dir / JOURNALS_DIR / mapping / f"{run_id:012d}.parquet"


class SentJournal:
    """Appends the records of one run with their outcomes.

    Encoding and compressing Parquet happens on a thread of its own (Arrow releases the GIL
    while it works), so keeping the journal does not hold up the requests in flight.
    """

    def __init__(self, path: Path, identity: dict[str, str] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # What the records were sent as (key, model, destination): a replay checks it.
        self._identity: dict[bytes | str, bytes | str] = {k: v for k, v in (identity or {}).items()}
        self._partial = path.with_name(path.name + PARTIAL)
        self._writer: Any = None  # a pyarrow.parquet.ParquetWriter, once there is a row group
        self._schema: pa.Schema | None = None
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sent-journal")
        self._pending: list[Future[None]] = []

    def write(self, records: pa.RecordBatch, outcomes: Sequence[str | None]) -> None:
        """Records of a batch and, for each, None (accepted) or the error class it failed with."""
        if not records.num_rows:
            return
        # `__problem` stays: a replay fails those records again instead of sending them.
        names = records.schema.names
        arrays = [_storage(records.column(n)) for n in names]
        arrays.append(pa.array(outcomes, pa.string()))
        if self._schema is None:
            fields = [pa.field(n, a.type) for n, a in zip(names, arrays, strict=False)]
            self._schema = pa.schema(
                [*fields, pa.field(OUTCOME_COLUMN, pa.string())], metadata=self._identity
            )
        self._buffer.append(pa.RecordBatch.from_arrays(arrays, schema=self._schema))
        self._buffered += records.num_rows
        if self._buffered >= ROW_GROUP_ROWS:
            self._flush()

    def close(self) -> None:
        """Write what is buffered and give the journal its final name (none if nothing sent)."""
        self._flush()
        self._encoder.shutdown(wait=True)
        for done in self._pending:
            done.result()  # an error writing the journal surfaces here
        if self._writer is not None:
            self._writer.close()
            self._partial.replace(self.path)

    def _flush(self) -> None:
        if not self._buffer or self._schema is None:
            return
        table = pa.Table.from_batches(self._buffer, self._schema)
        self._buffer, self._buffered = [], 0
        while len(self._pending) >= MAX_QUEUED_GROUPS:
            # The encoder is behind: wait for it rather than hold ever more groups in memory.
            self._pending.pop(0).result()
        self._pending.append(self._encoder.submit(self._write_group, table))

    def _write_group(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        if self._writer is None:
            self._writer = pq.ParquetWriter(
                self._partial,
                table.schema,
                compression="zstd",
                # Dictionaries only where values repeat: for records and keys they cost time
                # and bytes (half of each, measured on 1M records), as do statistics.
                use_dictionary=_repeating(table.schema),
                write_statistics=False,
            )
        self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)


def _repeating(schema: pa.Schema) -> Any:
    """The columns worth a dictionary (pyarrow takes a list, though its stubs say bool)."""
    return [c for c in _REPEATING if c in schema.names]


def _storage(column: Any) -> Any:
    """Extension columns (JSON) are stored as their text."""
    return column.storage if isinstance(column.type, pa.BaseExtensionType) else column


@dataclass(frozen=True)
class JournalState:
    """Whether a run's journal can be replayed, and why not."""

    path: Path
    exists: bool
    partial: bool


def journal_state(state_dir: Path, mapping: str, run_id: int) -> JournalState:
    path = journal_path(state_dir, mapping, run_id)
    partial = path.with_name(path.name + PARTIAL)
    return JournalState(path, path.exists(), partial.exists())


def sent_identity(path: Path) -> dict[str, str]:
    """What a journal's records were sent as: primary key, model, destination."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in metadata.items() if not k.startswith(b"ARROW")}


def read_sent(path: Path, *, only_failed: bool = False) -> pa.Table:
    """The records of a journal, or only those that failed."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if only_failed:
        table = table.filter(pc.is_valid(table.column(OUTCOME_COLUMN)))
    return table


def prune(state_dir: Path, keep_days: float, now: float | None = None) -> tuple[int, int]:
    """Remove journals older than `keep_days`; returns (files, bytes) removed."""
    cutoff = (time.time() if now is None else now) - keep_days * 86_400
    files = removed = 0
    for path in (state_dir / JOURNALS_DIR).glob("*/*.parquet*"):
        stat = path.stat()
        if stat.st_mtime < cutoff:
            path.unlink(missing_ok=True)
            files += 1
            removed += stat.st_size
    return files, removed
