"""Crash safety and cancellation, with real processes: SIGKILL, SIGTERM and SIGINT mid-sync.

A sync of 4,000 records (batches of 100, 3 in flight) runs as `python -m ebbtide` against the
receiver process, which answers each request after 0.06 s: loading takes about a second,
long enough to stop the run at a chosen point. Each test then checks, from the receiver's log,
that every key arrived, that what the dead run had acknowledged was not sent again (only its
batches in flight were), and from `runs list --json` how the dead run is recorded.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from tests.e2e.harness import (
    BATCH_SIZE,
    CONCURRENCY,
    FAST_SQL,
    IN_FLIGHT_RECORDS,
    MAPPING,
    SLOW_SQL,
    Processes,
    ReceiverProcess,
    Workspace,
    batch_of,
    duplicates,
    holding_snapshot,
    holding_state_store,
    running_run,
    wait_until,
)

ROWS = 4_000
DELAY_S = 0.12  # long enough that a signal sent at 40% of the load lands mid-load on a busy machine

KillPoint = Callable[[Workspace, ReceiverProcess, int], AbstractContextManager[None]]


# Kill points in the load: the receiver stops answering once that share of the records came
# in, so the run is still loading when it is killed, however busy the machine.
HOLD_AT = {"load-10pct": 0.1, "load-50pct": 0.5, "load-90pct": 0.9}


@pytest.fixture
def receiver(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ReceiverProcess]:
    callspec = getattr(request.node, "callspec", None)
    share = HOLD_AT.get(callspec.params.get("point", "") if callspec else "")
    hold_after = round(share * ROWS) if share is not None else None
    running = ReceiverProcess.start(tmp_path / "received.jsonl", DELAY_S, hold_after)
    yield running
    running.stop()


# -- where the run is when it dies; each yields while the run is held at that point -----------


@contextmanager
def in_extract(workspace: Workspace, receiver: ReceiverProcess, run_id: int) -> Iterator[None]:
    """The model's query takes ~2 s (SLOW_SQL): the run is staging it."""
    wait_until(workspace.scratch_databases, 20, "the run to open its snapshot store")
    time.sleep(0.3)
    assert receiver.count() == 0 and not workspace.journals(), "too late: the load began"
    yield


def in_load(share: float) -> KillPoint:
    @contextmanager
    def point(workspace: Workspace, receiver: ReceiverProcess, run_id: int) -> Iterator[None]:
        wait_until(
            lambda: receiver.count(run_id) >= share * ROWS, 30, f"{share:.0%} of the records"
        )
        try:
            yield  # the receiver answers nothing past this share (HOLD_AT): still loading
        finally:
            receiver.release()

    return point


@contextmanager
def in_commit_before_snapshot(
    workspace: Workspace, receiver: ReceiverProcess, run_id: int
) -> Iterator[None]:
    """Every record acknowledged; the run waits to attach the snapshot file we hold open."""
    wait_until(lambda: receiver.count(run_id) >= ROWS // 2, 30, "half of the records")
    with holding_snapshot(workspace) as snapshot:
        wait_until(
            lambda: len(workspace.journaled_keys(run_id)) == ROWS, 30, "every acknowledgement"
        )
        time.sleep(0.3)  # the run is in its commit now, retrying the attach every 0.2 s
        [(in_snapshot,)] = snapshot.execute("SELECT count(*) FROM snapshot").fetchall()
        assert in_snapshot == 0, "the snapshot advanced before the commit"
        yield


@contextmanager
def in_commit_after_snapshot(
    workspace: Workspace, receiver: ReceiverProcess, run_id: int
) -> Iterator[None]:
    """The snapshot transaction is done (its journal is gone), the history not yet written.

    The run is first held at the start of its commit (as above), with every record sent, so
    that locking the state store cannot stall its load (a run sends only while its heartbeat
    keeps the lease); then it is let through to the next write to the history.
    """
    wait_until(lambda: receiver.count(run_id) >= ROWS // 2, 30, "half of the records")
    with holding_snapshot(workspace) as snapshot:
        wait_until(
            lambda: len(workspace.journaled_keys(run_id)) == ROWS, 30, "every acknowledgement"
        )
        time.sleep(0.3)
        with holding_state_store(workspace):
            snapshot.close()
            wait_until(lambda: not workspace.journals(), 30, "the snapshot commit")
            yield


KILL_POINTS: dict[str, KillPoint] = {
    "extract": in_extract,
    "load-10pct": in_load(0.1),
    "load-50pct": in_load(0.5),
    "load-90pct": in_load(0.9),
    "commit-before-snapshot": in_commit_before_snapshot,
    "commit-after-snapshot": in_commit_after_snapshot,
}


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_loses_nothing_and_resends_only_the_batches_in_flight(
    tmp_path: Path, processes: Processes, receiver: ReceiverProcess, point: str
) -> None:
    sql = SLOW_SQL if point == "extract" else FAST_SQL
    workspace = Workspace.create(tmp_path / "ws", receiver.url, ROWS, sql)
    first = workspace.start_sync(processes, "first")
    dead = wait_until(lambda: running_run(workspace), 20, "the first run to start")

    with KILL_POINTS[point](workspace, receiver, dead):
        assert first.poll() is None, "the run ended before it could be killed"
        first.kill()
        first.wait(timeout=10)
    workspace.use_model_sql(FAST_SQL)
    # What the dead run left for the next one: its journal, or (after its commit) the snapshot.
    kept = workspace.journaled_keys(dead) | workspace.snapshot_keys()
    sent_by_dead = receiver.from_run(dead)
    assert kept <= {r["key"] for r in sent_by_dead}

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

    third_process = workspace.start_sync(processes, "third")
    runs = workspace.runs()  # while the third sync runs: it saves two seconds
    assert runs[dead]["status"] == "interrupted"
    gone = f"its process is gone: host {socket.gethostname()}, pid {first.pid}"
    assert gone in runs[dead]["error"]  # seen dead at once, whatever was left of its lease
    # Credited with exactly what its journal held (or, killed after its snapshot commit, what
    # that commit absorbed): a run that delivered records never shows "loaded 0".
    loaded = tuple(runs[dead][f"loaded_{op}"] for op in ("new", "updated", "deleted"))
    assert loaded == (len(kept), 0, 0)
    assert len(kept) <= len(sent_by_dead)
    if point.startswith("commit"):
        assert len(kept) == ROWS
    assert runs[second.run["id"]] == second.run
    third_process.wait(timeout=60)
    third = workspace.finished(third_process, "third")
    assert third.returncode == 0, third.stderr
    assert (third.run["added"], third.run["updated"], third.run["deleted"]) == (0, 0, 0)
    assert receiver.from_run(third.run["id"]) == []
    assert workspace.snapshot_keys() == workspace.keys


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_load_cancels_the_run_and_the_next_sync_sends_the_rest(
    tmp_path: Path, processes: Processes, receiver: ReceiverProcess, signum: signal.Signals
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, ROWS)
    first = workspace.start_sync(processes, "first")
    cancelled = wait_until(lambda: running_run(workspace), 20, "the first run to start")
    wait_until(lambda: receiver.count(cancelled) >= 0.4 * ROWS, 30, "40% of the records")

    first.send_signal(signum)
    try:
        first.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the sync did not stop within 15 s of {signum.name}")
    done = workspace.finished(first, "first")
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr

    run = workspace.runs()[cancelled]
    assert run["status"] == "cancelled"
    assert run["finished_at"] is not None and "cancelled" in run["error"]
    assert 0 < run["loaded_new"] < ROWS
    kept = workspace.journaled_keys(cancelled)
    # The count is bumped right after the journal append; a signal may fall in between.
    assert run["loaded_new"] <= len(kept) <= run["loaded_new"] + BATCH_SIZE
    assert len(kept) <= receiver.count(cancelled)

    second = workspace.sync(processes, "second")  # no wait: the cancelled run let go
    assert second.returncode == 0, second.stderr
    assert second.run["status"] == "success"
    sent_by_second = {r["key"] for r in receiver.from_run(second.run["id"])}
    assert sent_by_second == workspace.keys - kept
    assert second.run["loaded_new"] == ROWS - len(kept)
    records = receiver.records()
    assert {r["key"] for r in records} == workspace.keys
    assert duplicates(records) <= IN_FLIGHT_RECORDS
    assert workspace.runs()[cancelled]["status"] == "cancelled"
    assert "cancelled" in done.stderr, "the CLI said nothing about the cancellation"


def test_a_reset_after_a_crash_credits_the_dead_run_before_dropping_its_journal(
    tmp_path: Path, processes: Processes, receiver: ReceiverProcess
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, ROWS)
    workspace.lease_ttl_s = 600  # the reset can only get through by seeing the run dead
    first = workspace.start_sync(processes, "first")
    dead = wait_until(lambda: running_run(workspace), 20, "the first run to start")
    wait_until(lambda: len(workspace.journaled_keys(dead)) >= 3 * BATCH_SIZE, 30, "3 batches")
    first.kill()
    first.wait(timeout=10)
    journaled = len(workspace.journaled_keys(dead))

    reset = subprocess.run(
        workspace.cli_args("reset", MAPPING, "--yes"),
        capture_output=True,
        text=True,
        timeout=60,
        env=workspace.env,
    )
    assert reset.returncode == 0, reset.stderr
    assert not workspace.journals()
    run = workspace.runs()[dead]
    assert run["status"] == "interrupted"
    assert (run["loaded_new"], run["loaded_updated"], run["loaded_deleted"]) == (journaled, 0, 0)
    assert 3 * BATCH_SIZE <= journaled <= receiver.count(dead)
