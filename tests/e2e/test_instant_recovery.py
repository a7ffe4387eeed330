"""The next sync after a crash starts at once, with real processes: SIGKILL and SIGSTOP.

The lease lasts ten minutes here, so a sync that gets through at once does so because its
dead predecessor was seen gone, never because the lease ran out. A stopped sync is alive: it
keeps its lease, and the refusal names the host and process that hold it.
"""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path

import pytest

from tests.e2e.harness import (
    Processes,
    ReceiverProcess,
    Workspace,
    received_everything,
    receiver_fixture,
    running_run,
    stop_and_wait,
    wait_until,
)

ROWS = 4_000
DELAY_S = 0.12
LONG_LEASE_S = 600.0

receiver = receiver_fixture(DELAY_S)


@pytest.fixture
def workspace(tmp_path: Path, receiver: ReceiverProcess) -> Workspace:
    created = Workspace.create(tmp_path / "ws", receiver.url, ROWS)
    created.lease_ttl_s = LONG_LEASE_S
    return created


def test_a_sync_killed_mid_load_is_taken_over_at_once_by_the_next(
    workspace: Workspace, processes: Processes, receiver: ReceiverProcess
) -> None:
    first = workspace.start_sync(processes, "first")
    dead = wait_until(lambda: running_run(workspace), 30, "the first run to start")
    wait_until(lambda: receiver.count(dead) >= 0.3 * ROWS, 60, "30% of the records")
    first.kill()
    first.wait(timeout=10)
    kept = workspace.journaled_keys(dead)

    second = workspace.sync(processes, "second")
    assert second.returncode == 0, second.stderr  # not 4: the dead run's lease did not hold it
    assert second.run["status"] == "success"
    assert {r["key"] for r in receiver.from_run(second.run["id"])} == workspace.keys - kept

    run = workspace.runs()[dead]
    assert run["status"] == "interrupted"
    assert f"its process is gone: host {socket.gethostname()}, pid {first.pid}" in run["error"]
    assert (run["loaded_new"], run["loaded_updated"], run["loaded_deleted"]) == (len(kept), 0, 0)
    received_everything(workspace, receiver)
    assert workspace.snapshot_keys() == workspace.keys


def test_a_stopped_sync_keeps_its_lease_and_the_refusal_names_its_process(
    workspace: Workspace, processes: Processes, receiver: ReceiverProcess
) -> None:
    first = workspace.start_sync(processes, "first")
    holder = wait_until(lambda: running_run(workspace), 30, "the first run to start")
    wait_until(lambda: receiver.count(holder) >= 0.3 * ROWS, 60, "30% of the records")
    stop_and_wait(first, "the first sync")

    refused = workspace.sync(processes, "second")
    assert refused.returncode == 4, refused.stderr
    said = " ".join(refused.stderr.split())  # the console may wrap a long line
    assert re.search(
        rf"mapping 'users' is busy: run {holder} holds it"
        rf" \(host {re.escape(socket.gethostname())}, pid {first.pid},"
        r" lease until \d\d:\d\d:\d\d UTC\)",
        said,
    ), refused.stderr

    first.send_signal(signal.SIGCONT)
    first.wait(timeout=120)
    done = workspace.finished(first, "first")
    assert done.returncode == 0, done.stderr
    assert done.run["id"] == holder and done.run["status"] == "success"
    assert {r["key"] for r in receiver.records()} == workspace.keys
    assert list(workspace.runs()) == [holder]  # the refused sync left no run behind
