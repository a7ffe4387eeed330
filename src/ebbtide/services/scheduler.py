"""The scheduler: mappings sync on their schedules, and when someone asks ("sync now").

On each tick the scheduler brings the state store's due times in line with the workspace,
claims the slots that are due (compare-and-set, state/schedules.py) and the waiting requests,
and hands them to an executor. Any number of schedulers may share a state store: each due slot
is claimed once. The mapping's lease stays the final authority on one run at a time: a mapping
still syncing when it comes due again is skipped until its next due time, never queued twice.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from ebbtide.config.models import MappingSpec
from ebbtide.config.schedule import first_due, next_due
from ebbtide.config.workspace import Workspace
from ebbtide.errors import ConflictError
from ebbtide.services.claims import Claim, ClaimRunner, Reason, RunEvent
from ebbtide.services.replay import ReplayPlan, ReplayService
from ebbtide.services.reset import ResetPlan, ResetService
from ebbtide.services.sync import SyncPlan, SyncService
from ebbtide.services.views import ActionView
from ebbtide.state.actions import ActionLog
from ebbtide.state.schedules import ReplayRequest, ScheduleBook
from ebbtide.state.store import SqlStateStore
from ebbtide.values import DueSlot, RunRecord, RunStatus, Trigger

log = logging.getLogger(__name__)


class Clock(Protocol):
    """Where the scheduler reads the time: the system's, or a test's."""

    def now(self) -> datetime:
        """The current time, UTC-aware."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class Executor(Protocol):
    """Runs claimed syncs; the scheduler claims no more than it has room for."""

    def room(self) -> int:
        """How many more runs it can start now."""
        ...

    def running(self) -> frozenset[str]:
        """Mappings it is syncing now."""
        ...

    def submit(self, claim: Claim, workspace: Workspace) -> None:
        """Start the claimed run (in the background)."""
        ...


class Scheduler:
    """Claims due mappings and sync requests from the state store, tick by tick."""

    def __init__(
        self,
        workspace: Workspace,
        book: ScheduleBook,
        executor: Executor,
        clock: Clock | None = None,
        name: str | None = None,
        spread_intervals: bool = True,
    ) -> None:
        self.workspace, self.book, self.executor = workspace, book, executor
        self.clock = clock or SystemClock()
        # Mappings on one interval come due spread over it, each at an offset drawn from its
        # name, rather than all in the same instant (config/schedule.py next_due).
        self.spread_intervals = spread_intervals
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.skipped: list[DueSlot] = []  # slots the last tick skipped: their mapping was busy

    def tick(self) -> list[Claim]:
        """One round: sync the due table with the workspace, claim what is due, start it."""
        now = self.clock.now()
        self.skipped = []
        slots = self.sync_slots(now)
        claims = self._claim_requests(self.executor.room())
        room = self.executor.room() - len(claims)
        busy = self.executor.running() | {c.mapping for c in claims}
        for slot in sorted(slots.values(), key=_due_order):
            if room <= 0:
                break  # left due: another scheduler, or this one next tick, takes it
            spec = self.workspace.spec.mappings.get(slot.mapping)
            if spec is None or not _runs_on_schedule(spec, slot, now):
                continue
            if slot.mapping in busy:
                # Still syncing from an earlier slot: this one is skipped, not queued twice.
                self._skip_busy(slot, spec, now)
                continue
            if self.book.claim(slot, now, self._after(spec, slot, now), self.name):
                claims.append(Claim(slot.mapping, Reason.SCHEDULE, due_at=slot.due_at))
                room -= 1
        for claim in claims:
            self.executor.submit(claim, self.workspace)
        return claims

    def sync_slots(self, now: datetime) -> dict[str, DueSlot]:
        """New mappings get a first due time, removed ones are dropped, a changed schedule
        (or time zone) is computed afresh. Returns the slots as they now stand."""
        slots = self.book.slots()
        mappings = self.workspace.spec.mappings
        for name in set(slots) - set(mappings):
            self.book.drop(name)
        for name, spec in mappings.items():
            slot = slots.get(name)
            planned = (spec.schedule, spec.schedule_timezone)
            if slot is not None and (slot.schedule, slot.timezone) == planned:
                continue
            due = first_due(spec.schedule, now, spec.schedule_timezone)
            if slot is None:
                self.book.add(name, *planned, due)
            else:
                self.book.replan(slot, *planned, due)
        return {n: s for n, s in self.book.slots().items() if n in mappings}

    def _after(self, spec: MappingSpec, slot: DueSlot, now: datetime) -> datetime | None:
        assert slot.due_at is not None
        return next_due(
            spec.schedule,
            slot.due_at,
            now,
            spec.schedule_timezone,
            spread_by=slot.mapping if self.spread_intervals else None,
        )

    def _skip_busy(self, slot: DueSlot, spec: MappingSpec, now: datetime) -> None:
        if self.book.claim(slot, now, self._after(spec, slot, now), self.name):
            self.skipped.append(slot)

    def _claim_requests(self, room: int) -> list[Claim]:
        """Waiting "sync now" requests, oldest first. One whose mapping this scheduler is
        syncing waits for that run to end; then it runs, since it asked for newer data."""
        claims: list[Claim] = []
        running = set(self.executor.running())
        for request in self.book.requests():
            if len(claims) >= room:
                break
            if request.mapping not in self.workspace.spec.mappings or request.mapping in running:
                continue
            if self.book.take(request):
                claims.append(Claim(request.mapping, Reason.REQUEST, request=request))
                running.add(request.mapping)
        for replay in self.book.replays():
            if len(claims) >= room:
                break
            if replay.mapping not in self.workspace.spec.mappings or replay.mapping in running:
                continue
            if self.book.take_replay(replay):
                claims.append(Claim(replay.mapping, Reason.REPLAY, replay=replay))
                running.add(replay.mapping)
        return claims


def _runs_on_schedule(spec: MappingSpec, slot: DueSlot, now: datetime) -> bool:
    """Due, enabled, not paused, and computed from the schedule the workspace has."""
    return (
        spec.enabled
        and not slot.paused
        and slot.due_at is not None
        and slot.due_at <= now
        and (slot.schedule, slot.timezone) == (spec.schedule, spec.schedule_timezone)
    )


def _due_order(slot: DueSlot) -> tuple[bool, datetime]:
    return slot.due_at is None, slot.due_at or datetime.max.replace(tzinfo=UTC)


# -- requests and pauses, as the CLI and the API call them --------------------------------------


@dataclass(frozen=True)
class SyncRequestOutcome:
    """What became of a "sync now": queued, or merged into the request already waiting."""

    mapping: str
    queued: bool
    requested_at: datetime
    requested_by: str | None
    since_run: int = 0  # the mapping's newest run when asked: the requested one comes after

    @property
    def status(self) -> str:
        return "queued" if self.queued else "merged"

    def to_json(self) -> dict[str, object]:
        return {
            "mapping": self.mapping,
            "status": self.status,
            "requested_at": self.requested_at.isoformat(),
            "requested_by": self.requested_by,
        }


class ScheduleService:
    """Sync requests and pauses of one workspace's mappings, for the CLI and the API."""

    def __init__(
        self, workspace: Workspace, state: SqlStateStore | None = None, clock: Clock | None = None
    ) -> None:
        self._own_state = state is None
        self.state = state or SqlStateStore(workspace.spec.state, workspace.root)
        self.workspace, self.book = workspace, ScheduleBook(self.state.engine)
        self.actions = ActionLog(self.state.engine)
        self.clock = clock or SystemClock()

    def close(self) -> None:
        if self._own_state:
            self.state.dispose()

    def request_sync(self, mapping: str, actor: str | None) -> SyncRequestOutcome:
        """Ask a running `ebbtide serve` to sync `mapping` now (whatever its schedule)."""
        self.workspace.mapping(mapping)
        newest = self.state.list_runs(mapping, limit=1)
        queued, request = self.book.request(mapping, self.clock.now(), actor)
        self.actions.record(
            self.clock.now(), actor, "sync_now", mapping, detail="queued" if queued else "merged"
        )
        return SyncRequestOutcome(
            mapping,
            queued,
            request.requested_at,
            request.requested_by,
            newest[0].id if newest else 0,
        )

    def wait_for_run(self, outcome: SyncRequestOutcome, poll_s: float = 0.2) -> RunRecord:
        """Wait until a serve process has run the request and the run has ended."""
        while True:
            waiting = self.book.waiting(outcome.mapping)
            if waiting is None or waiting.requested_at != outcome.requested_at:
                for run in self.state.list_runs(outcome.mapping, limit=20):
                    if run.id <= outcome.since_run:
                        break
                    if (
                        run.trigger == Trigger.MANUAL.value
                        and run.actor == outcome.requested_by
                        and run.status != RunStatus.RUNNING
                    ):
                        return run
            time.sleep(poll_s)  # serve runs in another process: its rows are all we see

    def pause(self, mapping: str, actor: str | None = None) -> None:
        """Its schedule stops starting runs until resumed (requests still run)."""
        self.workspace.mapping(mapping)
        self.book.set_paused(mapping, True)
        self.actions.record(self.clock.now(), actor, "pause", mapping)

    def resume(self, mapping: str, actor: str | None = None) -> None:
        self.workspace.mapping(mapping)
        self.book.set_paused(mapping, False)
        self.actions.record(self.clock.now(), actor, "resume", mapping)

    def queue_depth(self) -> dict[str, int]:
        """What waits for a worker: sync requests, replays, and schedules past due."""
        now = self.clock.now()
        overdue = [
            s
            for s in self.book.slots().values()
            if s.due_at is not None and s.due_at <= now and not s.paused
        ]
        return {
            "sync_now": len(self.book.requests()),
            "replay": len(self.book.replays()),
            "schedule": len(overdue),
        }

    def paused(self, mapping: str) -> bool:
        slot = self.book.slot(mapping)
        return slot is not None and slot.paused

    def request_replay(
        self, run_id: int, *, latest: bool, only_failed: bool, actor: str | None
    ) -> tuple[ReplayRequest, int]:
        """Queue a replay of a past run for `serve`; refused at once (UsageError) when it
        cannot be replayed. Returns the request and how many records it resends."""
        plan = ReplayService(SyncService(self.workspace, self.state)).plan(
            run_id, latest=latest, only_failed=only_failed
        )
        request = self.book.request_replay(
            plan.run.mapping, run_id, latest, only_failed, self.clock.now(), actor
        )
        how = "latest data" if latest else "as sent"
        which = "failed records" if only_failed else "all records"
        self.actions.record(
            self.clock.now(), actor, "replay", plan.run.mapping, run_id, f"{which}, {how}"
        )
        return request, plan.count

    def replay_preview(self, run_id: int) -> ReplayPlan:
        """What replaying every record of a run would resend (its `failed` count: only the
        failed ones), for the person who confirms it; nothing is queued. ConflictError when
        the run cannot be replayed."""
        return ReplayService(SyncService(self.workspace, self.state)).plan(run_id)

    def reset(self, mapping: str, actor: str | None) -> RunRecord:
        """Reset the mapping (its next sync sends the whole model), recorded with who asked."""
        record = ResetService(SyncService(self.workspace, self.state)).reset(mapping, actor=actor)
        self.actions.record(self.clock.now(), actor, "reset", mapping, record.id)
        return record

    def reset_plan(self, mapping: str) -> ResetPlan:
        return ResetService(SyncService(self.workspace, self.state)).plan(mapping)

    def plan(self, mapping: str, samples: int = 3) -> SyncPlan:
        """What the next sync would send, from the real diff; nothing is sent."""
        return SyncService(self.workspace, self.state).plan(mapping, samples)

    def actions_taken(
        self, mapping: str | None = None, limit: int = 50, before: int | None = None
    ) -> list[ActionView]:
        """What people did, newest first; `before` an id for the next page."""
        if mapping is not None:
            self.workspace.mapping(mapping)
        return [
            ActionView(**dataclasses.asdict(a)) for a in self.actions.listed(mapping, limit, before)
        ]

    def cancel(self, run_id: int, actor: str | None) -> RunRecord:
        """Ask a running run to stop at its next batch (recorded as cancelled)."""
        run = self.state.get_run(run_id)
        if run.status is not RunStatus.RUNNING:
            raise ConflictError(f"run {run_id} is not running: it ended {run.status.value}")
        self.state.progress.request_cancel(run_id, run.mapping, actor, self.clock.now())
        self.actions.record(self.clock.now(), actor, "cancel", run.mapping, run_id)
        return run


# -- the in-process executor ------------------------------------------------------------------


class ThreadExecutor:
    """Runs `SyncService.run` on up to N threads of this process (the embedded executor)."""

    def __init__(
        self,
        state: SqlStateStore,
        workers: int,
        on_event: Callable[[RunEvent], None],
        current_run: Callable[[str], int | None] | None = None,
        on_free: Callable[[], None] = lambda: None,
    ) -> None:
        self.state, self.workers = state, workers
        self.on_free = on_free  # a worker is free again: the scheduler may claim at once
        self.runner = ClaimRunner(state, on_event, current_run)
        self.cancel = self.runner.cancel
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._idle = threading.Condition(self._lock)

    def room(self) -> int:
        with self._lock:
            return self.workers - len(self._running)

    def running(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._running)

    def running_here(self) -> frozenset[str]:
        """The same: every run of this executor is in this process."""
        return self.running()

    def submit(self, claim: Claim, workspace: Workspace) -> None:
        with self._lock:
            if claim.mapping in self._running or len(self._running) >= self.workers:
                raise RuntimeError(f"no room to run {claim.mapping}: claim within room()")
            self._running.add(claim.mapping)
        # A thread per run, at most `workers` at once. Daemon threads: a run still stuck in a
        # request when serve must exit is abandoned, and its lease, whose process is gone, is
        # taken over at once by the next run, which marks it interrupted.
        name = f"ebbtide-run-{claim.mapping}"
        threading.Thread(target=self._run, args=(claim, workspace), name=name, daemon=True).start()

    def wait_idle(self, timeout_s: float) -> bool:
        """True once no run is in flight; False when `timeout_s` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._running, timeout_s)

    def _run(self, claim: Claim, workspace: Workspace) -> None:
        try:
            self.runner.run(claim, workspace)
        finally:
            with self._idle:
                self._running.discard(claim.mapping)
                self._idle.notify_all()
            self.on_free()
