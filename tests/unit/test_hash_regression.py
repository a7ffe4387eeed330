"""Row hashes are compared as exact 64-bit integers, never as floats.

The pitfall this guards against: a pandas outer merge of two frames with uint64/int64 hash
columns gives the missing side NaN, so the hash columns become float64. A float64 has 53 bits
of mantissa, so two hashes that differ only in their low bits compare equal and the change
is silently missed. The DuckDB snapshot keeps hashes as UBIGINT end to end (stage, outbound,
journal, snapshot), so a hash that differs by one is still an update.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ebbtide.config.models import SyncMode
from ebbtide.mapping.compiler import CompiledMapping, column_field
from ebbtide.ports import HASH_COLUMN, KEY_PART_PREFIX, OP_COLUMN, Operation, iter_batches
from ebbtide.snapshots.duckdb import DuckDBSnapshotStore

ALL_OPS = frozenset(Operation)
MAPPING = CompiledMapping(
    name="users_to_crm",
    model="users",
    destination="crm",
    action="upsert",
    mode=SyncMode.MIRROR,
    key_columns=("id",),
    fields=(column_field("email", "email"), column_field("plan", "plan")),
)
ROWS = pa.table(
    {
        "id": pa.array(range(1, 201), pa.int64()),
        "email": [f"user{i}@example.com" for i in range(1, 201)],
        "plan": ["pro" if i % 3 else "free" for i in range(1, 201)],
    }
)


def rows() -> pa.RecordBatchReader:
    return pa.RecordBatchReader.from_batches(ROWS.schema, ROWS.to_batches())


def synced_store(state_dir: Path) -> DuckDBSnapshotStore:
    """A store whose snapshot holds every row, as a destination that accepts all left it."""
    store = DuckDBSnapshotStore(state_dir, MAPPING)
    store.stage(rows())
    store.check_keys()
    store.diff()
    journal = store.open_journal(run_id=1)
    for batch in iter_batches(store.outbound(ALL_OPS, batch_size=64)):
        journal.append(batch)
    journal.close()
    store.merge_journals()
    return store


def float_twin(value: int) -> int:
    """Another 64-bit value that is different as an integer but equal as a float64."""
    for candidate in (value ^ 1, value - 1, value + 1, value ^ 2):
        if 0 <= candidate < 2**64 and candidate != value and float(candidate) == float(value):
            return candidate
    raise AssertionError(f"no float64 twin for {value}")  # only below 2^53


def snapshot_columns(store: DuckDBSnapshotStore) -> dict[str, str]:
    described = store.con.execute("DESCRIBE snapshot").fetchall()
    return {str(name): str(kind) for name, kind, *_ in described}


def hash_column(store: DuckDBSnapshotStore) -> str:
    """The snapshot's hash column: the one that is not part of the key."""
    (name,) = [c for c in snapshot_columns(store) if c not in store.mapping.key_columns]
    return f'"{name}"'


def hashes_above_2_53(store: DuckDBSnapshotStore) -> list[tuple[int, int]]:
    h = hash_column(store)
    found = store.con.execute(
        f"SELECT id, {h} FROM snapshot WHERE {h} > 9007199254740992 ORDER BY id"
    ).fetchall()
    return [(int(k), int(h)) for k, h in found]


def test_hashes_are_unsigned_64_bit_integers_at_every_stage(tmp_path: Path) -> None:
    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    store.stage(rows())
    store.diff()
    outbound = store.outbound(ALL_OPS, batch_size=1000).read_all()
    assert outbound.schema.field(HASH_COLUMN).type == pa.uint64()
    assert store.journal_schema().field(HASH_COLUMN).type == pa.uint64()
    journal = store.open_journal(run_id=1)
    for batch in outbound.to_batches():
        journal.append(batch)
    journal.close()
    store.merge_journals()
    assert "UBIGINT" in snapshot_columns(store).values()
    assert "DOUBLE" not in snapshot_columns(store).values()
    assert store.con.execute("SELECT typeof(__hash) FROM work.stage LIMIT 1").fetchone() == (
        "UBIGINT",
    )
    # Hashes with the top bit set survive journal and merge exactly (no sign or float trip).
    sent = dict(
        zip(
            outbound.column(f"{KEY_PART_PREFIX}0").to_pylist(),
            outbound.column(HASH_COLUMN).to_pylist(),
            strict=True,
        )
    )
    kept = dict(store.con.execute(f"SELECT id, {hash_column(store)} FROM snapshot").fetchall())
    assert kept == sent
    assert any(h >= 2**63 for h in kept.values())
    store.close()


def test_float64_cannot_tell_apart_hashes_that_differ_in_their_low_bits(tmp_path: Path) -> None:
    """What an outer join in pandas does to a hash column, shown with Arrow's cast."""
    store = synced_store(tmp_path)
    _, real = hashes_above_2_53(store)[0]
    store.close()
    twin = float_twin(real)
    hashes = pa.array([real, twin], pa.uint64())
    # Arrow refuses this lossy cast unless told; pandas does it silently when NaN pads a column.
    as_float = pc.cast(hashes, pa.float64(), safe=False)
    assert hashes[0] != hashes[1]
    assert as_float[0] == as_float[1]


def test_diff_reports_an_update_when_the_snapshot_hash_differs_by_one_below_float_precision(
    tmp_path: Path,
) -> None:
    store = synced_store(tmp_path)
    key, real = hashes_above_2_53(store)[0]
    twin = float_twin(real)
    assert float(twin) == float(real)  # a float comparison would call this row unchanged
    store.con.execute(f"UPDATE snapshot SET {hash_column(store)} = ? WHERE id = ?", [twin, key])
    store.close()

    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    store.stage(rows())
    counts = store.diff()
    changes = store.outbound(ALL_OPS, batch_size=1000).read_all()
    store.close()
    assert (counts.added, counts.updated, counts.deleted) == (0, 1, 0)
    assert changes.column(OP_COLUMN).to_pylist() == ["updated"]
    assert changes.column(f"{KEY_PART_PREFIX}0").to_pylist() == [key]
    assert changes.column(HASH_COLUMN).to_pylist() == [real]


def test_pandas_outer_merge_turns_hashes_into_floats_and_misses_the_change(
    tmp_path: Path,
) -> None:
    """The pitfall itself, where pandas is installed (it is not an ebbtide dependency)."""
    pd = pytest.importorskip("pandas")
    store = synced_store(tmp_path)
    snapshot = store.con.execute(
        f"SELECT id, {hash_column(store)} FROM snapshot ORDER BY id"
    ).fetchall()
    store.close()
    key, real = next((k, h) for k, h in snapshot if h > 2**53)
    twin = float_twin(real)
    previous = pd.DataFrame({"id": [k for k, _ in snapshot], "hash": [h for _, h in snapshot]})
    previous = previous.astype({"hash": "uint64"})
    current = previous.copy()
    current.loc[current["id"] == key, "hash"] = twin
    # A row added since the snapshot pads the snapshot's side with NaN: float64.
    current = pd.concat([current, pd.DataFrame({"id": [10_000], "hash": [real]})])
    current = current.astype({"hash": "uint64"})
    merged = previous.merge(current, on="id", how="outer", suffixes=("_old", "_new"))
    assert merged["hash_old"].dtype == "float64"
    both = merged.dropna()
    naive_updates = both[both["hash_old"] != both["hash_new"]]["id"].tolist()
    assert key not in naive_updates  # pandas missed it ...

    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    store.con.execute(f"UPDATE snapshot SET {hash_column(store)} = ? WHERE id = ?", [twin, key])
    store.stage(rows())
    assert store.diff().updated == 1  # ... the DuckDB diff does not
    store.close()
