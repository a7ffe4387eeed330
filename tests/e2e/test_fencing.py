"""One run per mapping, with real processes: mutual exclusion, lease take-over and fencing.

Syncs run as `python -m ebbtide` against the receiver process (0.1 s per request; 6,000
records in batches of 100, 3 in flight: about two seconds of loading). A run is paused with
SIGSTOP past its lease (2 s) so that the next run takes the mapping over, then resumed.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ebbtide.state.store import SqlStateStore
from tests.e2e.harness import (
    IN_FLIGHT_RECORDS,
    LEASE_TTL_S,
    Processes,
    ReceiverProcess,
    Workspace,
    duplicates,
    lease_expired,
    process_state,
    run_of,
    running_run,
    stopped_outside_a_transaction,
    wait_until,
)

ROWS = 6_000
DELAY_S = 0.1


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ReceiverProcess]:
    running = ReceiverProcess.start(tmp_path / "received.jsonl", delay_s=DELAY_S)
    yield running
    running.stop()


# -- mutual exclusion -----------------------------------------------------------------------


def test_two_syncs_of_one_mapping_started_at_once_one_runs_the_other_exits_busy(
    tmp_path: Path, processes: Processes, receiver: ReceiverProcess
) -> None:
    rows = 2 * ROWS  # four seconds of loading: a third sync can start in the middle
    workspace = Workspace.create(tmp_path / "ws", receiver.url, rows)
    # Mutual exclusion is the subject here, not expiry: a lease that a heartbeat delayed on a
    # busy machine cannot lose to the third sync.
    workspace.lease_ttl_s = 600
    assert workspace.runs() == {}  # the state store exists; see the test below for a fresh one

    with receiver.frozen():  # the winner cannot finish before the loser has exited
        syncs = {name: workspace.start_sync(processes, name) for name in ("a", "b")}
        loser = wait_until(
            lambda: next((n for n, p in syncs.items() if p.poll() is not None), None),
            30,
            "one of the two syncs to exit",
        )
        winner = "b" if loser == "a" else "a"
        assert syncs[winner].poll() is None, "the other sync finished first: they did not overlap"
    refused = workspace.finished(syncs[loser], loser)
    assert refused.returncode == 4, refused.stderr
    assert "mapping 'users' is busy" in refused.stderr
    # Refused as busy at once: not after a lock wait ("stayed locked") or a snapshot wait
    # ("in use"), whatever the time a loaded machine took to start the two processes.
    assert "Traceback" not in refused.stderr and refused.stdout == ""
    assert "stayed locked" not in refused.stderr and "in use" not in refused.stderr

    # Once the winner is loading, its lease is what keeps a third sync out.
    running = wait_until(lambda: running_run(workspace), 20, "the winner's run")
    wait_until(lambda: receiver.count(running) > 0, 20, "the winner to send")
    with receiver.frozen():  # the winner stays mid-load however long the third sync takes
        late = workspace.sync(processes, "c", timeout_s=30)
        assert syncs[winner].poll() is None, "the winner finished before the third sync started"
    assert late.returncode == 4, late.stderr
    assert f"mapping 'users' is busy: run {running} holds it" in late.stderr

    syncs[winner].wait(timeout=60)
    done = workspace.finished(syncs[winner], winner)
    assert done.returncode == 0, done.stderr
    assert done.run["id"] == running
    assert done.run["status"] == "success" and done.run["loaded_new"] == rows
    records = receiver.records()
    assert {run_of(r) for r in records} == {running}
    assert len(records) == rows and {r["key"] for r in records} == workspace.keys
    assert list(workspace.runs()) == [running]  # the refused syncs left no run behind


def _open_state_store(root: str, ready: Any, answers: Any) -> None:
    ready.wait()
    try:
        SqlStateStore("sqlite:///.ebbtide/state.db", Path(root)).dispose()
        answers.put("ok")
    except Exception as error:  # noqa: BLE001 - any failure is the answer
        answers.put(f"{type(error).__name__}: {error}")


def test_first_syncs_of_a_fresh_workspace_at_once_all_open_the_state_store(
    tmp_path: Path,
) -> None:
    """Four processes open (and so create) the same new state store at the same instant, as
    the first `ebbtide sync run` of a workspace started twice, or `serve` with a cron, do."""
    context = multiprocessing.get_context("fork")
    for attempt in range(2):
        root = tmp_path / f"ws{attempt}"
        root.mkdir()
        ready, answers = context.Barrier(4), context.Queue()
        workers = [
            context.Process(target=_open_state_store, args=(str(root), ready, answers))
            for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert [answers.get(timeout=5) for _ in workers] == ["ok"] * 4


# -- fencing --------------------------------------------------------------------------------


class Paused:
    """A first sync, stopped mid-load until its lease has run out."""

    def __init__(
        self, workspace: Workspace, processes: Processes, receiver: ReceiverProcess
    ) -> None:
        self.process = workspace.start_sync(processes, "first")
        self.run_id = wait_until(lambda: running_run(workspace), 20, "the first run to start")
        wait_until(lambda: receiver.count(self.run_id) >= 0.3 * ROWS, 30, "30% of the records")
        # Stopped inside its heartbeat's transaction, the run would keep every other process
        # from writing until it resumes: the next run could not start. That is not what this
        # scenario is about, so it is stopped again elsewhere. The receiver is frozen
        # meanwhile, so that the run is still mid-load when it stops, however busy the machine.
        with receiver.frozen():
            wait_until(
                lambda: stopped_outside_a_transaction(self.process, workspace.state_db),
                30,
                "the run to stop outside a state-store transaction",
            )
        # Its last heartbeat set the lease's end; nothing renews it now.
        wait_until(
            lambda: lease_expired(workspace),
            LEASE_TTL_S + 30,
            "the stopped run's lease to expire",
            interval_s=0.05,
        )
        # What it had acknowledged; a request written just before the stop may still arrive.
        self.kept = workspace.journaled_keys(self.run_id)

    def resume(self, workspace: Workspace) -> dict[str, Any]:
        self.process.send_signal(signal.SIGCONT)
        self.process.wait(timeout=60)
        done = workspace.finished(self.process, "first")
        assert done.returncode == 1, done.stderr  # exit code of an interrupted run
        assert "lost its lease" in done.stderr
        return done.run


def test_a_run_paused_past_its_lease_is_taken_over_and_its_late_results_are_refused(
    tmp_path: Path, processes: Processes, receiver: ReceiverProcess
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, ROWS)
    first = Paused(workspace, processes, receiver)

    # The take-over runs to the end while the first run is still stopped mid-load: the first
    # run holds neither the snapshot file nor anything else the second one needs.
    second = workspace.sync(processes, "second")
    assert process_state(first.process.pid) == "T"
    assert second.returncode == 0, second.stderr
    assert second.run["status"] == "success"
    assert second.run["added"] == second.run["loaded_new"] == ROWS - len(first.kept)
    sent_by_second = {r["key"] for r in receiver.from_run(second.run["id"])}
    assert sent_by_second == workspace.keys - first.kept
    history = workspace.runs()
    assert history[first.run_id]["status"] == "interrupted"
    assert workspace.snapshot_keys() == workspace.keys

    resumed_at = len(receiver.records())
    seen_by_first = first.resume(workspace)
    assert seen_by_first["status"] == "interrupted"

    # Fenced: the first run's late results changed neither its record nor the second's.
    after = workspace.runs()
    assert after[first.run_id] == history[first.run_id]
    # Credited by the take-over with what its journal showed acknowledged, and no more.
    assert after[first.run_id]["loaded_new"] == len(first.kept) > 0
    assert "lease expired" in after[first.run_id]["error"]
    assert after[second.run["id"]] == history[second.run["id"]] == second.run
    assert workspace.journals() == []  # no late acknowledgements for a later run to merge
    assert workspace.snapshot_keys() == workspace.keys

    # Whatever arrives from the fenced run after it resumes (nothing since the lease keeper;
    # before it, the whole rest of its change set) is a key the second run delivered already:
    # no key depends on it. That it sends nothing is the next test's business.
    late = receiver.records()[resumed_at:]
    assert {run_of(r) for r in late} <= {first.run_id}
    assert {r["key"] for r in late} <= sent_by_second

    third = workspace.sync(processes, "third")
    assert third.returncode == 0, third.stderr
    assert (third.run["added"], third.run["updated"], third.run["deleted"]) == (0, 0, 0)
    assert receiver.from_run(third.run["id"]) == []
    records = receiver.records()
    assert {r["key"] for r in records} == workspace.keys
    assert all(r["accepted"] for r in records)
    assert duplicates(records) == sum(
        1 for r in records if run_of(r) == first.run_id and r["key"] in sent_by_second
    )


def test_a_fenced_run_sends_nothing_once_it_resumes(
    tmp_path: Path, processes: Processes, receiver: ReceiverProcess
) -> None:
    """While the first run is stopped the model changes and the second run delivers the new
    values. Whatever the first run sends after it resumes carries the values it extracted
    before the change, and lands after the new ones: the destination ends up with stale data
    that the snapshot (the second run's) says it does not have, so no later sync repairs it.
    Only what was in flight when it stopped may still arrive."""
    workspace = Workspace.create(tmp_path / "ws", receiver.url, ROWS)
    first = Paused(workspace, processes, receiver)
    workspace.use_model_sql("select id, 'v2.' || email as email, plan from users")
    second = workspace.sync(processes, "second")
    assert second.returncode == 0, second.stderr
    assert (second.run["added"], second.run["updated"]) == (ROWS - len(first.kept), len(first.kept))
    resumed_at = len(receiver.records())
    first.resume(workspace)

    third = workspace.sync(processes, "third")
    assert (third.run["added"], third.run["updated"], third.run["deleted"]) == (0, 0, 0)
    late = [r for r in receiver.records()[resumed_at:] if run_of(r) == first.run_id]
    stale = {r["key"] for r in late} & {r["key"] for r in receiver.from_run(second.run["id"])}
    assert len(late) <= IN_FLIGHT_RECORDS, (
        f"the fenced run {first.run_id} sent {len(late)} records after it resumed;"
        f" {len(stale)} of them overwrite newer values the second run had delivered"
    )
