"""The DuckDB snapshot store: key checks, partial acceptance, journals and crashes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ebbtide.config.models import SyncMode
from ebbtide.errors import MappingError, ModelError, SnapshotMismatchError
from ebbtide.mapping.compiler import CompiledMapping, column_field
from ebbtide.ports import KEY_PART_PREFIX, OP_COLUMN, ChangeCounts, Operation, iter_batches
from ebbtide.snapshots.duckdb import DuckDBSnapshotStore
from ebbtide.snapshots.journal import journal_files, read_journals

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
COMPOSITE = replace(
    MAPPING,
    name="accounts_to_crm",
    model="accounts",
    key_columns=("id", "region"),
    fields=(column_field("email", "email"), column_field("region", "region")),
)


def users(ids: list[Any], plan: str = "free", **plans: str) -> pa.Table:
    """Rows with the given ids; `plans` overrides the plan of single ids (`p7="pro"`)."""
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "email": [f"user{i}@example.com" for i in ids],
            "plan": [plans.get(f"p{i}", plan) for i in ids],
        }
    )


def rows(table: pa.Table) -> pa.RecordBatchReader:
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=10))


def stage_and_diff(store: DuckDBSnapshotStore, table: pa.Table) -> ChangeCounts:
    store.stage(rows(table))
    store.check_keys()
    return store.diff()


def outbound(store: DuckDBSnapshotStore, batch_size: int = 1000) -> pa.Table:
    return store.outbound(ALL_OPS, batch_size).read_all()


def changes(store: DuckDBSnapshotStore) -> dict[str, set[Any]]:
    """Operation → key values (the key itself for one column, a tuple for several)."""
    table = outbound(store)
    parts = [f"{KEY_PART_PREFIX}{i}" for i in range(len(store.mapping.key_columns))]
    found: dict[str, set[Any]] = {op.value: set() for op in Operation}
    for record in table.to_pylist():
        key = tuple(record[p] for p in parts)
        found[record[OP_COLUMN]].add(key[0] if len(key) == 1 else key)
    return found


def accept(store: DuckDBSnapshotStore, run_id: int, keep: Any = lambda record: True) -> int:
    """A destination that accepts the records `keep` approves of; returns how many."""
    journal = store.open_journal(run_id)
    accepted = 0
    for batch in iter_batches(store.outbound(ALL_OPS, batch_size=7)):
        mask = pa.array([bool(keep(r)) for r in batch.to_pylist()], pa.bool_())
        chosen = batch.filter(mask)
        if chosen.num_rows:
            journal.append(chosen)
            accepted += chosen.num_rows
    journal.close()
    return accepted


def synced(state_dir: Path, table: pa.Table, mapping: CompiledMapping = MAPPING) -> None:
    """A whole run against a destination that accepts everything."""
    store = DuckDBSnapshotStore(state_dir, mapping)
    stage_and_diff(store, table)
    accept(store, run_id=1)
    store.merge_journals()
    store.close()


def snapshot_keys(store: DuckDBSnapshotStore) -> set[Any]:
    key_list = ", ".join(store.mapping.key_columns)
    found = store.con.execute(f"SELECT {key_list} FROM snapshot").fetchall()
    return {r[0] if len(r) == 1 else tuple(r) for r in found}


def nothing_staged_for_sending(store: DuckDBSnapshotStore) -> bool:
    """No change set to send, and no snapshot created for a model that failed its checks."""
    tables = {
        name
        for (name,) in store.con.execute(
            "SELECT table_name FROM information_schema.tables"
        ).fetchall()
    }
    return "changes" not in tables and "snapshot" not in tables


# -- validation before anything is sent ------------------------------------------------------


def test_null_primary_keys_fail_with_the_count_and_at_most_ten_samples(tmp_path: Path) -> None:
    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    store.stage(rows(users([*range(50), *[None] * 25])))
    with pytest.raises(ModelError, match=r"25 row\(s\) have a null primary key \(id\)") as info:
        store.check_keys()
    assert "nothing was sent" in str(info.value)
    assert 1 <= len(info.value.samples) <= 10
    assert all('"id":null' in sample for sample in info.value.samples)
    assert nothing_staged_for_sending(store)
    store.close()


def test_a_null_part_of_a_composite_key_is_a_null_key(tmp_path: Path) -> None:
    table = pa.table(
        {"id": pa.array([1, 2, 3], pa.int64()), "region": ["eu", None, "us"], "email": list("abc")}
    )
    store = DuckDBSnapshotStore(tmp_path, COMPOSITE)
    store.stage(rows(table))
    with pytest.raises(
        ModelError, match=r"1 row\(s\) have a null primary key \(id, region\)"
    ) as info:
        store.check_keys()
    assert info.value.samples == ['{"id":2,"region":null,"email":"b"}']  # key + mapped columns
    store.close()


def test_duplicate_keys_fail_with_the_count_and_the_most_repeated_keys_first(
    tmp_path: Path,
) -> None:
    # 16 duplicated ids: 7 three times, 100…114 twice.
    ids = [*range(115), 7, 7, *range(100, 115)]
    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    store.stage(rows(users(ids)))
    with pytest.raises(
        ModelError, match=r"16 primary key value\(s\) appear more than once"
    ) as info:
        store.check_keys()
    samples = info.value.samples
    assert len(samples) == 10
    assert samples[0] == "7 (3 rows)"
    assert all(s.endswith("(2 rows)") for s in samples[1:])
    assert str(info.value).count("rows)") == 10  # the message lists the samples, no more
    assert nothing_staged_for_sending(store)
    store.close()


def test_duplicate_composite_keys_are_reported_as_objects(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": pa.array([1, 1, 1, 2], pa.int64()),
            "region": ["eu", "us", "eu", "eu"],
            "email": list("abcd"),
        }
    )
    store = DuckDBSnapshotStore(tmp_path, COMPOSITE)
    store.stage(rows(table))
    with pytest.raises(ModelError, match=r"1 primary key value\(s\)") as info:
        store.check_keys()
    assert info.value.samples == ['{"id":1,"region":"eu"} (2 rows)']
    store.close()


def test_a_mapped_column_missing_from_the_model_is_named(tmp_path: Path) -> None:
    mapping = replace(MAPPING, fields=(*MAPPING.fields, column_field("tier", "plan_tier")))
    store = DuckDBSnapshotStore(tmp_path, mapping)
    with pytest.raises(
        MappingError, match=r"has no column 'plan_tier' \(it has: id, email, plan\)"
    ):
        store.stage(rows(users([1, 2])))
    assert store.stage_schema is None
    assert nothing_staged_for_sending(store)
    store.close()


def test_a_missing_key_column_is_named(tmp_path: Path) -> None:
    mapping = replace(MAPPING, key_columns=("user_id",))
    store = DuckDBSnapshotStore(tmp_path, mapping)
    with pytest.raises(ModelError, match="has no column 'user_id'"):
        store.stage(rows(users([1])))
    store.close()


@pytest.mark.parametrize(
    ("key", "column"),
    [("id", "__hash"), ("__op", "email"), ("__k0", "email")],
    ids=["mapped-column-__hash", "key-__op", "key-__k0"],
)
def test_model_columns_named_like_engine_columns_are_refused_clearly(
    tmp_path: Path, key: str, column: str
) -> None:
    """Regression: these reached DuckDB and failed with a raw ConversionException."""
    mapping = replace(MAPPING, key_columns=(key,), fields=(column_field("email", column),))
    table = pa.table({key: pa.array([1, 2], pa.int64()), column: ["a", "b"]})
    store = DuckDBSnapshotStore(tmp_path, mapping)
    with pytest.raises(ModelError, match="reserved"):
        store.stage(rows(table))
    store.close()


@pytest.mark.parametrize("name", ["row_hash", "seq", "n", "snapshot"])
def test_ordinary_column_names_the_store_uses_internally_work_as_keys(
    tmp_path: Path, name: str
) -> None:
    """Regression: a key named row_hash collided with the snapshot's hash column."""
    mapping = replace(MAPPING, key_columns=(name,), fields=(column_field("email", "email"),))
    table = pa.table({name: pa.array([1, 2, 3], pa.int64()), "email": ["a", "b", "c"]})
    synced(tmp_path, table, mapping)
    store = DuckDBSnapshotStore(tmp_path, mapping)
    assert stage_and_diff(store, table) == ChangeCounts()
    changed = table.set_column(1, "email", pa.array(["a", "B", "c"]))
    assert stage_and_diff(store, changed) == ChangeCounts(updated=1)
    assert changes(store)["updated"] == {2}
    store.close()


def test_a_changed_primary_key_refuses_to_diff(tmp_path: Path) -> None:
    synced(tmp_path, users([1, 2, 3]))
    by_email = replace(MAPPING, key_columns=("email",))
    store = DuckDBSnapshotStore(tmp_path, by_email)
    store.stage(rows(users([1, 2, 3])))
    store.check_keys()
    with pytest.raises(SnapshotMismatchError, match="primary key id, the model now has email"):
        store.diff()
    with pytest.raises(SnapshotMismatchError, match="ebbtide reset"):
        store.diff(dry_run=True)
    store.close()


def test_a_changed_primary_key_type_refuses_to_diff(tmp_path: Path) -> None:
    synced(tmp_path, users([1, 2, 3]))
    as_text = pa.table({"id": ["1", "2", "3"], "email": list("abc"), "plan": list("xyz")})
    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    store.stage(rows(as_text))
    with pytest.raises(SnapshotMismatchError, match="type changed"):
        store.diff()
    store.close()


# -- the diff ---------------------------------------------------------------------------------


def test_a_dry_run_diff_writes_no_snapshot_and_the_first_real_diff_adds_everything(
    tmp_path: Path,
) -> None:
    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    store.stage(rows(users([1, 2, 3])))
    assert store.diff(dry_run=True) == ChangeCounts(added=3)
    assert store.meta() == {}
    assert not store._snapshot_exists()
    assert store.diff() == ChangeCounts(added=3)
    assert store.meta()["primary_key"] == '["id"]'
    assert changes(store)["added"] == {1, 2, 3}
    store.close()


def test_added_updated_deleted_by_key(tmp_path: Path) -> None:
    synced(tmp_path, users([1, 2, 3, 4]))
    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    counts = stage_and_diff(store, users([2, 3, 4, 5], p3="pro"))
    assert counts == ChangeCounts(added=1, updated=1, deleted=1)
    assert changes(store) == {"added": {5}, "updated": {3}, "deleted": {1}}
    sent = {r[f"{KEY_PART_PREFIX}0"]: r for r in outbound(store).to_pylist()}
    assert sent[3]["plan"] == "pro"
    assert sent[1]["__record"] == '{"op":"deleted","key":1,"data":null}'
    store.close()


def test_composite_keys_diff_and_commit(tmp_path: Path) -> None:
    def accounts(entries: list[tuple[int, str, str]]) -> pa.Table:
        ids, regions, emails = zip(*entries, strict=True)
        return pa.table(
            {"id": pa.array(ids, pa.int64()), "region": list(regions), "email": list(emails)}
        )

    before = [(1, "eu", "a"), (1, "us", "b"), (2, "eu", "c"), (2, "it's", "d")]
    synced(tmp_path, accounts(before), COMPOSITE)
    after = [(1, "eu", "a"), (1, "us", "B"), (2, "it's", "d"), (3, "eu", "e")]
    store = DuckDBSnapshotStore(tmp_path, COMPOSITE)
    stage_and_diff(store, accounts(after))
    assert changes(store) == {
        "added": {(3, "eu")},
        "updated": {(1, "us")},
        "deleted": {(2, "eu")},
    }
    keys = {r["__key"] for r in outbound(store).to_pylist()}
    assert keys == {'{"id":3,"region":"eu"}', '{"id":1,"region":"us"}', '{"id":2,"region":"eu"}'}
    accept(store, run_id=2)
    store.merge_journals()
    assert snapshot_keys(store) == {(1, "eu"), (1, "us"), (2, "it's"), (3, "eu")}
    assert stage_and_diff(store, accounts(after)) == ChangeCounts()
    store.close()


# -- commit: the snapshot advances only for what the destination accepted --------------------


def test_accepting_some_records_advances_the_snapshot_for_those_only(tmp_path: Path) -> None:
    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    stage_and_diff(store, users(list(range(20))))
    assert accept(store, run_id=1, keep=lambda r: r["__k0"] % 2 == 0) == 10
    assert store.merge_journals() == 10
    assert snapshot_keys(store) == set(range(0, 20, 2))
    # The rejected rows come again, with their latest data; the accepted ones are settled.
    counts = stage_and_diff(store, users(list(range(20)), p3="pro"))
    assert counts == ChangeCounts(added=10)
    assert changes(store)["added"] == set(range(1, 20, 2))
    assert {r["plan"] for r in outbound(store).to_pylist() if r["__k0"] == 3} == {"pro"}
    store.close()


def test_a_rejected_update_is_found_again_and_an_accepted_one_is_not(tmp_path: Path) -> None:
    synced(tmp_path, users([1, 2, 3]))
    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    stage_and_diff(store, users([1, 2, 3], plan="pro"))
    accept(store, run_id=2, keep=lambda r: r["__k0"] != 2)
    store.merge_journals()
    assert stage_and_diff(store, users([1, 2, 3], plan="pro")) == ChangeCounts(updated=1)
    assert changes(store)["updated"] == {2}
    store.close()


def test_accepted_deletes_remove_keys_from_the_snapshot(tmp_path: Path) -> None:
    synced(tmp_path, users([1, 2, 3, 4]))
    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    assert stage_and_diff(store, users([1])) == ChangeCounts(deleted=3)
    accept(store, run_id=2, keep=lambda r: r["__k0"] != 4)  # the delete of 4 fails
    store.merge_journals()
    assert snapshot_keys(store) == {1, 4}
    assert stage_and_diff(store, users([1])) == ChangeCounts(deleted=1)
    # A deleted row that comes back is new again.
    assert stage_and_diff(store, users([1, 2, 4])) == ChangeCounts(added=1)
    store.close()


def test_changes_a_mode_does_not_send_still_move_the_snapshot(tmp_path: Path) -> None:
    upsert = replace(MAPPING, mode=SyncMode.UPSERT)
    synced(tmp_path, users([1, 2, 3]), upsert)
    store = DuckDBSnapshotStore(tmp_path, upsert)
    assert stage_and_diff(store, users([1, 4])) == ChangeCounts(added=1, deleted=2)
    accept(store, run_id=2, keep=lambda r: r["__op"] in upsert.operations_sent)
    store.merge_journals(unsent=ALL_OPS - upsert.operations_sent)
    assert snapshot_keys(store) == {1, 4}
    assert stage_and_diff(store, users([1, 4])) == ChangeCounts()
    store.close()


def test_merge_without_journals_is_a_no_op(tmp_path: Path) -> None:
    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    assert store.merge_journals() == 0  # no snapshot yet
    stage_and_diff(store, users([1]))
    assert store.merge_journals() == 0
    assert snapshot_keys(store) == set()
    store.close()


# -- journals and crashes ------------------------------------------------------------------


def journal_of_three_batches(tmp_path: Path) -> tuple[Path, list[int], list[set[int]]]:
    """A closed journal of 30 accepted records in batches of 10: file, batch ends, batch keys."""
    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    stage_and_diff(store, users(list(range(30))))
    journal = store.open_journal(run_id=1)
    ends, keys = [], []
    for batch in outbound(store).to_batches(max_chunksize=10):
        journal.append(batch)
        ends.append(journal.path.stat().st_size)
        keys.append(set(batch.column(f"{KEY_PART_PREFIX}0").to_pylist()))
    journal.close()
    store.close()
    return journal.path, ends, keys


def test_a_torn_journal_yields_its_complete_batches_at_every_cut(tmp_path: Path) -> None:
    path, ends, _ = journal_of_three_batches(tmp_path)
    data = path.read_bytes()
    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    schema = store._snapshot_journal_schema()
    store.close()
    torn = tmp_path / "torn.arrow"
    for cut in range(len(data) + 1):
        torn.write_bytes(data[:cut])
        read = read_journals([torn], schema).read_all().num_rows
        assert read == 10 * sum(1 for end in ends if end <= cut), f"cut at byte {cut}"


def test_a_torn_journal_still_merges_its_complete_batches(tmp_path: Path) -> None:
    path, ends, keys = journal_of_three_batches(tmp_path)
    path.write_bytes(path.read_bytes()[: ends[-1] - 5])  # the last batch lost its tail
    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    assert store.merge_journals() == 20
    assert snapshot_keys(store) == keys[0] | keys[1]
    assert journal_files(store.journal_dir) == []
    assert stage_and_diff(store, users(list(range(30)))) == ChangeCounts(added=10)
    assert changes(store)["added"] == keys[2]
    store.close()


def test_an_empty_journal_file_is_skipped(tmp_path: Path) -> None:
    path, _, _ = journal_of_three_batches(tmp_path)
    (path.parent / "000000000002.arrow").write_bytes(b"")
    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    assert store.merge_journals() == 30
    assert journal_files(store.journal_dir) == []
    store.close()


def test_journals_of_a_crashed_run_are_merged_at_the_start_of_the_next(tmp_path: Path) -> None:
    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    stage_and_diff(store, users(list(range(30))))
    journal = store.open_journal(run_id=1)
    batches = outbound(store).to_batches(max_chunksize=10)
    journal.append(batches[0])
    journal.append(batches[1])
    written = journal.path.read_bytes()  # what reached the OS before the process died
    journal.close()
    store.close()
    journal.path.write_bytes(written)  # no end-of-stream marker, as after SIGKILL

    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    assert store.merge_journals() == 20  # what the engine does first in every run
    assert stage_and_diff(store, users(list(range(30)))) == ChangeCounts(added=10)
    delivered = {r["__k0"] for b in batches[:2] for r in b.to_pylist()}
    assert changes(store)["added"] == set(range(30)) - delivered
    store.close()


def test_the_latest_run_wins_when_several_journals_hold_one_key(tmp_path: Path) -> None:
    """Two journals exist together when the merge at the start of a run did not happen.

    Regression: every journal row once had seq 0, so with enough rows DuckDB's parallel window
    kept the older run's hash for most keys.
    """
    ids = list(range(20_000))
    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    stage_and_diff(store, users(ids, plan="free"))
    accept(store, run_id=1)  # crashed before merging
    stage_and_diff(store, users(ids, plan="pro"))
    accept(store, run_id=2)
    latest = dict(store.con.execute("SELECT id, __hash FROM work.stage").fetchall())
    store.merge_journals()
    kept = dict(store.con.execute("SELECT id, __row_hash FROM snapshot").fetchall())
    stale = sum(1 for key, h in latest.items() if kept[key] != h)
    store.close()
    assert stale == 0, f"{stale} of {len(ids)} keys kept the older run's hash"


# -- a model that is its snapshot ------------------------------------------------------------


def swapped_plans() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "email": ["user1@example.com", "user2@example.com", "user3@example.com"],
            "plan": ["pro", "free", "team"],
        }
    )


def test_a_model_that_is_its_snapshot_has_no_changes(tmp_path: Path) -> None:
    synced(tmp_path, users([1, 2, 3]))
    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    try:
        assert stage_and_diff(store, users([1, 2, 3])) == ChangeCounts()
        assert outbound(store).num_rows == 0
    finally:
        store.close()


def test_two_rows_that_swap_their_values_are_two_updates(tmp_path: Path) -> None:
    # The same hashes, on other keys: a fingerprint of hashes alone would see no change.
    synced(tmp_path, swapped_plans())
    swapped = swapped_plans().set_column(2, "plan", pa.array(["free", "pro", "team"]))
    swapped = swapped.set_column(
        1, "email", pa.array(["user2@example.com", "user1@example.com", "user3@example.com"])
    )
    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    try:
        assert stage_and_diff(store, swapped) == ChangeCounts(updated=2)
        assert changes(store)["updated"] == {1, 2}
    finally:
        store.close()


def test_a_row_replaced_by_a_copy_of_another_is_still_a_duplicate_key(tmp_path: Path) -> None:
    # As many rows as the snapshot holds, each (key, hash) one the snapshot knows.
    synced(tmp_path, users([1, 2, 3]))
    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    try:
        store.stage(rows(users([1, 1, 3])))
        with pytest.raises(ModelError, match="1 primary key value"):
            store.check_keys()
    finally:
        store.close()
