"""`ebbtide serve` and `ebbtide sync now` as real processes, syncing to the demo receiver.

Every wait is for a line serve prints, a row in the state store or a record at the receiver.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import (
    FAST_SQL,
    IN_FLIGHT_RECORDS,
    Processes,
    ReceiverProcess,
    Workspace,
    duplicates,
    wait_until,
)

CONFIG = """\
sources:
  warehouse: {{type: duckdb, path: warehouse.duckdb}}
models:
  users:
    source: warehouse
    primary_key: id
    sql: "{sql}"
destinations:
  hook:
    type: webhook
    url: "${{HOOK_URL}}"
    batch_size: 100
    concurrency: 3
    timeout_s: 120
mappings:
  users:
    model: users
    destination: hook
    action: upsert
    mode: mirror
    fields: {fields}
    schedule: {schedule}
{more}"""

# Every run sees every row changed (the time of its transaction), so each run sends them all.
EVERY_RUN_SQL = "select id, email, plan, now()::VARCHAR as at from users"
FINISHED = re.compile(r"finished (\S+) run (\d+): (\w+)")


def configure(
    workspace: Workspace,
    schedule: str,
    sql: str = FAST_SQL,
    fields: str = "{email: email, plan: plan}",
    more: str = "",
) -> None:
    text = CONFIG.format(sql=sql, fields=fields, schedule=schedule, more=more)
    (workspace.root / "ebbtide.yml").write_text(text)


class Serve:
    """One `ebbtide serve` process and the lines it printed on stderr."""

    def __init__(self, workspace: Workspace, processes: Processes, name: str, *args: str):
        self.log = workspace.root.parent / f"{name}.err"
        # Any free port for the API: tests run in parallel, each with its own serve.
        port = () if "--port" in args else ("--port", "0")
        command = workspace.cli_args("serve", *port, *args)
        env = {**workspace.env, "EBBTIDE_LEASE_TTL_S": "10"}
        self.process = processes.start(command, env, workspace.root.parent / name)

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def finished(self, mapping: str = "users") -> list[tuple[int, str]]:
        return [
            (int(run), status)
            for name, run, status in FINISHED.findall(self.text())
            if name == mapping
        ]

    def seen(self, look: Callable[[], Any]) -> Any:
        """What `look` finds in the log; once serve has exited, its complete log either has
        it or the wait fails at once, showing the log (an exit is no reason to wait on)."""
        found = look()
        if found or self.process.poll() is None:
            return found
        found = look()
        if not found:
            raise AssertionError(f"serve exited {self.process.returncode}:\n{self.text()}")
        return found

    def wait_finished(self, n: int, mapping: str = "users") -> list[tuple[int, str]]:
        return wait_until(
            lambda: self.seen(lambda: len(self.finished(mapping)) >= n and self.finished(mapping)),
            120,
            f"{n} finished run(s) of {mapping} in {self.log}:\n{self.text()}",
        )

    def wait_line(self, text: str, after: int = 0) -> int:
        """Waits for `text` after position `after` of the log; returns where it ends."""
        found = wait_until(
            lambda: self.seen(lambda: self.text().find(text, after) + 1),
            120,
            f"{text!r} in {self.log}:\n{self.text()}",
        )
        return int(found) - 1 + len(text)

    def stop(self, timeout_s: float = 120) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)


def sync_now(workspace: Workspace) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        workspace.cli_args("sync", "now", "users"),
        capture_output=True,
        text=True,
        timeout=60,
        env=workspace.env,
    )


@pytest.fixture
def receiver(tmp_path: Path) -> ReceiverProcess:
    started = ReceiverProcess.start(tmp_path / "received.jsonl", delay_s=0)
    yield started  # type: ignore[misc]
    started.stop()


def test_serve_runs_a_mapping_on_its_schedule_again_and_again(
    tmp_path: Path, processes: Processes, receiver: ReceiverProcess
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, rows=50)
    configure(workspace, "2s", sql=EVERY_RUN_SQL, fields="{email: email, plan: plan, at: at}")
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
    configure(workspace, "manual")
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
    slow = ReceiverProcess.start(tmp_path / "received.jsonl", delay_s=0.2)
    try:
        workspace = Workspace.create(tmp_path / "ws", slow.url, rows=900)
        configure(workspace, "manual")
        sync_now(workspace)
        serve = Serve(workspace, processes, "serve")
        serve.wait_line("started users run")
        wait_until(lambda: slow.count() > 0, 60, "the first records at the receiver")
        assert serve.stop() == 0
        [(run_id, status)] = serve.finished()
        assert status == "success" and slow.count(run_id) == 900
        assert "stopping: waiting up to 30 s for users to finish" in serve.text()
        assert workspace.runs()[run_id]["status"] == "success"
    finally:
        slow.stop()


def test_sigterm_past_the_grace_period_cancels_the_run_and_exits_0(
    tmp_path: Path, processes: Processes
) -> None:
    slow = ReceiverProcess.start(tmp_path / "received.jsonl", delay_s=0.3)
    try:
        workspace = Workspace.create(tmp_path / "ws", slow.url, rows=3000)
        configure(workspace, "manual")
        sync_now(workspace)
        serve = Serve(workspace, processes, "serve", "--grace-s", "0")
        serve.wait_line("started users run")
        wait_until(lambda: slow.count() > 0, 60, "the first records at the receiver")
        assert serve.stop() == 0
        assert "grace period over: cancelling the runs in flight" in serve.text()
        [(run_id, status)] = serve.finished()
        assert status == "cancelled"
        runs = workspace.runs()
        assert runs[run_id]["status"] == "cancelled"
        assert slow.count(run_id) < 3000
    finally:
        slow.stop()


def test_a_serve_killed_mid_run_loses_nothing_the_next_serve_recovers(
    tmp_path: Path, processes: Processes
) -> None:
    slow = ReceiverProcess.start(tmp_path / "received.jsonl", delay_s=0.2)
    try:
        workspace = Workspace.create(tmp_path / "ws", slow.url, rows=3000)
        configure(workspace, "2s")
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
        records = slow.records()
        assert {int(r["key"]) for r in records} == workspace.keys
        assert duplicates(records) <= IN_FLIGHT_RECORDS
    finally:
        slow.stop()


def test_an_invalid_edit_is_logged_and_the_old_schedule_keeps_running_a_valid_one_applies(
    tmp_path: Path, processes: Processes, receiver: ReceiverProcess
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, rows=20)
    configure(workspace, "2s")
    serve = Serve(workspace, processes, "serve")
    serve.wait_finished(1)
    configure(workspace, '"every tuesday"')
    at = serve.wait_line("ebbtide.yml changed but is invalid (1 error(s))")
    serve.wait_line("mappings.users.schedule: 'every tuesday' is not a schedule", at)
    before = len(serve.finished())
    serve.wait_finished(before + 1)  # the last valid workspace: every 2 s still
    copy = (
        "  users_copy:\n    model: users\n    destination: hook\n    action: upsert\n"
        "    fields: {email: email}\n    schedule: 1h\n"
    )
    configure(workspace, "2s", more=copy)
    serve.wait_line("reloaded ebbtide.yml: 2 mapping(s)", at)
    [(copy_run, status)] = serve.wait_finished(1, "users_copy")
    assert status == "success"
    assert serve.stop() == 0
    assert workspace.runs()[copy_run]["trigger"] == "schedule"


def test_a_second_sigterm_cancels_the_run_in_flight_at_once(
    tmp_path: Path, processes: Processes
) -> None:
    slow = ReceiverProcess.start(tmp_path / "received.jsonl", delay_s=0.3)
    try:
        workspace = Workspace.create(tmp_path / "ws", slow.url, rows=3000)
        configure(workspace, "manual")
        sync_now(workspace)
        serve = Serve(workspace, processes, "serve")  # a grace of 30 s
        serve.wait_line("started users run")
        wait_until(lambda: slow.count() > 0, 60, "the first records at the receiver")
        serve.process.send_signal(signal.SIGTERM)
        serve.wait_line("stopping: waiting up to 30 s for users to finish")
        assert serve.stop() == 0
        [(run_id, status)] = serve.finished()
        assert status == "cancelled" and slow.count(run_id) < 3000
        assert workspace.runs()[run_id]["status"] == "cancelled"
    finally:
        slow.stop()


def test_serve_refuses_an_invalid_workspace_and_sync_now_an_unknown_mapping(
    tmp_path: Path, processes: Processes
) -> None:
    workspace = Workspace.create(tmp_path / "ws", "http://127.0.0.1:9/unused", rows=1)
    configure(workspace, "manual")
    unknown = subprocess.run(
        workspace.cli_args("sync", "now", "user"),
        capture_output=True,
        text=True,
        timeout=60,
        env=workspace.env,
    )
    assert unknown.returncode == 2
    assert "unknown mapping 'user' (did you mean 'users'?)" in unknown.stderr
    configure(workspace, "manual", more="    timezone: Mars/Olympus\n")
    refused = subprocess.run(
        workspace.cli_args("serve", "--port", "0"),
        capture_output=True,
        text=True,
        timeout=60,
        env=workspace.env,
    )
    assert refused.returncode == 2
    assert "mappings.users.timezone: 'Mars/Olympus' is not a time zone" in refused.stderr


def test_sync_now_wait_returns_the_run_serve_made_of_the_request(
    tmp_path: Path, processes: Processes, receiver: ReceiverProcess
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, rows=40)
    configure(workspace, "manual")
    serve = Serve(workspace, processes, "serve")
    serve.wait_line("serving ")
    done = subprocess.run(
        workspace.cli_args("sync", "now", "users", "--wait", "--json"),
        capture_output=True,
        text=True,
        timeout=120,
        env=workspace.env,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["status"], answer["run"]["status"]) == ("queued", "success")
    assert answer["run"]["trigger"] == "manual"
    assert serve.finished() == [(answer["run"]["id"], "success")]
    assert receiver.count(answer["run"]["id"]) == 40
    assert serve.stop() == 0
