"""Reset and replay (DESIGN invariant 9, issue 5) through the real services.

Each scenario runs on every backend (tests/integration/warehouse_kit.py): a DuckDB warehouse
file with the snapshot in DuckDB, and PostgreSQL and MariaDB with `diff: warehouse` (the snapshot
a table in ebbtide's schema there). The state store in SQLite, the sent-record journals as
Parquet files, and the demo receiver on 127.0.0.1 as the destination (a real PostgreSQL table
for typed columns). `SyncService`, `ResetService` and `ReplayService` are called as the CLI and
the server call them. No mocks.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from ebbtide.demo.receiver import Receiver
from ebbtide.errors import EbbtideError, MappingBusyError, UsageError
from ebbtide.services.replay import ReplayService
from ebbtide.services.reset import ResetService
from ebbtide.services.sync import SyncService
from ebbtide.services.views import RunView
from ebbtide.values import FailureStatus, RunRecord, RunStatus, Trigger
from tests.integration.warehouse_kit import ALL_BACKENDS, backend_kit, snapshot_exists
from tests.integration.workspace_kit import (
    Kit,
    expected_data,
    failed_records,
    hook,
    mapping,
    sent,
)

ROWS = 20
MIRROR = "users_mirror"
P, E = FailureStatus.PENDING, FailureStatus.EXPIRED


def received(receiver: Receiver) -> dict[Any, tuple[str, Any]]:
    """Key → (op, data) of every record the receiver got (the last one per key)."""
    return {r["key"]: (r["op"], r["data"]) for r in receiver.records}


@pytest.fixture(params=ALL_BACKENDS)
def kit(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Kit]:
    yield from backend_kit(request, tmp_path, monkeypatch)


def snapshot_kept(kit: Kit, name: str = MIRROR) -> bool:
    """Whether the mapping has a snapshot: the DuckDB file, or the warehouse's table."""
    return snapshot_exists(kit, name)


def journal_dir(kit: Kit, name: str = MIRROR) -> Path:
    return kit.root / ".ebbtide" / "journals" / name


def journal_of(kit: Kit, run: RunRecord) -> Path:
    return journal_dir(kit, run.mapping) / f"{run.id:012d}.parquet"


def triggers(service: SyncService, name: str = MIRROR) -> list[str]:
    """The history of a mapping, oldest first, as triggers."""
    return [r.trigger for r in reversed(service.state.list_runs(name, 1000))]


def replay(
    service: SyncService, run: RunRecord, *, latest: bool = False, only_failed: bool = False
) -> RunRecord:
    replays = ReplayService(service)
    plan = replays.plan(run.id, latest=latest, only_failed=only_failed)
    return replays.replay(plan, actor="replayer")


def edit_config(kit: Kit, change: Callable[[dict[str, Any]], None]) -> SyncService:
    """Change ebbtide.yml as a person would, and open a service on the new workspace."""
    path = kit.root / "ebbtide.yml"
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return kit.service()


def wait_until(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(0.01)


@contextmanager
def sync_in_flight(service: SyncService, receiver: Receiver, name: str) -> Iterator[list[Any]]:
    """A sync of `name` in a thread, held mid-load by a receiver that answers nothing yet.

    Yields once the receiver has the sync's first request (the run holds the mapping's lease);
    on exit the receiver answers and the sync finishes. The list receives the run's record.
    """
    finished: list[Any] = []
    before = receiver.requests
    thread = threading.Thread(target=lambda: finished.append(service.run(name)), daemon=True)
    try:
        with receiver.holding():
            thread.start()
            wait_until(lambda: receiver.requests > before, 30, "the sync's first request")
            yield finished
    finally:
        thread.join(timeout=60)
    assert not thread.is_alive(), "the held sync did not finish"


# -- reset ------------------------------------------------------------------------------------


def test_sync_after_reset_sends_every_row_as_added_although_nothing_changed(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    first = service.run(MIRROR)
    assert first.loaded_new == ROWS, first.error
    receiver.reset()
    assert service.run(MIRROR).added == 0
    assert receiver.requests == 0  # nothing changed: nothing to send

    reset = ResetService(service).reset(MIRROR, actor="alice")
    assert (reset.trigger, reset.status, reset.actor) == ("reset", RunStatus.SUCCESS, "alice")
    assert not snapshot_kept(kit)

    after = service.run(MIRROR)
    assert after.status is RunStatus.SUCCESS, after.error
    assert (after.added, after.updated, after.deleted, after.loaded_new) == (ROWS, 0, 0, ROWS)
    assert after.after_reset is True
    assert received(receiver) == {i: ("added", expected_data(i)) for i in range(1, ROWS + 1)}
    assert len(receiver.records) == ROWS

    receiver.reset()
    later = service.run(MIRROR)
    assert (later.after_reset, later.added, receiver.requests) == (False, 0, 0)
    assert triggers(service) == ["manual", "manual", "reset", "manual", "manual"]
    assert RunView.of(reset).model_dump(mode="json")["actor"] == "alice"
    assert RunView.of(after).model_dump(mode="json")["after_reset"] is True


def test_reset_closes_pending_failures_as_reset_and_the_next_sync_sends_them_with_the_rest(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    receiver.reject(3)
    receiver.reject(7)
    service.run(MIRROR)
    assert set(failed_records(service, MIRROR, (P,))) == {"3", "7"}

    ResetService(service).reset(MIRROR, actor="alice")

    closed = failed_records(service, MIRROR)
    assert {k: r.status for k, r in closed.items()} == {
        "3": FailureStatus.RESET,
        "7": FailureStatus.RESET,
    }
    assert service.state.pending_failures.pending(MIRROR) == {}
    assert failed_records(service, MIRROR, (P, E)) == {}  # `records failed` lists none

    receiver.clear_behaviours()
    receiver.reset()
    run = service.run(MIRROR)
    assert run.status is RunStatus.SUCCESS, run.error
    assert (run.loaded_new, run.retried) == (ROWS, 0)  # sent with the rest, not as retries
    assert sorted(receiver.keys()) == list(range(1, ROWS + 1))
    assert {r.status for r in failed_records(service, MIRROR).values()} == {FailureStatus.RESET}


def test_reset_plan_counts_what_the_next_sync_sends_and_changes_nothing(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    receiver.reject(4)
    service.run(MIRROR)  # the destination has 19, one is pending
    kit.sql(
        "INSERT INTO users VALUES "
        + ", ".join(f"({i}, 'user{i}@example.com', 'free', 1.0)" for i in range(21, 26))
    )

    plan = ResetService(service).plan(MIRROR)

    assert (plan.model_rows, plan.snapshot_records, plan.pending_failures) == (25, ROWS - 1, 1)
    assert (plan.model, plan.destination) == ("users", "hook")
    explained = plan.explain()
    assert "all 25 record(s)" in explained
    assert "deleted" in explained and "19 record(s)" in explained
    assert plan.view().model_rows == 25
    # Planning is not resetting: the next sync sends only the new rows and the retry.
    receiver.clear_behaviours()
    receiver.reset()
    run = service.run(MIRROR)
    assert sorted(receiver.keys()) == [4, 21, 22, 23, 24, 25]
    assert (run.after_reset, run.retried) == (False, 1)
    assert triggers(service) == ["manual", "manual"]


def test_row_deleted_between_a_reset_and_the_next_sync_is_not_sent_as_deleted(
    receiver: Receiver, kit: Kit
) -> None:
    # What the reset explanation warns about: ebbtide no longer knows the destination has it.
    service = kit.build(receiver.url, rows=ROWS)
    service.run(MIRROR)
    ResetService(service).reset(MIRROR)
    kit.sql("DELETE FROM users WHERE id = 20")
    receiver.reset()

    run = service.run(MIRROR)

    assert (run.added, run.deleted, run.loaded_deleted) == (ROWS - 1, 0, 0)
    assert all(op == "added" for op, _ in sent(receiver))
    assert 20 not in receiver.keys(accepted_only=False)


def test_reset_is_refused_while_a_sync_of_the_mapping_runs_and_changes_nothing(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    receiver.reject(9)
    service.run(MIRROR)
    receiver.clear_behaviours()
    kit.sql("UPDATE users SET plan = 'gold' WHERE id IN (1, 2)")
    other = kit.service()  # another caller on the same workspace (as `ebbtide reset` is)

    with sync_in_flight(service, receiver, MIRROR) as finished:
        with pytest.raises(MappingBusyError) as refused:
            ResetService(other).reset(MIRROR, actor="alice")
        message = str(refused.value)
        assert "cannot reset while the mapping is syncing" in message
        assert "nothing was changed" in message
        assert snapshot_kept(kit)
        # Only this mapping is busy: another mapping's reset goes through.
        assert ResetService(other).reset("users_upsert").trigger == "reset"

    [held] = finished
    assert held.status is RunStatus.SUCCESS, held.error
    assert Trigger.RESET.value not in triggers(other)
    assert set(failed_records(other, MIRROR, (P,))) == set()  # 9 resolved by the held sync
    assert {r.status for r in failed_records(other, MIRROR).values()} == {FailureStatus.RESOLVED}
    receiver.reset()
    after = other.run(MIRROR)
    assert (after.added, after.after_reset, receiver.requests) == (0, False, 0)


def test_reset_is_refused_while_another_process_holds_the_mapping_lease(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    service.run(MIRROR)
    receiver.reject(5)  # made pending below by a run that fails it
    kit.sql("UPDATE users SET plan = 'gold' WHERE id = 5")
    service.run(MIRROR)
    held, lease = service.state.start_run(MIRROR, Trigger.MANUAL.value, 60)

    with pytest.raises(MappingBusyError, match=f"run {held.id} holds it"):
        ResetService(service).reset(MIRROR)

    assert snapshot_kept(kit)
    assert set(failed_records(service, MIRROR, (P,))) == {"5"}
    assert [r.trigger for r in service.state.list_runs(MIRROR, 10)] == ["manual"] * 3
    assert service.state.holds(lease)  # the refusal did not touch the holder's lease


# -- a snapshot taken for another model, destination or key -----------------------------------


def _primary_key(doc: dict[str, Any]) -> None:
    doc["models"]["users"]["primary_key"] = "email"


def _model(doc: dict[str, Any]) -> None:
    doc["mappings"][MIRROR]["model"] = "customers"


def _destination(doc: dict[str, Any]) -> None:
    doc["mappings"][MIRROR]["destination"] = "hook2"


@pytest.mark.parametrize(
    ("change", "key_of"),
    [
        pytest.param(_primary_key, lambda i: f"user{i}@example.com", id="primary-key"),
        pytest.param(_model, lambda i: i, id="model"),
        pytest.param(_destination, lambda i: i, id="destination"),
    ],
)
def test_mapping_changed_since_its_last_sync_refuses_to_run_until_reset_then_sends_everything(
    receiver: Receiver,
    kit: Kit,
    change: Callable[[dict[str, Any]], None],
    key_of: Callable[[int], Any],
) -> None:
    service = kit.build(
        receiver.url,
        rows=ROWS,
        destinations={"hook": hook(), "hook2": hook()},
        mappings={MIRROR: mapping("mirror")},
    )
    edit_config(
        kit,
        lambda doc: doc["models"].__setitem__("customers", dict(doc["models"]["users"])),
    )
    assert service.run(MIRROR).loaded_new == ROWS
    changed = edit_config(kit, change)
    receiver.reset()

    for _attempt in range(2):  # refused every time, not just once
        refused = changed.run(MIRROR)
        assert refused.status is RunStatus.FAILED
        assert refused.error is not None and f"`ebbtide reset {MIRROR}`" in refused.error
        assert (refused.added, refused.deleted, refused.loaded_new) == (0, 0, 0)
    assert receiver.requests == 0
    assert snapshot_kept(kit)

    ResetService(changed).reset(MIRROR, actor="alice")
    run = changed.run(MIRROR)

    assert run.status is RunStatus.SUCCESS, run.error
    assert (run.added, run.deleted, run.loaded_new, run.after_reset) == (ROWS, 0, ROWS, True)
    assert sorted(map(str, receiver.keys())) == sorted(str(key_of(i)) for i in range(1, 21))
    receiver.reset()
    assert (changed.run(MIRROR).status, receiver.requests) == (RunStatus.SUCCESS, 0)


def test_refused_run_of_a_changed_mapping_leaves_the_snapshot_as_it_was(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS, mappings={MIRROR: mapping("mirror")})
    service.run(MIRROR)
    changed = edit_config(kit, _primary_key)
    assert changed.run(MIRROR).status is RunStatus.FAILED

    undone = edit_config(kit, lambda doc: doc["models"]["users"].__setitem__("primary_key", "id"))
    receiver.reset()
    run = undone.run(MIRROR)

    assert run.status is RunStatus.SUCCESS, run.error
    assert (run.added, run.updated, run.deleted, receiver.requests) == (0, 0, 0, 0)


# -- replay -----------------------------------------------------------------------------------


def test_replay_as_sent_resends_the_runs_exact_records_even_after_the_warehouse_changed(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    first = service.run(MIRROR)
    original = received(receiver)
    kit.sql(
        "UPDATE users SET email = CONCAT('new', id, '@example.com'), plan = 'gold' WHERE id <= 5"
    )
    service.run(MIRROR)
    receiver.reset()

    run = replay(service, first)

    assert run.status is RunStatus.SUCCESS, run.error
    assert (run.trigger, run.replay_of, run.actor) == ("replay", first.id, "replayer")
    assert received(receiver) == original  # same keys, same ops, same payloads
    assert len(receiver.records) == ROWS
    assert (run.added, run.updated, run.deleted) == (ROWS, 0, 0)
    assert (run.loaded_new, run.failed, run.extracted) == (ROWS, 0, ROWS)
    assert RunView.of(run).model_dump(mode="json")["replay_of"] == first.id
    assert triggers(service) == ["manual", "manual", "replay"]


def test_after_replaying_an_old_run_the_next_sync_resends_the_rows_changed_since(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    first = service.run(MIRROR)
    kit.sql("UPDATE users SET email = CONCAT('new', id, '@example.com') WHERE id IN (2, 4, 6)")
    service.run(MIRROR)
    replay(service, first)  # the destination holds the old emails again
    receiver.reset()

    run = service.run(MIRROR)

    assert run.status is RunStatus.SUCCESS, run.error
    assert (run.added, run.updated, run.deleted) == (0, 3, 0)
    assert received(receiver) == {
        i: ("updated", expected_data(i, f"new{i}@example.com")) for i in (2, 4, 6)
    }
    receiver.reset()
    assert (service.run(MIRROR).updated, receiver.requests) == (0, 0)


def test_replay_of_a_run_that_sent_deletes_resends_the_deletes(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    service.run(MIRROR)
    kit.sql("DELETE FROM users WHERE id IN (18, 19, 20)")
    deleting = service.run(MIRROR)
    assert deleting.loaded_deleted == 3
    receiver.reset()

    run = replay(service, deleting)

    assert run.status is RunStatus.SUCCESS, run.error
    assert sent(receiver) == {("deleted", 18), ("deleted", 19), ("deleted", 20)}
    assert (run.deleted, run.loaded_deleted, run.replay_of) == (3, 3, deleting.id)
    receiver.reset()
    assert (service.run(MIRROR).deleted, receiver.requests) == (0, 0)


def test_replay_latest_sends_current_data_and_skips_keys_no_longer_in_the_model(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    first = service.run(MIRROR)
    kit.sql(
        "UPDATE users SET email = CONCAT('new', id, '@example.com') WHERE id <= 5",
        "DELETE FROM users WHERE id IN (6, 7, 8)",
    )
    receiver.reset()

    run = replay(service, first, latest=True)

    assert run.status is RunStatus.SUCCESS, run.error
    kept = [i for i in range(1, ROWS + 1) if i not in (6, 7, 8)]
    assert received(receiver) == {
        i: ("updated", expected_data(i, f"new{i}@example.com" if i <= 5 else None)) for i in kept
    }
    assert (run.updated, run.added, run.skipped, run.loaded_updated) == (17, 0, 3, 17)
    assert (run.trigger, run.replay_of) == ("replay", first.id)
    # The snapshot advanced with the current rows: only the deletes remain for the next sync.
    receiver.reset()
    after = service.run(MIRROR)
    assert (after.added, after.updated, after.deleted) == (0, 0, 3)
    assert sent(receiver) == {("deleted", 6), ("deleted", 7), ("deleted", 8)}


def test_replay_latest_after_a_reset_sends_replayed_keys_as_added(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    first = service.run(MIRROR)
    ResetService(service).reset(MIRROR)
    receiver.reset()

    run = replay(service, first, latest=True)

    assert (run.added, run.updated, run.loaded_new) == (ROWS, 0, ROWS)
    assert run.after_reset is True
    assert {op for op, _ in sent(receiver)} == {"added"}


def test_replay_only_failed_resends_only_the_records_that_failed_and_resolves_them(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    receiver.reject(3)
    receiver.reject(11)
    first = service.run(MIRROR)
    assert first.failed == 2
    failed_payloads = {r["key"]: r["data"] for r in receiver.records if not r["accepted"]}
    receiver.clear_behaviours()
    receiver.reset()

    plan = ReplayService(service).plan(first.id, only_failed=True)
    assert plan.count == 2
    assert "the records that failed" in plan.explain()
    run = ReplayService(service).replay(plan, actor="alice")

    assert run.status is RunStatus.SUCCESS, run.error
    assert {r["key"]: r["data"] for r in receiver.records} == failed_payloads
    assert (run.added, run.loaded_new, run.retried) == (2, 2, 2)
    assert (run.replay_of, run.actor) == (first.id, "alice")
    assert {k: r.status for k, r in failed_records(service, MIRROR).items()} == {
        "3": FailureStatus.RESOLVED,
        "11": FailureStatus.RESOLVED,
    }
    receiver.reset()
    assert (service.run(MIRROR).added, receiver.requests) == (0, 0)


def test_replay_counts_its_own_failures_like_any_run(receiver: Receiver, kit: Kit) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    first = service.run(MIRROR)
    receiver.reset()
    receiver.reject(8, message="plan: not allowed")

    run = replay(service, first)

    assert run.status is RunStatus.PARTIAL_SUCCESS
    assert (run.loaded_new, run.failed, run.failed_by_class) == (ROWS - 1, 1, {"validation": 1})
    [failure] = service.state.failures(run.id)
    assert (failure.key, failure.message) == ("8", "plan: not allowed")
    pending = failed_records(service, MIRROR, (P,))
    assert set(pending) == {"8"} and pending["8"].last_run_id == run.id
    # The destination still has what the first run delivered for 8, and so does the snapshot:
    # the next sync has nothing to send and closes the failure as resolved.
    receiver.clear_behaviours()
    receiver.reset()
    after = service.run(MIRROR)
    assert (receiver.requests, after.retried) == (0, 0)
    assert failed_records(service, MIRROR)["8"].status is FailureStatus.RESOLVED


def test_replay_only_failed_of_a_run_without_failures_is_refused(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    first = service.run(MIRROR)

    with pytest.raises(UsageError, match=f"run {first.id} has no failed records"):
        ReplayService(service).plan(first.id, only_failed=True)
    assert triggers(service) == ["manual"]


def test_replay_of_a_pruned_journal_says_it_was_pruned_and_sends_nothing(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    first = service.run(MIRROR)
    assert journal_of(kit, first).exists()

    files, size = ReplayService(service).prune(0)

    assert files == 1 and size > 0
    assert not journal_of(kit, first).exists()
    receiver.reset()
    with pytest.raises(UsageError) as refused:
        ReplayService(service).plan(first.id)
    assert "was pruned" in str(refused.value)
    assert "journals.keep_days" in str(refused.value)
    assert refused.value.exit_code == 2
    assert (receiver.requests, triggers(service)) == (0, ["manual"])


def test_replay_of_a_run_that_sent_nothing_says_so(receiver: Receiver, kit: Kit) -> None:
    service = kit.build(receiver.url, rows=ROWS, mappings={MIRROR: mapping("mirror")})
    service.run(MIRROR)
    idle = service.run(MIRROR)
    changed = edit_config(kit, _primary_key)
    refused = changed.run(MIRROR)
    assert refused.status is RunStatus.FAILED
    reset = ResetService(changed).reset(MIRROR)
    replays = ReplayService(service)

    for run, reason in (
        (idle, f"run {idle.id} sent no records"),
        (reset, f"run {reset.id} is a reset: it sent nothing"),
        (refused, f"run {refused.id} sent no records"),
    ):
        with pytest.raises(UsageError) as why:
            replays.plan(run.id)
        assert reason in str(why.value)
        assert "pruned" not in str(why.value)


def test_replay_of_a_journal_left_incomplete_says_so(receiver: Receiver, kit: Kit) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    first = service.run(MIRROR)
    path = journal_of(kit, first)
    # What a run killed while sending leaves behind: the journal under its `.partial` name.
    path.replace(path.with_name(path.name + ".partial"))

    with pytest.raises(UsageError, match="incomplete"):
        ReplayService(service).plan(first.id)


def test_replay_of_an_unknown_run_is_refused(receiver: Receiver, kit: Kit) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    with pytest.raises(UsageError, match="there is no run 42"):
        ReplayService(service).plan(42)


def test_replay_is_refused_while_a_sync_of_the_mapping_runs(receiver: Receiver, kit: Kit) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    first = service.run(MIRROR)
    kit.sql("UPDATE users SET plan = 'gold' WHERE id = 1")
    other = kit.service()
    plan = ReplayService(other).plan(first.id)

    with sync_in_flight(service, receiver, MIRROR), pytest.raises(MappingBusyError):
        ReplayService(other).replay(plan)

    assert triggers(other) == ["manual", "manual"]


def test_replay_does_not_send_a_record_whose_values_could_not_be_converted(
    receiver: Receiver, kit: Kit
) -> None:
    declared = [{"name": "email"}, {"name": "plan"}, {"name": "ltv", "type": "number"}]
    service = kit.build(
        receiver.url,
        rows=5,
        destinations={"hook": hook(fields=declared)},
        mappings={MIRROR: mapping("mirror")},
    )
    service = edit_config(
        kit,
        lambda doc: doc["models"]["users"].__setitem__(
            "sql",
            "select id, email, plan, CASE WHEN id = 4 THEN 'abc' ELSE CONCAT('', ltv) END AS ltv"
            " from users",
        ),
    )
    first = service.run(MIRROR)
    assert (first.failed_by_class, first.loaded_new) == ({"mapping": 1}, 4)
    assert 4 not in receiver.keys(accepted_only=False)  # never sent
    receiver.reset()

    run = replay(service, first, only_failed=True)

    assert 4 not in receiver.keys(accepted_only=False)  # actual: sent with "ltv": null
    assert run.failed_by_class == {"mapping": 1}
    assert failed_records(service, MIRROR)["4"].status is FailureStatus.PENDING


def test_replay_of_a_run_sent_under_an_old_primary_key_does_not_corrupt_the_snapshot(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=5, mappings={MIRROR: mapping("mirror")})
    first = service.run(MIRROR)  # keyed by id
    changed = edit_config(kit, _primary_key)
    ResetService(changed).reset(MIRROR)
    assert changed.run(MIRROR).loaded_new == 5  # now keyed by email
    receiver.reset()

    with contextlib.suppress(EbbtideError):  # refusing the replay is a fine answer
        replay(changed, first)
    sent_keys = receiver.keys(accepted_only=False)
    receiver.reset()
    after = changed.run(MIRROR)

    assert all(isinstance(k, str) and "@" in k for k in sent_keys)  # actual: 1..5 sent
    assert (after.deleted, receiver.requests) == (0, 0)  # actual: deletes for "1".."5"


# -- journals ---------------------------------------------------------------------------------


def test_each_run_journal_is_zstd_parquet_with_key_op_outcome_and_the_record_sent(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    receiver.reject(6, error_class="conflict")
    first = service.run(MIRROR)
    path = journal_of(kit, first)

    assert sorted(p.name for p in journal_dir(kit).iterdir()) == [path.name]  # no .partial left
    parquet = pq.ParquetFile(path)
    meta = parquet.metadata
    codecs = {
        meta.row_group(g).column(c).compression
        for g in range(meta.num_row_groups)
        for c in range(meta.num_columns)
    }
    assert codecs == {"ZSTD"}
    assert {"__key", "__op", "__outcome", "__record", "__k0"} <= set(parquet.schema_arrow.names)
    rows = {row["__k0"]: row for row in parquet.read().to_pylist()}
    assert set(rows) == set(range(1, ROWS + 1))
    assert {k: r["__outcome"] for k, r in rows.items() if r["__outcome"]} == {6: "conflict"}
    assert {r["__op"] for r in rows.values()} == {"added"}
    assert rows[6]["__key"] == "6"
    by_key = {r["key"]: r for r in receiver.records}
    for key, row in rows.items():
        record = json.loads(row["__record"])
        assert (record["op"], record["key"], record["data"]) == (
            "added",
            key,
            by_key[key]["data"],
        )


def test_a_journal_larger_than_one_row_group_keeps_every_record_and_replays_whole(
    receiver: Receiver, kit: Kit
) -> None:
    rows = 70_000  # more than one Parquet row group (65,536 records) is written
    service = kit.build(
        receiver.url,
        rows=rows,
        destinations={"hook": hook(batch_size=5_000, concurrency=4, timeout_s=60)},
        mappings={MIRROR: mapping("mirror")},
    )
    receiver.count_only = True
    first = service.run(MIRROR)
    assert first.loaded_new == rows, first.error

    meta = pq.ParquetFile(journal_of(kit, first)).metadata
    assert meta.num_row_groups >= 2
    assert meta.num_rows == rows
    assert {
        meta.row_group(g).column(c).compression
        for g in range(meta.num_row_groups)
        for c in range(meta.num_columns)
    } == {"ZSTD"}
    keys = pq.read_table(journal_of(kit, first), columns=["__k0"]).column("__k0").to_pylist()
    assert sorted(keys) == list(range(1, rows + 1))

    receiver.reset()
    run = replay(service, first)
    assert (run.status, run.loaded_new, receiver.record_count) == (RunStatus.SUCCESS, rows, rows)


def test_a_run_that_sends_nothing_leaves_no_journal(receiver: Receiver, kit: Kit) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    first = service.run(MIRROR)
    idle = service.run(MIRROR)

    assert [p.name for p in journal_dir(kit).iterdir()] == [journal_of(kit, first).name]
    assert not journal_of(kit, idle).exists()


def test_prune_removes_journals_older_than_keep_days_and_keeps_recent_ones(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    old = service.run(MIRROR)
    kit.sql("UPDATE users SET plan = 'gold' WHERE id = 1")
    recent = service.run(MIRROR)
    month_ago = time.time() - 31 * 86_400
    os.utime(journal_of(kit, old), (month_ago, month_ago))
    size = journal_of(kit, old).stat().st_size

    assert ReplayService(service).prune(30) == (1, size)

    assert not journal_of(kit, old).exists()
    assert journal_of(kit, recent).exists()
    assert ReplayService(service).plan(recent.id).count == 1
    with pytest.raises(UsageError, match="was pruned"):
        ReplayService(service).plan(old.id)


def test_a_sync_prunes_journals_past_the_workspace_retention(receiver: Receiver, kit: Kit) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    old = service.run(MIRROR)
    kept = edit_config(kit, lambda doc: doc.__setitem__("journals", {"keep_days": 2}))
    three_days_ago = time.time() - 3 * 86_400
    os.utime(journal_of(kit, old), (three_days_ago, three_days_ago))
    kit.sql("UPDATE users SET plan = 'gold' WHERE id = 1")

    new = kept.run(MIRROR)

    assert not journal_of(kit, old).exists()
    assert journal_of(kit, new).exists()
    with pytest.raises(UsageError, match=r"kept 2 days"):
        ReplayService(kept).plan(old.id)


# -- typed columns: a PostgreSQL table ---------------------------------------------------------


@pytest.mark.postgres
def test_replay_as_sent_restores_typed_values_in_a_postgres_table(
    tmp_path: Path, pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.test_postgres_destination import (
        APP_USERS,
        execute,
        make_workspace,
        query,
        warehouse,
    )

    monkeypatch.setenv("APP_DB_URL", pg_dsn)
    table = f"{pg_schema}.users"
    execute(pg_dsn, APP_USERS.format(table=table))
    service = make_workspace(tmp_path, table, rows=12)
    select = f"SELECT id, email, plan, ltv, signed_up_at FROM {table} ORDER BY id"
    try:
        first = service.run("users_to_app")
        as_first = query(pg_dsn, select)
        warehouse(
            tmp_path,
            "UPDATE users SET ltv = ltv + 1, signed_up_at = signed_up_at + INTERVAL 1 DAY,"
            " email = 'new' || id || '@example.com' WHERE id <= 4",
        )
        service.run("users_to_app")
        assert query(pg_dsn, select) != as_first

        run = replay(service, first)
        assert run.status is RunStatus.SUCCESS, run.error
        assert (run.loaded_new, run.replay_of) == (12, first.id)
        assert query(pg_dsn, select) == as_first

        latest = service.run("users_to_app")
        assert (latest.updated, latest.loaded_updated) == (4, 4)
        assert query(pg_dsn, select) != as_first
    finally:
        service.state.dispose()
