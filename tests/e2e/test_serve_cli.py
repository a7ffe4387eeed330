"""`ebbtide serve` and `ebbtide sync now` as real processes, syncing to the demo receiver.

Every wait is for a line serve prints, a row in the state store or a record at the receiver.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.harness import (
    Processes,
    ReceiverProcess,
    Serve,
    Workspace,
    received_everything,
    receiver_fixture,
    wait_until,
)

# Every run sees every row changed (the time of its transaction), so each run sends them all.
EVERY_RUN_SQL = "select id, email, plan, now()::VARCHAR as at from users"

receiver = receiver_fixture(delay_s=0)


def sync_now(workspace: Workspace) -> subprocess.CompletedProcess[str]:
    return workspace.cli("sync", "now", "users")


@contextmanager
def serving_a_sync_now(
    tmp_path: Path, processes: Processes, delay_s: float, rows: int, args: tuple[str, ...] = ()
) -> Iterator[tuple[ReceiverProcess, Workspace, Serve]]:
    """A receiver answering after `delay_s`, a "sync now" of `rows` users, and serve (given
    `args`) running it: its first records have reached the receiver."""
    with ReceiverProcess.start(tmp_path / "received.jsonl", delay_s=delay_s) as slow:
        workspace = Workspace.create(tmp_path / "ws", slow.url, rows=rows)
        workspace.configure(schedule="manual")
        sync_now(workspace)
        serve = Serve(workspace, processes, "serve", *args)
        serve.wait_line("started users run")
        wait_until(lambda: slow.count() > 0, 60, "the first records at the receiver")
        yield slow, workspace, serve


def test_serve_runs_a_mapping_on_its_schedule_again_and_again(
    tmp_path: Path, processes: Processes, receiver: ReceiverProcess
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, rows=50)
    workspace.configure(EVERY_RUN_SQL, fields="{email: email, plan: plan, at: at}", schedule="2s")
    serve = Serve(workspace, processes, "serve")
    finished = serve.wait_finished(3)
    assert serve.stop() == 0
    runs = workspace.runs()
    for run_id, status in finished:
        assert status == "success"
        assert runs[run_id]["trigger"] == "schedule"
        assert receiver.count(run_id) == 50  # each run's records reached the receiver
    assert "claimed users (schedule, due " in serve.text()
    assert re.search(r"started users run \d+ \(schedule", serve.text())
    assert "running" not in {r["status"] for r in runs.values()}


def test_sync_now_is_queued_then_merged_and_serve_runs_it_once(
    tmp_path: Path, processes: Processes, receiver: ReceiverProcess
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, rows=30)
    workspace.configure(schedule="manual")
    first, second = sync_now(workspace), sync_now(workspace)
    assert first.returncode == 0 and first.stdout.startswith("queued: users"), first
    assert second.returncode == 0 and second.stdout.startswith("merged: a sync of users"), second
    serve = Serve(workspace, processes, "serve")
    [(run_id, status)] = serve.wait_finished(1)
    assert status == "success" and receiver.count(run_id) == 30
    third = sync_now(workspace)  # a new request once the first has run
    assert third.stdout.startswith("queued: users")
    [_, (again, _)] = serve.wait_finished(2)
    assert serve.stop() == 0
    runs = workspace.runs()
    assert set(runs) == {run_id, again}
    assert {runs[run_id]["trigger"], runs[again]["trigger"]} == {"manual"}


def test_sigterm_lets_the_run_in_flight_finish_and_exits_0(
    tmp_path: Path, processes: Processes
) -> None:
    started = serving_a_sync_now(tmp_path, processes, delay_s=0.2, rows=900)
    with started as (slow, workspace, serve):
        assert serve.stop() == 0
        [(run_id, status)] = serve.finished()
        assert status == "success" and slow.count(run_id) == 900
        assert "stopping: waiting up to 30 s for users to finish" in serve.text()
        assert workspace.runs()[run_id]["status"] == "success"


def test_sigterm_past_the_grace_period_cancels_the_run_and_exits_0(
    tmp_path: Path, processes: Processes
) -> None:
    no_grace = ("--grace-s", "0")
    started = serving_a_sync_now(tmp_path, processes, delay_s=0.3, rows=3000, args=no_grace)
    with started as (slow, workspace, serve):
        assert serve.stop() == 0
        assert "grace period over: cancelling the runs in flight" in serve.text()
        [(run_id, status)] = serve.finished()
        assert status == "cancelled"
        runs = workspace.runs()
        assert runs[run_id]["status"] == "cancelled"
        assert slow.count(run_id) < 3000


def test_a_serve_killed_mid_run_loses_nothing_the_next_serve_recovers(
    tmp_path: Path, processes: Processes
) -> None:
    with ReceiverProcess.start(tmp_path / "received.jsonl", delay_s=0.2) as slow:
        workspace = Workspace.create(tmp_path / "ws", slow.url, rows=3000)
        workspace.configure(schedule="2s")
        first = Serve(workspace, processes, "first")
        first.wait_line("started users run")
        wait_until(lambda: slow.count() >= 300, 60, "records of the first run")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=30)
        [dead] = [r for r in workspace.runs().values() if r["status"] == "running"]
        second = Serve(workspace, processes, "second")
        [(run_id, status), *_] = second.wait_finished(1)
        assert status == "success" and run_id != dead["id"]
        assert second.stop() == 0
        runs = workspace.runs()
        assert runs[dead["id"]]["status"] == "interrupted"
        received_everything(workspace, slow)


def test_an_invalid_edit_is_logged_and_the_old_schedule_keeps_running_a_valid_one_applies(
    tmp_path: Path, processes: Processes, receiver: ReceiverProcess
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, rows=20)
    workspace.configure(schedule="2s")
    serve = Serve(workspace, processes, "serve")
    serve.wait_finished(1)
    workspace.configure(schedule='"every tuesday"')
    at = serve.wait_line("ebbtide.yml changed but is invalid (1 error(s))")
    serve.wait_line("mappings.users.schedule: 'every tuesday' is not a schedule", at)
    before = len(serve.finished())
    serve.wait_finished(before + 1)  # the last valid workspace: every 2 s still
    copy = (
        "  users_copy:\n    model: users\n    destination: hook\n    action: upsert\n"
        "    fields: {email: email}\n    schedule: 1h\n"
    )
    workspace.configure(schedule="2s", more=copy)
    serve.wait_line("reloaded ebbtide.yml: 2 mapping(s)", at)
    [(copy_run, status)] = serve.wait_finished(1, "users_copy")
    assert status == "success"
    assert serve.stop() == 0
    assert workspace.runs()[copy_run]["trigger"] == "schedule"


def test_a_second_sigterm_cancels_the_run_in_flight_at_once(
    tmp_path: Path, processes: Processes
) -> None:
    started = serving_a_sync_now(tmp_path, processes, delay_s=0.3, rows=3000)  # a grace of 30 s
    with started as (slow, workspace, serve):
        serve.process.send_signal(signal.SIGTERM)
        serve.wait_line("stopping: waiting up to 30 s for users to finish")
        assert serve.stop() == 0
        [(run_id, status)] = serve.finished()
        assert status == "cancelled" and slow.count(run_id) < 3000
        assert workspace.runs()[run_id]["status"] == "cancelled"


def test_serve_refuses_an_invalid_workspace_and_sync_now_an_unknown_mapping(
    tmp_path: Path, processes: Processes
) -> None:
    workspace = Workspace.create(tmp_path / "ws", "http://127.0.0.1:9/unused", rows=1)
    workspace.configure(schedule="manual")
    unknown = workspace.cli("sync", "now", "user")
    assert unknown.returncode == 2
    assert "unknown mapping 'user' (did you mean 'users'?)" in unknown.stderr
    workspace.configure(schedule="manual", more="    timezone: Mars/Olympus\n")
    refused = workspace.cli("serve", "--port", "0")
    assert refused.returncode == 2
    assert "mappings.users.timezone: 'Mars/Olympus' is not a time zone" in refused.stderr


def test_sync_now_wait_returns_the_run_serve_made_of_the_request(
    tmp_path: Path, processes: Processes, receiver: ReceiverProcess
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, rows=40)
    workspace.configure(schedule="manual")
    serve = Serve(workspace, processes, "serve")
    serve.wait_line("serving ")
    done = workspace.cli("sync", "now", "users", "--wait", "--json", timeout_s=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["status"], answer["run"]["status"]) == ("queued", "success")
    assert answer["run"]["trigger"] == "manual"
    assert serve.finished() == [(answer["run"]["id"], "success")]
    assert receiver.count(answer["run"]["id"]) == 40
    assert serve.stop() == 0
