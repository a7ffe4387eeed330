"""The scheduler with a controllable clock, on SQLite and PostgreSQL state stores.

Claims go to an executor that records them (or, in the last tests, to the real in-process
executor running real syncs into a file destination). Time only moves when a test moves it.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from ebbtide.config.workspace import Workspace, load_workspace
from ebbtide.errors import UsageError
from ebbtide.services.claims import Claim, Reason, RunEvent
from ebbtide.services.scheduler import Scheduler, ScheduleService, ThreadExecutor
from ebbtide.state.schedules import ScheduleBook
from ebbtide.state.store import SqlStateStore

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class TestClock:
    """The time the scheduler reads: moved by the test, never by the wall clock."""

    __test__ = False

    def __init__(self, now: datetime = T0) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)


@dataclass
class RecordingExecutor:
    """Keeps what it is handed; runs nothing (runs finish when the test says so)."""

    workers: int = 4
    claims: list[Claim] = field(default_factory=list)
    busy: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def room(self) -> int:
        return self.workers - len(self.busy)

    def running(self) -> frozenset[str]:
        return frozenset(self.busy)

    def submit(self, claim: Claim, workspace: Workspace) -> None:
        with self.lock:
            self.claims.append(claim)

    def names(self) -> list[str]:
        return [c.mapping for c in self.claims]


def write_workspace(root: Path, mappings: dict[str, dict[str, Any]]) -> Workspace:
    """A DuckDB warehouse of 5 users and one file destination per mapping."""
    root.mkdir(parents=True, exist_ok=True)
    warehouse = root / "warehouse.duckdb"
    if not warehouse.exists():
        with duckdb.connect(str(warehouse)) as con:
            con.execute(
                "CREATE TABLE users AS SELECT i::BIGINT AS id, 'u' || i AS email"
                " FROM range(1, 6) t(i)"
            )
    spec = {
        "sources": {"warehouse": {"type": "duckdb", "path": "warehouse.duckdb"}},
        "models": {
            "users": {"source": "warehouse", "primary_key": "id", "sql": "select * from users"}
        },
        "destinations": {name: {"type": "file", "path": f"out/{name}.jsonl"} for name in mappings},
        "mappings": {
            name: {
                "model": "users",
                "destination": name,
                "action": "upsert",
                "fields": {"email": "email"},
                **options,
            }
            for name, options in mappings.items()
        },
    }
    (root / "ebbtide.yml").write_text(yaml.safe_dump(spec))
    return load_workspace(root)


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    dsn = request.getfixturevalue("pg_dsn")
    schema = request.getfixturevalue("pg_schema")
    return f"{dsn}?options=-csearch_path%3D{schema}"


@pytest.fixture
def store(state_url: str, tmp_path: Path) -> Iterator[SqlStateStore]:
    state = SqlStateStore(state_url, tmp_path)
    yield state
    state.dispose()


def scheduler_for(
    workspace: Workspace, store: SqlStateStore, clock: TestClock, executor: RecordingExecutor
) -> Scheduler:
    """A scheduler keeping exact intervals from the first due time, so that times can be
    written down (spreading is tested on its own)."""
    book = ScheduleBook(store.engine)
    return Scheduler(workspace, book, executor, clock, name="test", spread_intervals=False)


def test_mappings_on_one_interval_come_due_spread_over_it(
    tmp_path: Path, store: SqlStateStore
) -> None:
    names = [f"m{i}" for i in range(20)]
    workspace = write_workspace(tmp_path / "ws", {n: {"schedule": "1m"} for n in names})
    clock, executor = TestClock(), RecordingExecutor(workers=100)
    scheduler = Scheduler(workspace, ScheduleBook(store.engine), executor, clock, name="a")
    scheduler.tick()
    assert sorted(executor.names()) == sorted(names)  # the first run of each comes at once
    due = {n: s.due_at for n, s in ScheduleBook(store.engine).slots().items()}
    assert None not in due.values()
    assert all(T0 < d <= T0 + timedelta(minutes=1) for d in due.values() if d is not None)
    assert len(set(due.values())) >= 10  # spread over the minute, not in one instant
    again = Scheduler(workspace, ScheduleBook(store.engine), executor, clock, name="b")
    for _ in range(3):  # every slot, from then on, exactly one interval apart
        clock.advance(minutes=1)
        executor.claims.clear()
        again.tick()
        assert sorted(executor.names()) == sorted(names)
        moved = {n: s.due_at for n, s in ScheduleBook(store.engine).slots().items()}
        assert all(
            moved[n] == due_at + timedelta(minutes=1)
            for n in names
            if (due_at := due[n]) is not None
        )
        due = moved


def test_an_interval_runs_at_once_then_every_interval(tmp_path: Path, store: SqlStateStore) -> None:
    workspace = write_workspace(tmp_path / "ws", {"users": {"schedule": "30s"}})
    clock, executor = TestClock(), RecordingExecutor()
    scheduler = scheduler_for(workspace, store, clock, executor)
    scheduler.tick()
    assert executor.names() == ["users"] and executor.claims[0].reason is Reason.SCHEDULE
    clock.advance(seconds=29)
    scheduler.tick()
    assert executor.names() == ["users"]
    clock.advance(seconds=1)
    scheduler.tick()
    assert [c.due_at for c in executor.claims] == [T0, T0 + timedelta(seconds=30)]
    slot = ScheduleBook(store.engine).slot("users")
    assert slot is not None and slot.due_at == T0 + timedelta(seconds=60)


def test_slots_missed_while_nothing_ran_run_once(tmp_path: Path, store: SqlStateStore) -> None:
    workspace = write_workspace(tmp_path / "ws", {"users": {"schedule": "30s"}})
    clock, executor = TestClock(), RecordingExecutor()
    scheduler_for(workspace, store, clock, executor).tick()
    clock.advance(minutes=5, seconds=10)  # ten slots missed: no scheduler was running
    restarted = scheduler_for(workspace, store, clock, executor)
    restarted.tick()
    restarted.tick()
    assert executor.names() == ["users", "users"]
    slot = ScheduleBook(store.engine).slot("users")
    assert slot is not None and slot.due_at == T0 + timedelta(minutes=5, seconds=30)


def test_cron_in_a_time_zone_runs_at_its_wall_clock_time_across_a_dst_change(
    tmp_path: Path, store: SqlStateStore
) -> None:
    workspace = write_workspace(
        tmp_path / "ws", {"users": {"schedule": "0 9 * * *", "timezone": "Europe/Paris"}}
    )
    # 28 March 2026, 06:00 UTC: 07:00 in Paris (CET). Clocks go forward that night.
    clock = TestClock(datetime(2026, 3, 28, 6, 0, tzinfo=UTC))
    executor = RecordingExecutor()
    scheduler = scheduler_for(workspace, store, clock, executor)
    scheduler.tick()
    assert executor.claims == []
    clock.at = datetime(2026, 3, 28, 8, 0, tzinfo=UTC)  # 09:00 CET
    scheduler.tick()
    clock.at = datetime(2026, 3, 29, 7, 59, 59, tzinfo=UTC)
    scheduler.tick()
    clock.at = datetime(2026, 3, 29, 7, 0, tzinfo=UTC) + timedelta(hours=1)
    scheduler.tick()
    assert [c.due_at for c in executor.claims] == [
        datetime(2026, 3, 28, 8, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 7, 0, tzinfo=UTC),  # 09:00 CEST: 23 hours later
    ]


def test_manual_and_disabled_mappings_never_run_on_their_own(
    tmp_path: Path, store: SqlStateStore
) -> None:
    workspace = write_workspace(
        tmp_path / "ws",
        {
            "by_hand": {"schedule": "manual"},
            "off": {"schedule": "30s", "enabled": False},
            "on": {"schedule": "30s"},
        },
    )
    clock, executor = TestClock(), RecordingExecutor()
    scheduler = scheduler_for(workspace, store, clock, executor)
    for _ in range(4):
        scheduler.tick()
        clock.advance(seconds=30)
    assert executor.names() == ["on"] * 4
    slots = ScheduleBook(store.engine).slots()
    assert slots["by_hand"].due_at is None


def test_a_paused_mapping_does_not_run_until_resumed(tmp_path: Path, store: SqlStateStore) -> None:
    workspace = write_workspace(tmp_path / "ws", {"users": {"schedule": "30s"}})
    clock, executor = TestClock(), RecordingExecutor()
    scheduler = scheduler_for(workspace, store, clock, executor)
    service = ScheduleService(workspace, store, clock)
    service.pause("users")  # before any scheduler saw it
    scheduler.tick()
    clock.advance(minutes=3)
    scheduler.tick()
    assert executor.claims == []
    service.resume("users")
    scheduler.tick()
    assert executor.names() == ["users"]
    service.pause("users")
    clock.advance(minutes=3)
    scheduler.tick()
    assert executor.names() == ["users"]
    with pytest.raises(UsageError, match="unknown mapping 'user'"):
        service.pause("user")


def test_a_changed_schedule_is_computed_afresh_and_a_removed_mapping_dropped(
    tmp_path: Path, store: SqlStateStore
) -> None:
    root = tmp_path / "ws"
    workspace = write_workspace(root, {"users": {"schedule": "1h"}, "gone": {"schedule": "1h"}})
    clock, executor = TestClock(), RecordingExecutor()
    scheduler = scheduler_for(workspace, store, clock, executor)
    scheduler.tick()
    assert sorted(executor.names()) == ["gone", "users"]
    clock.advance(minutes=10)
    scheduler.workspace = write_workspace(root, {"users": {"schedule": "0 * * * *"}})
    scheduler.tick()
    slots = ScheduleBook(store.engine).slots()
    assert set(slots) == {"users"}
    assert (slots["users"].schedule, slots["users"].due_at) == (
        "0 * * * *",
        T0 + timedelta(hours=1),
    )
    assert len(executor.claims) == 2


def test_a_mapping_still_syncing_skips_its_slot_rather_than_queueing_twice(
    tmp_path: Path, store: SqlStateStore
) -> None:
    workspace = write_workspace(tmp_path / "ws", {"users": {"schedule": "30s"}})
    clock, executor = TestClock(), RecordingExecutor()
    scheduler = scheduler_for(workspace, store, clock, executor)
    scheduler.tick()
    executor.busy.add("users")  # the first run goes on past the next slot
    clock.advance(seconds=31)
    scheduler.tick()
    assert [(s.mapping, s.due_at) for s in scheduler.skipped] == [
        ("users", T0 + timedelta(seconds=30))
    ]
    executor.busy.clear()
    scheduler.tick()
    assert executor.names() == ["users"]
    slot = ScheduleBook(store.engine).slot("users")
    assert slot is not None and slot.due_at == T0 + timedelta(seconds=60)


def test_a_scheduler_claims_no_more_than_its_executor_has_room_for(
    tmp_path: Path, store: SqlStateStore
) -> None:
    workspace = write_workspace(tmp_path / "ws", {f"m{i}": {"schedule": "1m"} for i in range(5)})
    clock = TestClock()
    small, other = RecordingExecutor(workers=2), RecordingExecutor(workers=10)
    scheduler_for(workspace, store, clock, small).tick()
    scheduler_for(workspace, store, clock, other).tick()
    assert len(small.claims) == 2 and len(other.claims) == 3
    assert set(small.names()) | set(other.names()) == {f"m{i}" for i in range(5)}


def test_sync_now_is_queued_once_merged_after_and_taken_by_one_scheduler(
    tmp_path: Path, store: SqlStateStore
) -> None:
    workspace = write_workspace(tmp_path / "ws", {"users": {"schedule": "manual"}})
    clock = TestClock()
    service = ScheduleService(workspace, store, clock)
    first = service.request_sync("users", actor="ana")
    clock.advance(seconds=5)
    second = service.request_sync("users", actor="bob")
    assert (first.status, second.status) == ("queued", "merged")
    assert (second.requested_at, second.requested_by) == (T0, "ana")  # the one waiting
    executors = [RecordingExecutor(), RecordingExecutor()]
    for executor in executors:
        scheduler_for(workspace, store, clock, executor).tick()
    claims = executors[0].claims + executors[1].claims
    assert [(c.mapping, c.reason) for c in claims] == [("users", Reason.REQUEST)]
    assert service.request_sync("users", actor="bob").status == "queued"  # a new request


def test_sync_now_waits_while_its_mapping_syncs_here(tmp_path: Path, store: SqlStateStore) -> None:
    workspace = write_workspace(tmp_path / "ws", {"users": {"schedule": "manual"}})
    clock, executor = TestClock(), RecordingExecutor()
    scheduler = scheduler_for(workspace, store, clock, executor)
    executor.busy.add("users")
    ScheduleService(workspace, store, clock).request_sync("users", actor=None)
    scheduler.tick()
    assert executor.claims == []
    executor.busy.clear()
    scheduler.tick()
    assert executor.names() == ["users"]


def test_schedulers_sharing_a_store_claim_each_due_slot_exactly_once(
    tmp_path: Path, state_url: str
) -> None:
    """Four schedulers, each with a state store connection of its own, tick together on a
    shared clock; every slot of every mapping is claimed by exactly one of them."""
    names = [f"m{i}" for i in range(6)]
    workspace = write_workspace(tmp_path / "ws", {n: {"schedule": "10s"} for n in names})
    clock = TestClock()
    stores = [SqlStateStore(state_url, tmp_path) for _ in range(4)]
    executors = [RecordingExecutor(workers=100) for _ in stores]
    schedulers = [
        Scheduler(workspace, ScheduleBook(s.engine), e, clock, name=f"s{i}", spread_intervals=False)
        for i, (s, e) in enumerate(zip(stores, executors, strict=True))
    ]
    steps = 12
    try:
        for _ in range(steps):
            barrier = threading.Barrier(len(schedulers))
            errors: list[BaseException] = []

            def tick(
                scheduler: Scheduler,
                barrier: threading.Barrier = barrier,
                errors: list[BaseException] = errors,
            ) -> None:
                barrier.wait()
                try:
                    scheduler.tick()
                except BaseException as error:  # noqa: BLE001 - reported below
                    errors.append(error)

            threads = [threading.Thread(target=tick, args=(s,)) for s in schedulers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert not errors, errors
            clock.advance(seconds=10)
    finally:
        for state in stores:
            state.dispose()
    claimed = Counter((c.mapping, c.due_at) for e in executors for c in e.claims)
    expected = {(n, T0 + timedelta(seconds=10 * k)) for n in names for k in range(steps)}
    assert set(claimed) == expected
    assert set(claimed.values()) == {1}


# -- the in-process executor, running real syncs -----------------------------------------------


class Events:
    """The executor's events, and a way to wait for them without sleeping."""

    def __init__(self) -> None:
        self.seen: list[RunEvent] = []
        self.changed = threading.Condition()

    def __call__(self, event: RunEvent) -> None:
        with self.changed:
            self.seen.append(event)
            self.changed.notify_all()

    def wait_for(self, kind: str, n: int = 1) -> list[RunEvent]:
        def enough() -> bool:
            return len(self.of(kind)) >= n

        with self.changed:
            assert self.changed.wait_for(enough, timeout=60), (kind, self.seen)
        return self.of(kind)

    def of(self, kind: str) -> list[RunEvent]:
        return [e for e in self.seen if e.kind == kind]


def test_the_thread_executor_runs_scheduled_syncs_with_the_schedule_trigger(
    tmp_path: Path, store: SqlStateStore
) -> None:
    root = tmp_path / "ws"
    workspace = write_workspace(root, {"users": {"schedule": "30s"}, "copy": {"schedule": "1h"}})
    clock, events = TestClock(), Events()
    executor = ThreadExecutor(store, workers=2, on_event=events)
    scheduler = Scheduler(workspace, ScheduleBook(store.engine), executor, clock)
    scheduler.tick()
    finished = events.wait_for("finished", 2)
    assert {(e.claim.mapping, e.status) for e in finished} == {
        ("users", "success"),
        ("copy", "success"),
    }
    started = {e.claim.mapping: e.run_id for e in events.of("started")}
    for event in finished:
        assert started[event.claim.mapping] == event.run_id
        run = store.get_run(event.run_id or 0)
        assert (run.trigger, run.actor, run.loaded_new) == ("schedule", "scheduler", 5)
    lines = (root / "out" / "users.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["key"] for line in lines) == [1, 2, 3, 4, 5]


def test_a_mapping_another_process_syncs_is_skipped_by_the_lease(
    tmp_path: Path, store: SqlStateStore
) -> None:
    workspace = write_workspace(tmp_path / "ws", {"users": {"schedule": "30s"}})
    clock, events = TestClock(), Events()
    _, lease = store.start_run("users", "manual", lease_ttl_s=600)  # `sync run` elsewhere
    executor = ThreadExecutor(store, workers=2, on_event=events)
    book = ScheduleBook(store.engine)
    scheduler = Scheduler(workspace, book, executor, clock, spread_intervals=False)
    scheduler.tick()
    [skipped] = events.wait_for("skipped")
    assert "busy" in (skipped.detail or "")
    assert executor.wait_idle(60)
    assert [r.id for r in store.list_runs("users")] == [lease.run_id]
    slot = ScheduleBook(store.engine).slot("users")
    assert slot is not None and slot.due_at == T0 + timedelta(seconds=30)  # not retried now


def test_a_sync_request_refused_by_a_busy_mapping_waits_again(
    tmp_path: Path, store: SqlStateStore
) -> None:
    workspace = write_workspace(tmp_path / "ws", {"users": {"schedule": "manual"}})
    clock, events = TestClock(), Events()
    _, lease = store.start_run("users", "manual", lease_ttl_s=600)
    ScheduleService(workspace, store, clock).request_sync("users", actor="ana")
    executor = ThreadExecutor(store, workers=2, on_event=events)
    scheduler = Scheduler(workspace, ScheduleBook(store.engine), executor, clock)
    scheduler.tick()
    events.wait_for("skipped")
    assert executor.wait_idle(60)
    waiting = ScheduleBook(store.engine).waiting("users")
    assert waiting is not None and waiting.requested_by == "ana"
