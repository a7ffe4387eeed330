"""The scheduler of `ebbtide serve` in a fresh process, for a bounded time.

`python -m bench.serve_child ROOT SECONDS WORKERS RUNS` runs the real `ServeLoop` (tick every
0.5 s, the in-process thread executor, SQLite state store) over the workspace in ROOT until
SECONDS have passed or RUNS scheduled runs have finished, whichever comes first, then stops it
as SIGTERM would (runs in flight finish). It prints one JSON line: for every scheduled run the
due time it was claimed for and its `started_at` as the state store recorded it, the due slots
still unstarted when it stopped (their delay is at least the time they waited), and the wall
and CPU time of every scheduler tick.

The loop is the one `ebbtide serve` runs; two of its parts are wrapped to observe them, not
changed: the executor's event callback (which claim a run was for) and the tick (timed).
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ebbtide.server.scheduler import ServeLoop, ServeSettings
from ebbtide.services.claims import Claim, Reason, RunEvent
from ebbtide.state.schedules import ScheduleBook
from ebbtide.state.store import SqlStateStore


class Observer:
    """What the loop did: claims by run id, tick timings, and when to stop."""

    def __init__(self, loop: ServeLoop, runs_wanted: int) -> None:
        self.loop, self.runs_wanted = loop, runs_wanted
        self.claims: dict[int, Claim] = {}  # run id -> the claim it ran
        self.kinds: dict[str, int] = {}  # finished, failed, skipped, cancelled
        self.ticks: list[tuple[float, float, int]] = []  # (wall s, CPU s, claims)
        self.stopped_at: datetime | None = None
        self._lock = threading.Lock()
        # The executor's runner reports each run (the in-process executor of a SQLite store).
        events = getattr(loop.executor, "runner", loop.executor)
        shown, tick = events.on_event, loop.scheduler.tick

        def on_event(event: RunEvent) -> None:
            self._seen(event)
            shown(event)

        def timed_tick() -> list[Claim]:
            wall, cpu = time.perf_counter(), time.thread_time()
            claims = tick()
            self.ticks.append((time.perf_counter() - wall, time.thread_time() - cpu, len(claims)))
            return claims

        events.on_event = on_event
        loop.scheduler.tick = timed_tick  # type: ignore[method-assign]

    def stop(self) -> None:
        with self._lock:
            if self.stopped_at is None:
                self.stopped_at = datetime.now(UTC)
                self.loop.stop()

    def _seen(self, event: RunEvent) -> None:
        if event.kind == "started":
            return
        with self._lock:
            self.kinds[event.kind] = self.kinds.get(event.kind, 0) + 1
            if event.run_id is not None and event.claim.reason == Reason.SCHEDULE:
                self.claims[event.run_id] = event.claim
            done = len(self.claims) >= self.runs_wanted
        if done:
            self.stop()


def delays(observer: Observer, state: SqlStateStore) -> list[dict[str, Any]]:
    """Per scheduled run: its mapping, the due time claimed and `started_at` from the store."""
    started = {run.id: run for run in state.list_runs(limit=1_000_000)}
    out = []
    for run_id, claim in sorted(observer.claims.items()):
        run = started[run_id]
        assert claim.due_at is not None
        out.append(
            {
                "mapping": claim.mapping,
                "run_id": run_id,
                "status": run.status.value,
                "due_at": claim.due_at.isoformat(),
                "delay_s": (run.started_at - claim.due_at).total_seconds(),
            }
        )
    return out


def unstarted(state: SqlStateStore, stopped_at: datetime) -> list[float]:
    """How long each slot due before the stop had waited, unclaimed, when the loop stopped."""
    slots = ScheduleBook(state.engine).slots().values()
    return [
        (stopped_at - slot.due_at).total_seconds()
        for slot in slots
        if slot.due_at is not None and slot.due_at <= stopped_at
    ]


def main(root: str, seconds: float, workers: int, runs_wanted: int) -> None:
    lines: list[str] = []
    loop = ServeLoop(ServeSettings(Path(root), workers=workers), lines.append)
    observer = Observer(loop, runs_wanted)
    timer = threading.Timer(seconds, observer.stop)
    timer.start()
    began = time.perf_counter()
    cpu = time.process_time()
    loop.run()  # returns once stopped and drained
    timer.cancel()
    wall_s, cpu_s = time.perf_counter() - began, time.process_time() - cpu
    state = SqlStateStore(loop.workspace.spec.state, loop.workspace.root)
    assert observer.stopped_at is not None
    result = {
        "wall_s": round(wall_s, 3),
        "cpu_s": round(cpu_s, 3),
        "workers": workers,
        "events": observer.kinds,
        "runs": delays(observer, state),
        # Scheduled runs in the store whose claim the bench did not see (would skew it).
        "unobserved": sum(1 for r in state.list_runs(limit=1_000_000) if r.trigger == "schedule")
        - len(observer.claims),
        "unstarted_s": unstarted(state, observer.stopped_at),
        "ticks": observer.ticks,
        "sent": sum(
            r.loaded_new + r.loaded_updated + r.loaded_deleted
            for r in state.list_runs(limit=1_000_000)
        ),
        "log_tail": lines[-5:],
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    state.dispose()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
