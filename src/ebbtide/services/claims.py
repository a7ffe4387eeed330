"""Running one claimed sync, whichever executor starts it, and what it tells its watcher.

A claim comes from the scheduler (a due slot, a "sync now", a replay) and is run here on the
caller's thread: by the embedded executor's threads, or by a queue worker of any `serve`
process sharing the state store.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from ebbtide.config.workspace import Workspace
from ebbtide.engine.run import Phase, RunListener
from ebbtide.errors import EbbtideError, MappingBusyError
from ebbtide.services.replay import ReplayService
from ebbtide.services.sync import SyncService
from ebbtide.state.schedules import ReplayRequest, ScheduleBook, SyncRequest
from ebbtide.state.store import SqlStateStore
from ebbtide.values import RunRecord, Trigger

log = logging.getLogger(__name__)


class Reason(StrEnum):
    SCHEDULE = "schedule"
    REQUEST = "request"
    REPLAY = "replay"


@dataclass(frozen=True)
class Claim:
    """A run this scheduler won the right to start."""

    mapping: str
    reason: Reason
    due_at: datetime | None = None  # the slot claimed (schedule)
    request: SyncRequest | None = None  # the request taken (sync now)
    replay: ReplayRequest | None = None  # the replay taken

    def describe(self) -> str:
        if self.replay is not None:
            by = f" by {self.replay.requested_by}" if self.replay.requested_by else ""
            return f"replay of run {self.replay.run_id}{by}"
        if self.request is not None:
            by = f" by {self.request.requested_by}" if self.request.requested_by else ""
            return f"sync now{by}, requested {self.request.requested_at:%H:%M:%S}Z"
        # To the millisecond: a spread slot may come due within a second of the first run.
        when = f", due {self.due_at.isoformat(' ', 'milliseconds')[:23]}Z" if self.due_at else ""
        return f"schedule{when}"


@dataclass(frozen=True)
class RunEvent:
    """What the executor tells whoever watches it (the serve log)."""

    kind: str  # started, finished, skipped, failed, cancelled
    claim: Claim
    run_id: int | None = None
    status: str | None = None
    detail: str | None = None
    record: RunRecord | None = None  # finished: the run as the history records it


class _Cancellable(RunListener):
    """Stops the run at its next phase or batch once cancel is asked, as Ctrl-C would: the
    run is recorded as cancelled and the next sync sends the rest."""

    def __init__(self, cancel: threading.Event, started: Callable[[], None]) -> None:
        self.cancel, self.started = cancel, started
        self._announced = False

    def phase(self, phase: Phase, total: int | None = None) -> None:
        if not self._announced:
            self._announced = True
            self.started()
        self._check()

    def advance(self, records: int) -> None:
        self._check()

    def _check(self) -> None:
        if self.cancel.is_set():
            raise KeyboardInterrupt


class ClaimRunner:
    """Runs claims against one state store; `cancel` stops every run at its next batch."""

    def __init__(
        self,
        state: SqlStateStore,
        on_event: Callable[[RunEvent], None],
        current_run: Callable[[str], int | None] | None = None,
    ) -> None:
        self.state, self.on_event = state, on_event
        self.current_run = current_run or ScheduleBook(state.engine).running_run
        self.cancel = threading.Event()

    def run(self, claim: Claim, workspace: Workspace) -> None:
        """Run the claimed sync to its end; what happened goes to `on_event`, never raised."""
        service = SyncService(workspace, self.state)
        run_id: list[int | None] = [None]

        def started() -> None:
            run_id[0] = self.current_run(claim.mapping)
            self.on_event(RunEvent("started", claim, run_id[0]))

        listener = _Cancellable(self.cancel, started)
        try:
            record = self._start(service, claim, listener)
        except MappingBusyError as error:
            if claim.request is not None:
                ScheduleBook(self.state.engine).give_back(claim.request)
            if claim.replay is not None:
                ScheduleBook(self.state.engine).give_back_replay(claim.replay)
            self.on_event(RunEvent("skipped", claim, detail=str(error)))
        except KeyboardInterrupt:
            ended = self._recorded(run_id[0])
            why = ended.error if ended is not None and ended.error else "cancelled"
            self.on_event(RunEvent("cancelled", claim, run_id[0], "cancelled", why, ended))
        except EbbtideError as error:
            ended = self._recorded(run_id[0])
            self.on_event(RunEvent("failed", claim, run_id[0], detail=str(error), record=ended))
        except Exception as error:  # noqa: BLE001 - one run's bug must not stop the scheduler
            log.debug("run of %s", claim.mapping, exc_info=True)  # shown with --debug
            what = workspace.redact(f"{type(error).__name__}: {error}")
            self.on_event(RunEvent("failed", claim, run_id[0], detail=f"internal error: {what}"))
        else:
            loaded = record.loaded_new + record.loaded_updated + record.loaded_deleted
            counts = f"extracted {record.extracted}, loaded {loaded}, failed {record.failed}"
            why = f"; {record.error}" if record.error else ""
            self.on_event(
                RunEvent("finished", claim, record.id, record.status.value, counts + why, record)
            )

    def _recorded(self, run_id: int | None) -> RunRecord | None:
        """The run as the history recorded its end (None when it never started)."""
        if run_id is None:
            return None
        try:
            return self.state.get_run(run_id)
        except EbbtideError:  # the state store itself failed: the event says so already
            return None

    def _start(self, service: SyncService, claim: Claim, listener: RunListener) -> RunRecord:
        if claim.replay is not None:
            replays = ReplayService(service)
            replay = claim.replay
            plan = replays.plan(replay.run_id, latest=replay.latest, only_failed=replay.only_failed)
            return replays.replay(plan, actor=replay.requested_by, listener=listener)
        if claim.request is not None:
            return service.run(
                claim.mapping, Trigger.MANUAL, listener, actor=claim.request.requested_by
            )
        return service.run(claim.mapping, Trigger.SCHEDULE, listener, actor="scheduler")
