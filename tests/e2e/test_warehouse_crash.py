"""Crash safety of `diff: warehouse`, with real processes: SIGKILL mid-load, the model and the
snapshot on a PostgreSQL or MariaDB server.

As in test_crash_safety.py: a sync of 4,000 records (batches of 100, 3 in flight) runs as
`python -m ebbtide` against the receiver process, which stops answering once a share of the
records came in, so the run is still loading when it is killed. Here the model is a table on the
server and the mapping diffs there (`diff: warehouse`): each acknowledged batch is journaled
locally at once, and the journal goes into the snapshot table in ebbtide's schema on the server
in checkpoints (every 50,000 records or 2 s). Answering each request after 0.3 s, the load
reaches 90% well past its first checkpoint: killed there, the run leaves part of its load in the
server's snapshot and the rest in its journal; killed earlier, most likely in its journal only.
After the kill the next sync completes; the receiver holds every key, what the dead run had
acknowledged was not sent again (only its batches in flight were), and the server's snapshot
table holds every key.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import (
    BATCH_SIZE,
    CONCURRENCY,
    FAST_SQL,
    IN_FLIGHT_RECORDS,
    MAPPING,
    Processes,
    ReceiverProcess,
    Workspace,
    batch_of,
    duplicates,
    running_run,
    wait_until,
)
from tests.integration.warehouse_kit import Backend, open_backend

ROWS = 4_000
DELAY_S = 0.3  # 3,600 records take 12 rounds of requests: over 3 s, past a 2 s checkpoint

# Kill points in the load: the receiver stops answering once that share of the records came
# in, so the run is still loading when it is killed, however busy the machine.
HOLD_AT = {"load-10pct": 0.1, "load-50pct": 0.5, "load-90pct": 0.9}
# Where the run is killed only once a checkpoint has put part of its load into the server's
# snapshot table (the first comes 2 s into the load; 90% is more than 3 s in).
AFTER_A_CHECKPOINT = {"load-90pct"}


@pytest.fixture(params=["postgres-warehouse", "mysql-warehouse"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A server holding the `users` model (ids 1..ROWS) and ebbtide's state schema."""
    opened = open_backend(str(request.param))
    assert opened is not None
    try:
        opened.create_users(ROWS)
        yield opened
    finally:
        opened.close()


@pytest.fixture(params=list(HOLD_AT))
def point(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def receiver(tmp_path: Path, point: str) -> Iterator[ReceiverProcess]:
    hold_after = round(HOLD_AT[point] * ROWS)
    running = ReceiverProcess.start(tmp_path / "received.jsonl", DELAY_S, hold_after)
    yield running
    running.stop()


def warehouse_workspace(root: Path, url: str, backend: Backend) -> Workspace:
    """The harness's workspace, its model on the server and its mapping `diff: warehouse`."""
    root.mkdir(parents=True)
    workspace = Workspace(root, url, ROWS)
    workspace.configure(FAST_SQL, source=json.dumps(backend.source), more="    diff: warehouse\n")
    return workspace


def test_sigkill_mid_load_loses_nothing_and_resends_only_the_batches_in_flight(
    tmp_path: Path,
    processes: Processes,
    backend: Backend,
    receiver: ReceiverProcess,
    point: str,
) -> None:
    workspace = warehouse_workspace(tmp_path / "ws", receiver.url, backend)
    first = workspace.start_sync(processes, "first")
    dead = wait_until(lambda: running_run(workspace), 30, "the first run to start")

    share = HOLD_AT[point]
    try:
        wait_until(lambda: receiver.count(dead) >= share * ROWS, 60, f"{share:.0%} of the records")
        # The batches answered before the hold are in the dead run's journal ...
        wait_until(
            lambda: len(workspace.journaled_keys(dead)) >= BATCH_SIZE,
            60,
            "an acknowledged batch in the run's journal",
        )
        if point in AFTER_A_CHECKPOINT:  # ... and, past a checkpoint, in the server's snapshot
            wait_until(lambda: backend.snapshot_keys(MAPPING), 60, "a checkpoint in the warehouse")
        assert first.poll() is None, "the run ended before it could be killed"
        first.kill()
        first.wait(timeout=10)
    finally:
        receiver.release()

    journaled = workspace.journaled_keys(dead)
    in_warehouse = backend.snapshot_keys(MAPPING)
    # Each batch is journaled locally before the server's snapshot takes it in.
    assert in_warehouse <= journaled
    if point in AFTER_A_CHECKPOINT:
        assert in_warehouse
    kept = journaled | in_warehouse
    sent_by_dead = receiver.from_run(dead)
    assert kept <= {r["key"] for r in sent_by_dead}
    assert len(kept) < ROWS

    second = workspace.sync(processes, "second")  # at once: the dead run's process is gone
    assert second.returncode == 0, second.stderr
    assert second.run["status"] == "success"
    assert second.run["added"] == second.run["loaded_new"] == ROWS - len(kept)
    sent_by_second = {r["key"] for r in receiver.from_run(second.run["id"])}
    assert sent_by_second == workspace.keys - kept  # acknowledged records were not resent

    # Resent: only what the dead run had in flight (sent, not yet acknowledged).
    resent = [r for r in sent_by_dead if r["key"] in sent_by_second]
    assert len(resent) <= IN_FLIGHT_RECORDS
    assert len({batch_of(r) for r in resent}) <= CONCURRENCY
    records = receiver.records()
    assert duplicates(records) == len(resent)
    assert {r["key"] for r in records} == workspace.keys
    assert all(r["accepted"] for r in records)
    assert backend.snapshot_keys(MAPPING) == workspace.keys
    assert not workspace.journals(), "the dead run's journal was left unmerged"

    runs = workspace.runs()
    assert runs[dead]["status"] == "interrupted"
    gone = f"its process is gone: host {socket.gethostname()}, pid {first.pid}"
    assert gone in runs[dead]["error"]
    # Credited with exactly what it had delivered: its journal, and the server's snapshot.
    loaded = tuple(runs[dead][f"loaded_{op}"] for op in ("new", "updated", "deleted"))
    assert loaded == (len(kept), 0, 0)
    assert runs[second.run["id"]] == second.run

    third = workspace.sync(processes, "third")
    assert third.returncode == 0, third.stderr
    assert third.run["status"] == "success"
    assert (third.run["added"], third.run["updated"], third.run["deleted"]) == (0, 0, 0)
    assert receiver.from_run(third.run["id"]) == []
    assert backend.snapshot_keys(MAPPING) == workspace.keys
