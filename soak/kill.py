"""Where and how a sync dies: a kill point reached by waiting for an event, then a signal.

Every wait is on something the run makes visible: its row in the state store, its records in
the receiver's log, its acknowledgement journal. A wait also ends when the sync exits on its
own, so a run faster than its kill point is recorded as missed, never waited for forever.
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from tests.e2e.harness import Workspace, wait_until

from soak.fork import Forked
from soak.log import LogTail

KINDS = {"SIGKILL": 0.7, "SIGTERM": 0.15, "SIGSTOP": 0.15}
POINTS = {"run row": 0.25, "records": 0.55, "commit": 0.2}
EVENT_TIMEOUT_S = 120  # far beyond any event of a small sync; reaching it is a hang


@dataclass(frozen=True)
class Plan:
    kind: str
    point: str
    records: int  # for the "records" point: how many of the run's records reach the receiver


@dataclass(frozen=True)
class Kill:
    run_id: int | None  # None: the sync exited before its run row appeared
    landed: bool  # False: the sync had exited before the signal
    at: float  # time.monotonic() of the signal


@dataclass(frozen=True)
class KillContext:
    workspace: Workspace
    tail: LogTail
    last_run: int
    change_size: int
    rng: random.Random


def choose(rng: random.Random, change_size: int) -> Plan:
    kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    point = rng.choices(list(POINTS), weights=list(POINTS.values()))[0]
    return Plan(kind, point, rng.randint(1, max(1, change_size - 1)))


def kill(
    plan: Plan,
    process: Forked,
    ctx: KillContext,
) -> Kill:
    run_id = _wait(lambda: _new_run(ctx.workspace, ctx.last_run), process, "its run row")
    if run_id is None:
        return Kill(None, False, time.monotonic())
    if plan.point == "records":
        _wait(lambda: ctx.tail.sent_by(run_id) >= plan.records, process, "records")
    if plan.point == "commit":
        return _kill_in_commit(plan, process, ctx, run_id)
    return Kill(run_id, _signal(plan.kind, process), time.monotonic())


def _kill_in_commit(plan: Plan, process: Forked, ctx: KillContext, run_id: int) -> Kill:
    """Holds the snapshot file until every record is acknowledged, so the run waits at the
    start of its commit; then signals it there, or a random moment after letting it go on."""
    _wait(lambda: ctx.tail.sent_by(run_id) >= 1, process, "the first record")
    try:
        held = duckdb.connect(str(ctx.workspace.snapshot_file), read_only=True)
    except duckdb.Error:  # the run has the snapshot open to write: it is committing already
        return Kill(run_id, _signal(plan.kind, process), time.monotonic())
    with contextlib.closing(held):

        def acknowledged() -> bool:
            return len(ctx.workspace.journaled_keys(run_id)) >= ctx.change_size

        _wait(acknowledged, process, "every acknowledgement")
        if ctx.rng.random() < 0.5:
            return Kill(run_id, _signal(plan.kind, process), time.monotonic())
    # The run retries attaching the snapshot every 0.2 s; its commit lands in this window.
    time.sleep(ctx.rng.uniform(0.0, 0.35))
    return Kill(run_id, _signal(plan.kind, process), time.monotonic())


def _wait(condition: Callable[[], Any], process: Forked, what: str) -> Any:
    """The condition's value once it holds, or None if the sync exits first."""
    found: list[Any] = []

    def reached() -> bool:
        if value := condition():
            found.append(value)
            return True
        return process.poll() is not None

    wait_until(reached, EVENT_TIMEOUT_S, what, interval_s=0.01)
    return found[0] if found else None


def _new_run(workspace: Workspace, last_run: int) -> int | None:
    latest = workspace.latest_run()
    return latest[0] if latest and latest[0] > last_run else None


def _signal(kind: str, process: Forked) -> bool:
    """Sends the signal; False if the sync had already exited (the kill came too late)."""
    if process.poll() is not None:
        return False
    process.send_signal(getattr(signal, kind))
    if kind == "SIGSTOP":
        # A sync that exits as the signal arrives never stops: a zombie ends the wait too.
        wait_until(lambda: process_state(process.pid) in ("T", "Z"), 10, "the sync to stop")
    return True


def process_state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat: R, S, T (stopped), Z …"""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]
