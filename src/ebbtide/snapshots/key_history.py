"""Which runs sent one record, read from the sent-record journals (`.ebbtide/journals/`).

A journal is kept `journals.keep_days`; a run older than that no longer shows what it sent.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from ebbtide.ports import KEY_COLUMN, OP_COLUMN, OUTCOME_COLUMN
from ebbtide.snapshots.sent_journal import JOURNALS_DIR


@dataclass(frozen=True)
class SentRecord:
    run_id: int
    operation: str
    outcome: str | None  # None: accepted; else the error class it failed with


def sent_records(state_dir: Path, mapping: str, keys: Collection[str]) -> list[SentRecord]:
    """Every journaled send of a record whose key text is one of `keys`, newest run first."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    wanted = pa.array(sorted(keys), pa.string())
    found: list[SentRecord] = []
    for path in sorted((state_dir / JOURNALS_DIR / mapping).glob("*.parquet"), reverse=True):
        table = pq.read_table(path, columns=[KEY_COLUMN, OP_COLUMN, OUTCOME_COLUMN])
        hits = table.filter(pc.is_in(table.column(KEY_COLUMN), value_set=wanted))
        run_id = int(path.stem)
        for op, outcome in zip(
            hits.column(OP_COLUMN).to_pylist(),
            hits.column(OUTCOME_COLUMN).to_pylist(),
            strict=True,
        ):
            found.append(SentRecord(run_id, str(op), outcome))
    return found
