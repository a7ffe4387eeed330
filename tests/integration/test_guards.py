"""Guards stop a sync whose change set looks like a broken model, before anything is sent.

`--force` and `sync plan --json` are checked through the real `ebbtide` command. Each
scenario runs on every backend (tests/integration/warehouse_kit.py): a DuckDB warehouse file
with the local diff, and PostgreSQL and MariaDB with `diff: warehouse`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ebbtide.demo.receiver import Receiver
from ebbtide.services.reset import ResetService
from ebbtide.services.sync import SyncService
from ebbtide.state.schema import runs
from ebbtide.values import RunStatus
from tests.integration.warehouse_kit import ALL_BACKENDS, backend_kit
from tests.integration.workspace_kit import Kit, mapping, sent

ROWS = 200


@pytest.fixture(params=ALL_BACKENDS)
def kit(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Kit]:
    yield from backend_kit(request, tmp_path, monkeypatch)


def synced(kit: Kit, receiver: Receiver, name: str, **spec: Any) -> SyncService:
    """A workspace of ROWS users, synced once; the receiver forgets that first sync."""
    mappings = {name: mapping(spec.pop("mode", "mirror"), **spec)}
    service = kit.build(receiver.url, rows=ROWS, mappings=mappings)
    first = service.run(name)
    assert first.status is RunStatus.SUCCESS, first.error
    receiver.reset()
    return service


def empty_model(kit: Kit) -> None:
    kit.sql("CREATE TABLE users_kept AS SELECT * FROM users", "DELETE FROM users")


def restore_model(kit: Kit) -> None:
    kit.sql("INSERT INTO users SELECT * FROM users_kept", "DROP TABLE users_kept")


def ebbtide(kit: Kit, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ebbtide", "-w", str(kit.root), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_emptying_a_mirrored_model_trips_the_default_delete_guard_and_changes_nothing(
    receiver: Receiver, kit: Kit
) -> None:
    service = synced(kit, receiver, "users_mirror")
    empty_model(kit)
    run = service.run("users_mirror")

    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "max_delete_pct" in run.error and "200 of 200" in run.error and "50%" in run.error
    assert "--force" in run.error
    assert receiver.requests == 0
    assert (run.loaded_deleted, run.failed) == (0, 0)

    restore_model(kit)  # the snapshot still holds all 200: nothing to send
    again = service.run("users_mirror")
    assert again.status is RunStatus.SUCCESS, again.error
    assert (again.added, again.updated, again.deleted) == (0, 0, 0)
    assert receiver.requests == 0


def test_default_delete_guard_allows_half_and_trips_just_past_it(
    receiver: Receiver, kit: Kit
) -> None:
    service = synced(kit, receiver, "users_mirror")
    kit.sql("DELETE FROM users WHERE id <= 101")
    tripped = service.run("users_mirror")
    assert tripped.status is RunStatus.FAILED
    assert tripped.error is not None and "101 of 200" in tripped.error
    assert receiver.requests == 0

    kit.sql("INSERT INTO users VALUES (101, 'user101@example.com', 'free', 151.5)")
    half = service.run("users_mirror")
    assert half.status is RunStatus.SUCCESS, half.error
    assert half.loaded_deleted == 100


def test_max_deletes_counts_deletes_even_in_a_small_snapshot(receiver: Receiver, kit: Kit) -> None:
    mappings = {"users_mirror": mapping("mirror", guards={"max_deletes": 5})}
    service = kit.build(receiver.url, rows=20, mappings=mappings)
    service.run("users_mirror")
    kit.sql("DELETE FROM users WHERE id <= 5")
    receiver.reset()
    allowed = service.run("users_mirror")
    assert allowed.status is RunStatus.SUCCESS, allowed.error
    assert allowed.loaded_deleted == 5

    kit.sql("DELETE FROM users WHERE id <= 11")
    receiver.reset()
    tripped = service.run("users_mirror")
    assert tripped.status is RunStatus.FAILED
    assert tripped.error is not None
    assert "max_deletes" in tripped.error and "6 records (limit 5)" in tripped.error
    assert receiver.requests == 0


def test_max_change_pct_stops_a_sync_that_changes_too_much(receiver: Receiver, kit: Kit) -> None:
    service = synced(kit, receiver, "users_upsert", mode="upsert", guards={"max_change_pct": 10})
    kit.sql("UPDATE users SET plan = 'gold' WHERE id <= 30")
    tripped = service.run("users_upsert")
    assert tripped.status is RunStatus.FAILED
    assert tripped.error is not None
    assert "max_change_pct" in tripped.error and "30 records" in tripped.error
    assert "15.0%" in tripped.error and "limit 10%" in tripped.error
    assert receiver.requests == 0

    kit.sql("UPDATE users SET plan = CASE WHEN id % 3 = 0 THEN 'pro' ELSE 'free' END WHERE id > 20")
    allowed = service.run("users_upsert")
    assert allowed.status is RunStatus.SUCCESS, allowed.error
    assert sent(receiver) == {("updated", k) for k in range(1, 21)}


def test_custom_guards_keep_the_mirror_default_delete_guard(receiver: Receiver, kit: Kit) -> None:
    # Setting an absolute cap must not silently drop the 50% default that protects a mirror.
    service = synced(kit, receiver, "users_mirror", guards={"max_deletes": 1000})
    empty_model(kit)
    run = service.run("users_mirror")
    assert receiver.requests == 0, "200 deletes sent: the default max_delete_pct was dropped"
    assert run.status is RunStatus.FAILED
    assert run.error is not None and "max_delete_pct" in run.error


@pytest.mark.parametrize("guards", [None, {"max_deletes": 0, "max_delete_pct": 1}])
def test_upsert_mode_sends_no_deletes_so_no_delete_guard_trips(
    receiver: Receiver, kit: Kit, guards: dict[str, Any] | None
) -> None:
    spec = {"guards": guards} if guards else {}
    service = synced(kit, receiver, "users_upsert", mode="upsert", **spec)
    empty_model(kit)
    run = service.run("users_upsert")
    assert run.status is RunStatus.SUCCESS, run.error
    assert (run.deleted, run.skipped, receiver.requests) == (ROWS, ROWS, 0)


def test_plan_reports_the_guard_and_force_sends_once(receiver: Receiver, kit: Kit) -> None:
    service = synced(kit, receiver, "users_mirror")
    plan = ebbtide(kit, "sync", "plan", "users_mirror", "--json")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["guard_tripped"] is None

    empty_model(kit)
    plan = ebbtide(kit, "sync", "plan", "users_mirror", "--json")
    assert plan.returncode == 0, plan.stderr
    tripped = json.loads(plan.stdout)
    assert tripped["guard_tripped"].startswith("max_delete_pct")
    assert "200 of 200" in tripped["guard_tripped"]
    assert (tripped["deleted"], tripped["would_send"]) == (ROWS, ROWS)

    refused = ebbtide(kit, "sync", "run", "users_mirror")
    assert refused.returncode == 1
    assert "max_delete_pct" in refused.stderr and "--force" in refused.stderr
    assert receiver.requests == 0

    forced = ebbtide(kit, "sync", "run", "users_mirror", "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    [run] = json.loads(forced.stdout)
    assert (run["status"], run["loaded_deleted"]) == ("success", ROWS)
    assert sent(receiver) == {("deleted", k) for k in range(1, ROWS + 1)}

    restore_model(kit)  # the force was for that one run: emptying again trips again
    assert service.run("users_mirror").loaded_new == ROWS
    empty_model(kit)
    receiver.reset()
    assert ebbtide(kit, "sync", "run", "users_mirror").returncode == 1
    assert receiver.requests == 0


# -- losing most of a destination, at any size and across runs ------------------------------


def small(kit: Kit, receiver: Receiver, rows: int, **spec: Any) -> SyncService:
    service = kit.build(receiver.url, rows=rows, mappings={"m": mapping("mirror", **spec)})
    assert service.run("m").loaded_new == rows
    receiver.reset()
    return service


@pytest.mark.parametrize(
    ("rows", "deleted", "trips"),
    [(3, 3, True), (3, 2, True), (3, 1, False), (1, 1, True), (2, 1, False), (2, 2, True)],
)
def test_losing_more_than_half_trips_however_small_the_destination(
    receiver: Receiver, kit: Kit, rows: int, deleted: int, trips: bool
) -> None:
    # "Most" is more than half: 1 of 2 is allowed, the last record of a destination is not.
    service = small(kit, receiver, rows)
    kit.sql(f"DELETE FROM users WHERE id <= {deleted}")
    run = service.run("m")
    if trips:
        assert run.status is RunStatus.FAILED
        assert run.error is not None and f"delete {deleted} of {rows} records" in run.error
        assert "--force" in run.error
        assert receiver.requests == 0
    else:
        assert run.status is RunStatus.SUCCESS, run.error
        assert run.loaded_deleted == deleted


def test_max_delete_pct_100_lets_a_small_mirror_empty_its_destination(
    receiver: Receiver, kit: Kit
) -> None:
    service = small(kit, receiver, 3, guards={"max_delete_pct": 100})
    kit.sql("DELETE FROM users")
    run = service.run("m")
    assert run.status is RunStatus.SUCCESS, run.error
    assert sent(receiver) == {("deleted", k) for k in (1, 2, 3)}


def test_a_shrink_in_two_steps_trips_on_the_second(receiver: Receiver, kit: Kit) -> None:
    service = synced(kit, receiver, "users_mirror")
    kit.sql("DELETE FROM users WHERE id <= 98")  # 49%
    first = service.run("users_mirror")
    assert (first.status, first.loaded_deleted) == (RunStatus.SUCCESS, 98), first.error
    receiver.reset()

    kit.sql("DELETE FROM users WHERE id <= 148")  # 50 of 102: 49% again
    second = service.run("users_mirror")
    assert second.status is RunStatus.FAILED
    assert receiver.requests == 0
    assert second.error is not None
    reference_run = first  # it started with all 200 records in the destination
    for told in (
        "max_delete_pct",
        "delete 50 of 102 records",
        "leaving 52 of the 200",
        f"run {reference_run.id}",
        "74.0% lost across runs",
        "limit 50%",
        "--force",
    ):
        assert told in second.error, (told, second.error)
    plan = service.plan("users_mirror")
    assert plan.guard is not None and "leaving 52 of the 200" in plan.guard


def test_adds_and_updates_after_a_shrink_are_never_blocked(receiver: Receiver, kit: Kit) -> None:
    service = synced(kit, receiver, "users_mirror")
    kit.sql("DELETE FROM users WHERE id <= 98")
    assert service.run("users_mirror").status is RunStatus.SUCCESS
    kit.sql(
        "UPDATE users SET plan = 'gold' WHERE id > 190",
        "INSERT INTO users VALUES (1000, 'new@example.com', 'free', 1.0)",
    )
    receiver.reset()
    run = service.run("users_mirror")
    assert run.status is RunStatus.SUCCESS, run.error
    assert (run.loaded_new, run.loaded_updated) == (1, 10)


def test_a_forced_run_rebases_the_reference(receiver: Receiver, kit: Kit) -> None:
    service = synced(kit, receiver, "users_mirror")
    kit.sql("DELETE FROM users WHERE id <= 98")
    assert service.run("users_mirror").status is RunStatus.SUCCESS
    kit.sql("DELETE FROM users WHERE id <= 148")
    assert service.run("users_mirror").status is RunStatus.FAILED
    forced = service.run("users_mirror", force=True)
    assert (forced.status, forced.loaded_deleted, forced.forced) == (RunStatus.SUCCESS, 50, True)

    kit.sql("DELETE FROM users WHERE id <= 160")  # 12 of 52: measured from 52 now, not 200
    receiver.reset()
    after = service.run("users_mirror")
    assert (after.status, after.loaded_deleted) == (RunStatus.SUCCESS, 12), after.error


def test_a_reset_rebases_the_reference(receiver: Receiver, kit: Kit) -> None:
    service = synced(kit, receiver, "users_mirror")
    kit.sql("DELETE FROM users WHERE id <= 98")
    assert service.run("users_mirror").status is RunStatus.SUCCESS
    ResetService(service).reset("users_mirror")
    assert service.run("users_mirror").loaded_new == 102  # the reset sends the model again
    kit.sql("DELETE FROM users WHERE id <= 148")
    after = service.run("users_mirror")
    assert (after.status, after.loaded_deleted) == (RunStatus.SUCCESS, 50), after.error


def test_sizes_older_than_the_window_are_forgotten(receiver: Receiver, kit: Kit) -> None:
    service = synced(kit, receiver, "users_mirror", guards={"delete_window": "1d"})
    kit.sql("DELETE FROM users WHERE id <= 98")
    assert service.run("users_mirror").status is RunStatus.SUCCESS
    two_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    with service.state.engine.begin() as conn:  # as if every run so far were that old
        conn.execute(runs.update().values(started_at=two_days_ago))
    kit.sql("DELETE FROM users WHERE id <= 148")
    receiver.reset()
    run = service.run("users_mirror")
    assert (run.status, run.loaded_deleted) == (RunStatus.SUCCESS, 50), run.error
