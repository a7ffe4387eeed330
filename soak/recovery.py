"""The next sync, started at once after the kill and retried while the mapping is busy."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from typing import Any

from tests.e2e.harness import Finished, Workspace, wait_until

from soak.fork import Forked, Syncs
from soak.kill import Kill

BUSY = 4  # the CLI's exit code for "another run holds the mapping"
SYNC_TIMEOUT_S = 120


@dataclass
class Recovery:
    finished: Finished
    refused: int  # attempts refused as busy before one ran
    lock_waits: int  # attempts that gave up on the state store a stopped sync kept locked
    wait_s: float  # from the signal to the start of the attempt that ran
    names: list[str] = field(default_factory=list)  # the attempts' output files

    @property
    def run(self) -> dict[str, Any] | None:
        try:
            return self.finished.run
        except (ValueError, KeyError, TypeError):  # no JSON: the sync failed before its run
            return None


def recover(
    workspace: Workspace,
    syncs: Syncs,
    kill: Kill,
    stopped: Forked | None,
) -> Recovery:
    """Syncs until an attempt is not refused. A stopped sync is resumed once a later run has
    taken its lease over: resumed earlier, it would renew its lease and simply carry on."""
    names: list[str] = []
    lock_waits = 0
    deadline = time.monotonic() + SYNC_TIMEOUT_S
    while True:
        started = time.monotonic()
        attempt, name = syncs.start()
        names.append(name)
        if stopped is not None:
            _resume_after_takeover(workspace, attempt, stopped, kill.run_id or 0)
        attempt.wait(timeout=SYNC_TIMEOUT_S)
        if stopped is not None and _locked_by(syncs.finished(attempt, name), stopped):
            # Frozen inside a state store write: no one can take SQLite's lock from it. The
            # refusal names the stopped process, and resuming it is what the operator does.
            lock_waits += 1
            stopped.send_signal(signal.SIGCONT)
            continue
        if attempt.returncode != BUSY or started > deadline:  # busy for ever: a violation
            break
    if stopped is not None:
        stopped.send_signal(signal.SIGCONT)  # if the last attempt ended before it was seen
        stopped.wait(timeout=SYNC_TIMEOUT_S)
    finished = syncs.finished(attempt, names[-1])
    refused = len(names) - 1 - lock_waits
    return Recovery(finished, refused, lock_waits, started - kill.at, names)


def _locked_by(attempt: Finished, stopped: Forked) -> bool:
    said = " ".join(attempt.stderr.split())
    return (
        attempt.returncode == BUSY
        and "stayed locked" in said
        and f"pid {stopped.pid} (" in said
        and ", stopped) holds a write lock" in said
    )


def _resume_after_takeover(
    workspace: Workspace,
    attempt: Forked,
    stopped: Forked,
    killed_run: int,
) -> None:
    def taken_over_or_exited() -> bool:
        latest = workspace.latest_run()
        return attempt.poll() is not None or bool(latest and latest[0] > killed_run)

    wait_until(taken_over_or_exited, SYNC_TIMEOUT_S, "the take-over", interval_s=0.01)
    if attempt.poll() is None or attempt.returncode != BUSY:
        stopped.send_signal(signal.SIGCONT)
