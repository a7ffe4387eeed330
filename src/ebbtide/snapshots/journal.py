"""The acknowledgement journal: accepted records, appended batch by batch as Arrow IPC.

A journal append costs microseconds where a DuckDB commit costs milliseconds, so every
acknowledged batch is durable at once (it survives SIGKILL: the bytes are in the OS) and
the snapshot absorbs the journal in one transaction at the end of the run, or at the start
of the next run if this one died.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pyarrow as pa

from ebbtide.errors import SnapshotDamagedError
from ebbtide.ports import OP_COLUMN, ChangeCounts, Operation


class AckJournal:
    """Appends accepted records (key parts, hash, op) to one file per run."""

    remote = False  # see ports.Journal

    def __init__(self, directory: Path, run_id: int, schema: pa.Schema) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{run_id:012d}.arrow"
        self.schema = schema
        # Buffered, flushed once per batch: one write to the OS per acknowledged batch.
        self._sink = pa.output_stream(str(self.path), buffer_size=1 << 20)
        self._writer = pa.ipc.new_stream(self._sink, schema)

    def append(self, records: pa.RecordBatch) -> None:
        selected = records.select(self.schema.names)
        if not selected.schema.equals(self.schema):
            selected = selected.cast(self.schema)
        self._writer.write_batch(selected)
        self._sink.flush()

    def close(self) -> None:
        self._writer.close()
        self._sink.close()


def journal_files(directory: Path) -> list[Path]:
    """Journals waiting to be merged, oldest run first."""
    return sorted(directory.glob("*.arrow")) if directory.is_dir() else []


def acknowledged(directory: Path) -> dict[int, ChangeCounts]:
    """Per run with a journal waiting: the records the destination accepted, by operation.

    Read before the journals are merged, so a run that died is credited with what it
    delivered; a batch torn by a crash is not counted (it is resent, like one in flight).
    """
    counted: dict[int, ChangeCounts] = {}
    for file in journal_files(directory):
        if not file.stem.isdigit():
            continue
        import pyarrow.compute as pc  # only with a journal to count (after a crash)

        ops: Counter[str] = Counter()
        for batch in _complete_batches(file, None):
            tally = pc.value_counts(batch.column(OP_COLUMN))
            names = cast(list[str], tally.field("values").to_pylist())
            counts = cast(list[int], tally.field("counts").to_pylist())
            ops.update(dict(zip(names, counts, strict=True)))
        counted[int(file.stem)] = ChangeCounts(**{op.value: ops[op.value] for op in Operation})
    return counted


def read_journal(file: Path) -> pa.Table | None:
    """A journal's complete batches, as written; None if the run died before its first."""
    batches = list(_complete_batches(file, None))
    return pa.Table.from_batches(batches) if batches else None


JOURNAL_COLUMN = "__journal"


def read_journals(files: list[Path], schema: pa.Schema) -> pa.RecordBatchReader:
    """Every complete batch of the files, with the file's position (`__journal`) so a later
    run's acknowledgement wins; a batch torn by a crash is ignored."""
    out_schema = schema.append(pa.field(JOURNAL_COLUMN, pa.int32()))

    def batches() -> Iterator[pa.RecordBatch]:
        for position, file in enumerate(files):
            # Regrouped: DuckDB takes a few large batches much faster than many small ones.
            group: list[pa.RecordBatch] = []
            for batch in _complete_batches(file, schema):
                group.append(batch)
                if sum(b.num_rows for b in group) >= REGROUP_ROWS:
                    yield _tagged(group, position)
                    group = []
            if group:
                yield _tagged(group, position)

    return pa.RecordBatchReader.from_batches(out_schema, batches())


REGROUP_ROWS = 65_536


def _complete_batches(file: Path, schema: pa.Schema | None) -> Iterator[pa.RecordBatch]:
    _check_stream(file)
    try:
        # Read, not mapped: mapped pages stay in the resident set (a 10M-record journal is
        # ~300 MB), read buffers go once their batch is consumed.
        reader = pa.ipc.open_stream(pa.OSFile(str(file), "r"))
    except (pa.ArrowInvalid, OSError):
        return  # the run died before its first batch reached the file
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError):
            return  # torn by a crash: resent by the next run, like a batch in flight
        yield batch if schema is None or batch.schema.equals(schema) else batch.cast(schema)


# Every Arrow IPC stream message starts with this continuation marker.
_STREAM_START = b"\xff\xff\xff\xff"


def _check_stream(file: Path) -> None:
    """A crash can cut a journal short anywhere (its whole batches count, the rest is resent),
    but never make it start with anything other than an Arrow stream: that is damage."""
    with file.open("rb") as journal:
        start = journal.read(len(_STREAM_START))
    if start and not _STREAM_START.startswith(start):
        mapping = file.parent.name.removesuffix(".journal")
        raise SnapshotDamagedError(
            f"the acknowledgement journal {file} of mapping {mapping!r} is damaged (it is not"
            " an Arrow stream). Nothing was sent. Reset the mapping (`ebbtide reset"
            f" {mapping}`): its next sync then sends the whole model."
        )


def _tagged(group: list[pa.RecordBatch], position: int) -> pa.RecordBatch:
    batch: pa.RecordBatch = pa.concat_batches(group)  # type: ignore[attr-defined]
    tag = pa.nulls(batch.num_rows, pa.int32()).fill_null(position)
    tagged: pa.RecordBatch = batch.append_column(JOURNAL_COLUMN, tag)
    return tagged
