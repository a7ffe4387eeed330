"""The scheduler loop of `ebbtide serve`: tick, reload the workspace when it changes, drain.

One line per event goes to `say` (the serve command prints them on stderr): each run claimed,
started and finished, each reload, and each invalid edit with its errors. Runs go to the
in-process executor; the state store's due times and the mapping's lease keep any number of
serve processes from starting a slot twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ebbtide.config.workspace import WORKSPACE_FILE, load_workspace
from ebbtide.errors import ConfigError, ConfigErrors, EbbtideError
from ebbtide.server.metrics import ServeMetrics
from ebbtide.services.claims import Claim, ClaimRunner, RunEvent
from ebbtide.services.history import History
from ebbtide.services.scheduler import (
    Clock,
    Scheduler,
    ScheduleService,
    SystemClock,
    ThreadExecutor,
)
from ebbtide.state.schedules import ScheduleBook
from ebbtide.state.store import SqlStateStore
from ebbtide.values import RunStatus

if TYPE_CHECKING:
    from ebbtide.server.queue import QueueExecutor

# How often the jobs of workers that stopped sending heartbeats are looked for.
STALLED_CHECK_S = 2.0

# After the grace period, cancelled runs stop at their next batch; one stuck inside a request
# gets this long more, then is left to the next run, which takes its lease over at once.
CANCEL_WAIT_S = 10.0


@dataclass(frozen=True)
class ServeSettings:
    root: Path
    workers: int = 2
    grace_s: float = 30.0
    tick_s: float = 0.5  # how often due times and the workspace file are looked at


class WorkspaceFiles:
    """Tells when `ebbtide.yml` or its `.env` changed since last asked."""

    def __init__(self, root: Path) -> None:
        self.files = (root / WORKSPACE_FILE, root / ".env")
        self._seen = self._stamp()

    def changed(self) -> bool:
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        return True

    def _stamp(self) -> tuple[tuple[int, int, int] | None, ...]:
        stamps: list[tuple[int, int, int] | None] = []
        for file in self.files:
            try:
                stat = file.stat()
            except OSError:
                stamps.append(None)
                continue
            stamps.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
        return tuple(stamps)


class ServeLoop:
    """Runs until `stop()`: then claims nothing more and lets runs in flight finish."""

    def __init__(
        self, settings: ServeSettings, say: Callable[[str], None], clock: Clock | None = None
    ) -> None:
        self.settings, self._say = settings, say
        self.clock = clock or SystemClock()
        self._stop = threading.Event()
        # Set when serve stops or a worker frees up: a tick then comes at once, not after
        # tick_s, so a free worker never idles while slots are due.
        self._wake = threading.Event()
        self._files = WorkspaceFiles(settings.root)
        self.workspace = load_workspace(settings.root)  # invalid at start: no serving
        self.state = SqlStateStore(self.workspace.spec.state, self.workspace.root)
        self.executor = self._executor(settings.workers)
        book = ScheduleBook(self.state.engine)
        self.scheduler = Scheduler(self.workspace, book, self.executor, self.clock)
        self.invalid_edit: str | None = None  # why the workspace file as edited is not used
        self.metrics = ServeMetrics(
            lambda: ScheduleService(self.workspace, self.state, self.clock).queue_depth(),
            lambda: History(self.workspace, self.state).last_successes(),
        )

    def _executor(self, workers: int) -> ThreadExecutor | QueueExecutor:
        """In-process threads on SQLite; procrastinate on PostgreSQL, where several serve
        processes share the work."""
        if self.state.engine.dialect.name != "postgresql":
            return ThreadExecutor(self.state, workers, self._event, on_free=self._wake.set)
        from ebbtide.server.queue import QueueExecutor  # procrastinate only when used

        runner = ClaimRunner(self.state, self._event)
        return QueueExecutor(self.state, workers, runner, lambda: self.workspace)

    def say(self, text: str) -> None:
        self._say(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} {text}")

    def stop(self) -> None:
        """Stop claiming; asked a second time, cancel the runs in flight at once."""
        if self._stop.is_set():
            self.executor.cancel.set()
        self._stop.set()
        self._wake.set()

    def run(self) -> None:
        mappings = self.workspace.spec.mappings
        scheduled = sum(1 for m in mappings.values() if m.enabled and m.schedule != "manual")
        self.say(
            f"serving {self.settings.root}: {scheduled} of {len(mappings)} mapping(s) on a"
            f" schedule, {self.settings.workers} worker(s)"
        )
        queue = self.executor if not isinstance(self.executor, ThreadExecutor) else None
        if queue is not None:
            queue.start()
        next_recovery = 0.0
        while not self._stop.is_set():
            self._wake.clear()  # a worker freed from here on wakes the wait below
            self._reload_if_changed()
            if queue is not None and time.monotonic() >= next_recovery:
                next_recovery = time.monotonic() + STALLED_CHECK_S
                self._recover_stalled(queue)
            try:
                for claim in self.scheduler.tick():
                    self.say(f"claimed {claim.mapping} ({claim.describe()})")
                for slot in self.scheduler.skipped:
                    self.say(f"skipped {slot.mapping}: still syncing when due at {slot.due_at}")
            except EbbtideError as error:  # the state store is unreachable, say: try again
                self.say(f"could not schedule: {self.workspace.redact(str(error))}")
            self._wake.wait(self.settings.tick_s)
        self._drain()
        if not isinstance(self.executor, ThreadExecutor):
            self.executor.close()
        self.state.dispose()

    def _reload_if_changed(self) -> None:
        if not self._files.changed():
            return
        try:
            workspace = load_workspace(self.settings.root)
        except (ConfigErrors, ConfigError) as error:
            errors = error.errors if isinstance(error, ConfigErrors) else [error]
            self.say(
                f"{WORKSPACE_FILE} changed but is invalid ({len(errors)} error(s)); the last"
                " valid workspace keeps running:"
            )
            for item in errors:
                self.say(f"  {item.describe()}")
            self.invalid_edit = "; ".join(item.describe() for item in errors)
            return
        if workspace.spec.state != self.workspace.spec.state:
            self.say(
                f"{WORKSPACE_FILE} changed its state store: restart ebbtide serve to use it; the"
                " last valid workspace keeps running"
            )
            return
        self.workspace = self.scheduler.workspace = workspace
        self.invalid_edit = None
        self.say(f"reloaded {WORKSPACE_FILE}: {len(workspace.spec.mappings)} mapping(s)")

    def not_ready(self) -> str | None:
        """Why this server cannot do its work now, or None: `/readyz`."""
        if self.invalid_edit is not None:
            return (
                f"{WORKSPACE_FILE} as edited is invalid (the last valid workspace keeps"
                f" running): {self.invalid_edit}"
            )
        try:
            self.scheduler.book.slots()
        except EbbtideError as error:
            return f"the state store does not answer: {self.workspace.redact(str(error))}"
        return None

    def _recover_stalled(self, queue: QueueExecutor) -> None:
        try:
            closed = queue.recover_stalled()
        except Exception as error:  # noqa: BLE001 - the queue answers again on a later tick
            self.say(f"could not look for stalled jobs: {self.workspace.redact(str(error))}")
            return
        for mapping in closed:
            self.say(
                f"closed a job of {mapping} whose worker stopped sending heartbeats; its next"
                " run takes the dead run's lease over"
            )

    def _drain(self) -> None:
        if not isinstance(self.executor, ThreadExecutor):
            self.executor.stop()  # no more jobs from the queue: other processes take them
        running = sorted(self.executor.running_here())
        grace = self.settings.grace_s
        if running:
            self.say(f"stopping: waiting up to {grace:g} s for {', '.join(running)} to finish")
        if self.executor.wait_idle(grace):
            self.say("stopped")
            return
        self.say("grace period over: cancelling the runs in flight")
        self.executor.cancel.set()
        if self.executor.wait_idle(CANCEL_WAIT_S):
            self.say("stopped")
            return
        left = ", ".join(sorted(self.executor.running_here()))
        self.say(
            f"stopped; {left} did not stop within {CANCEL_WAIT_S:g} s (inside a request): the"
            " next run takes its lease over and marks it interrupted"
        )

    def _event(self, event: RunEvent) -> None:
        claim: Claim = event.claim
        run = f" run {event.run_id}" if event.run_id is not None else ""
        if event.kind == "started":
            self.say(f"started {claim.mapping}{run} ({claim.describe()})")
        elif event.kind == "finished":
            self.say(f"finished {claim.mapping}{run}: {event.status} ({event.detail})")
        elif event.kind == "cancelled":
            self.say(f"finished {claim.mapping}{run}: cancelled ({event.detail})")
        elif event.kind == "skipped":
            self.say(f"skipped {claim.mapping}: {event.detail}")
        else:
            self.say(f"failed {claim.mapping}{run}: {event.detail}")
        spec = self.workspace.spec.mappings.get(claim.mapping)
        ended = event.record is not None and event.record.status is not RunStatus.RUNNING
        if ended and event.record is not None and spec is not None:  # whatever its status
            self.metrics.observe(event.record, spec.destination)
