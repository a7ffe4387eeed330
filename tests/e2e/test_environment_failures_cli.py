"""When the machine fails ebbtide, through the real CLI: one clear message, its own exit code,
nothing half-written, and the next sync, once the machine is mended, loses nothing.

A full disk and a read-only folder are real (a tmpfs or a read-only bind mount in a mount
namespace of the test's own, see mounts.py); the state store is deleted, the warehouse locked
and the source's connection cut by real processes while a real sync runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest

from tests.e2e.harness import (
    Finished,
    Processes,
    ReceiverProcess,
    Workspace,
    received_everything,
    receiver_fixture,
    running_run,
    wait_until,
)
from tests.e2e.mounts import MountNamespace

EXIT_STORAGE = 5
EXIT_DAMAGED = 6
EXIT_CANCELLED = 130

receiver = receiver_fixture(delay_s=0.05)


@pytest.fixture
def namespace() -> Iterator[MountNamespace]:
    held = MountNamespace.open()
    yield held
    held.close()


def said_clearly(finished: Finished | subprocess.CompletedProcess[str], *words: str) -> str:
    """stderr, checked to be a message for a person: no traceback, and the words given."""
    text = " ".join(finished.stderr.split())
    assert "Traceback" not in finished.stderr and "internal error" not in text, text
    for word in words:
        assert word in text, text
    return text


def cli(workspace: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    return workspace.cli(*args, timeout_s=120)


def run_statuses(workspace: Workspace, namespace: MountNamespace | None = None) -> list[str]:
    args = workspace.cli_args("runs", "list", "--json")
    done = (
        namespace.run(args, env=workspace.env)
        if namespace
        else subprocess.run(args, capture_output=True, text=True, env=workspace.env)
    )
    assert done.returncode == 0, done.stderr
    runs: list[dict[str, Any]] = json.loads(done.stdout)
    return [run["status"] for run in sorted(runs, key=lambda run: run["id"])]


# -- the state store ------------------------------------------------------------------------


def test_a_read_only_state_store_shows_its_history_and_refuses_to_sync_changing_nothing(
    tmp_path: Path, receiver: ReceiverProcess, processes: Processes, namespace: MountNamespace
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, 300)
    assert workspace.sync(processes, "first").returncode == 0
    before = hashlib.sha256(workspace.state_db.read_bytes()).hexdigest()
    sent = receiver.count()
    namespace.read_only(workspace.root)

    history = namespace.run(workspace.cli_args("runs", "list"), env=workspace.env)
    assert history.returncode == 0, history.stderr
    assert "success" in history.stdout
    assert run_statuses(workspace, namespace) == ["success"]

    refused = namespace.run(workspace.cli_args("sync", "run", "users"), env=workspace.env)
    assert refused.returncode == EXIT_STORAGE
    said_clearly(refused, "read-only", str(workspace.state_db))
    assert receiver.count() == sent
    assert hashlib.sha256(workspace.state_db.read_bytes()).hexdigest() == before


def test_an_unreachable_state_store_is_named_without_its_password(
    tmp_path: Path, receiver: ReceiverProcess
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workspace = Workspace.create(tmp_path / "ws", receiver.url, 10)
    config = workspace.root / "ebbtide.yml"
    url = f"postgresql://ebbtide:hunter2-secret@127.0.0.1:{port}/state"
    config.write_text(f"state: {url}\n" + config.read_text())

    for command in (["runs", "list"], ["sync", "run", "users"], ["sync", "run", "--all"]):
        done = cli(workspace, *command)
        assert done.returncode == EXIT_STORAGE, (command, done.stderr)
        text = said_clearly(done, "cannot reach the state store", f"127.0.0.1:{port}")
        assert "hunter2" not in text + done.stdout
    assert receiver.count() == 0


def test_a_state_store_deleted_mid_run_stops_the_run_and_the_next_sync_sends_the_rest(
    tmp_path: Path, processes: Processes
) -> None:
    with ReceiverProcess.start(tmp_path / "slow.jsonl", delay_s=0.1) as slow:
        workspace = Workspace.create(tmp_path / "ws", slow.url, 3_000)
        workspace.lease_ttl_s = 1.0  # heartbeats every 0.25 s: the loss is seen at once
        sync = workspace.start_sync(processes, "first")
        wait_until(lambda: slow.count() >= 300, 60, "the first records to arrive")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{workspace.state_db}{suffix}").unlink(missing_ok=True)
        sync.wait(timeout=60)
        stopped = workspace.finished(sync, "first")
        assert stopped.returncode == EXIT_STORAGE, stopped.stderr
        said_clearly(stopped, "was deleted or replaced", str(workspace.state_db))
        assert slow.count() < workspace.rows, "the run went on sending after its history went"

        again = workspace.sync(processes, "again")
        assert again.returncode == 0, again.stderr
        assert again.run["status"] == "success"
        received_everything(workspace, slow)


# -- a full disk ----------------------------------------------------------------------------


def test_a_disk_full_while_staging_fails_the_run_cleanly_and_the_next_sync_sends_all(
    tmp_path: Path, receiver: ReceiverProcess, processes: Processes, namespace: MountNamespace
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, 20_000)
    state_dir = workspace.root / ".ebbtide"
    namespace.small_disk(state_dir, "1m")  # the model's rows do not fit in the scratch space

    full = namespace.run(workspace.cli_args("sync", "run", "users"), env=workspace.env)
    assert full.returncode == EXIT_STORAGE, full.stderr
    said_clearly(full, "out of disk space", str(state_dir), "free some space")
    assert run_statuses(workspace, namespace) == ["failed"]  # not left `running`
    assert not namespace.run(["ls", str(state_dir / "work")]).stdout.strip(), "scratch left"
    assert receiver.count() == 0

    namespace.resize(state_dir, "64m")
    again = namespace.run(workspace.cli_args("sync", "run", "users"), env=workspace.env)
    assert again.returncode == 0, again.stderr
    assert run_statuses(workspace, namespace) == ["failed", "success"]
    received_everything(workspace, receiver)


@pytest.mark.parametrize(
    ("moment", "leave_kb"),
    [
        pytest.param("first", 0, id="journaling: full at the first answer"),
        pytest.param("last", 256, id="committing: all delivered, 256 KB left"),
    ],
)
def test_a_disk_full_mid_sync_fails_the_run_and_loses_nothing(
    tmp_path: Path,
    processes: Processes,
    namespace: MountNamespace,
    moment: str,
    leave_kb: int,
) -> None:
    with ReceiverProcess.start(tmp_path / "slow.jsonl", delay_s=0.3) as slow:
        workspace = Workspace.create(tmp_path / "ws", slow.url, 2_000)
        state_dir = workspace.root / ".ebbtide"
        namespace.small_disk(state_dir, "16m")
        args = workspace.cli_args("sync", "run", "users", "--json")
        sync = namespace.start_in(processes, args, workspace.env, tmp_path / "first")
        goal = 1 if moment == "first" else workspace.rows
        wait_until(lambda: slow.count() >= goal, 120, f"{goal} records to arrive")
        namespace.fill(state_dir, leave_kb)
        sync.wait(timeout=120)
        stopped = workspace.finished(sync, "first")
        if stopped.returncode == 0:  # the last answers, and the commit, fit in what was left
            assert moment == "last", stopped.stderr
        else:
            assert stopped.returncode == EXIT_STORAGE, stopped.stderr
            said_clearly(stopped, "out of disk space")
        namespace.free(state_dir)
        assert run_statuses(workspace, namespace)[0] != "running"

        args = workspace.cli_args("sync", "run", "users", "--json")
        again = namespace.run(args, env=workspace.env)
        assert again.returncode == 0, again.stderr
        received_everything(workspace, slow)


# -- the source -----------------------------------------------------------------------------


def test_a_warehouse_file_locked_by_another_writer_fails_the_run_naming_it(
    tmp_path: Path, receiver: ReceiverProcess, processes: Processes
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, 200)
    writer = duckdb.connect(str(workspace.root / "warehouse.duckdb"))  # holds the write lock
    try:
        locked = workspace.sync(processes, "locked")
    finally:
        writer.close()
    assert locked.returncode == 1
    said_clearly(locked)
    assert locked.run["status"] == "failed" and receiver.count() == 0
    error = locked.run["error"]
    assert "is locked by another process" in error and f"pid {os.getpid()}" in error
    assert str(workspace.root / "warehouse.duckdb") in error

    again = workspace.sync(processes, "again")
    assert again.returncode == 0, again.stderr
    received_everything(workspace, receiver)


ROWS_SQL = "select i as id, 'user' || i || '@example.com' as email from generate_series(1, 3000) i"
# A millisecond per row: the COPY is still sending rows when the connection is cut.
SLOW_ROWS_SQL = f"{ROWS_SQL} where pg_sleep(0.001) is not null"


def test_a_source_connection_dropped_mid_extract_fails_the_run_and_sends_nothing(
    tmp_path: Path, pg_dsn: str, receiver: ReceiverProcess, processes: Processes
) -> None:
    application = f"ebbtide_test_{uuid.uuid4().hex[:8]}"
    url = f"{pg_dsn}?application_name={application}"
    workspace = Workspace.create(tmp_path / "ws", receiver.url, 3_000)
    postgres = f'{{type: postgres, url: "{url}"}}'
    workspace.configure(SLOW_ROWS_SQL, source=postgres, fields="{email: email}")

    sync = workspace.start_sync(processes, "cut")
    with psycopg.connect(pg_dsn, autocommit=True) as admin:

        def reading() -> bool:
            query = (
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                " AND state = 'active' AND query ILIKE 'COPY%%'"
            )
            row = admin.execute(query, (application,)).fetchone()
            return bool(row and row[0])

        wait_until(reading, 60, "the sync to copy the model's rows")
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (application,),
        )
    sync.wait(timeout=60)
    cut = workspace.finished(sync, "cut")
    assert cut.returncode == 1, cut.stderr
    said_clearly(cut)
    assert cut.run["status"] == "failed" and cut.run["extracted"] == 0
    for words in ("connection to PostgreSQL", "was lost while reading", "nothing was sent"):
        assert words in cut.run["error"]
    assert receiver.count() == 0

    workspace.configure(ROWS_SQL, source=postgres, fields="{email: email}")
    again = workspace.sync(processes, "again")
    assert again.returncode == 0, again.stderr
    received_everything(workspace, receiver)


def test_sigterm_while_the_model_query_runs_is_a_cancelled_run_not_an_internal_error(
    tmp_path: Path, receiver: ReceiverProcess, processes: Processes
) -> None:
    # A million rows stream from the warehouse into the run's scratch database for a second
    # or two after it opens: DuckDB hears the signal while it reads them.
    workspace = Workspace.create(tmp_path / "ws", receiver.url, 1_000_000)
    sync = workspace.start_sync(processes, "stopped")
    wait_until(lambda: running_run(workspace), 30, "the run to start")
    wait_until(workspace.scratch_databases, 30, "the run to open its snapshot store")
    sync.send_signal(signal.SIGTERM)
    sync.wait(timeout=60)
    stopped = workspace.finished(sync, "stopped")
    assert stopped.returncode == EXIT_CANCELLED, stopped.stderr
    said_clearly(stopped, "cancelled")
    assert run_statuses(workspace) == ["cancelled"]


# -- damaged files --------------------------------------------------------------------------


def truncate(file: Path) -> None:
    with file.open("r+b") as damaged:
        damaged.truncate(5_000)


def overwrite_middle(file: Path) -> None:
    with file.open("r+b") as damaged:
        damaged.seek(20_000)
        damaged.write(os.urandom(100_000))


@pytest.mark.parametrize("damage", [truncate, overwrite_middle], ids=["truncated", "corrupt"])
def test_a_damaged_snapshot_is_named_at_once_and_a_reset_mends_it(
    tmp_path: Path, receiver: ReceiverProcess, processes: Processes, damage: Any
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, 2_000)
    assert workspace.sync(processes, "first").returncode == 0
    damage(workspace.snapshot_file)

    for command in (["sync", "run", "users"], ["sync", "plan", "users"]):
        done = cli(workspace, *command)
        assert done.returncode == EXIT_DAMAGED, (command, done.stderr)
        said_clearly(done, "is damaged", str(workspace.snapshot_file), "ebbtide reset users")
    assert receiver.count() == workspace.rows  # the first sync's, nothing more
    assert not workspace.scratch_databases()

    reset = cli(workspace, "reset", "users", "--yes")
    assert reset.returncode == 0, reset.stderr
    again = workspace.sync(processes, "again")
    assert again.returncode == 0, again.stderr
    assert again.run["added"] == workspace.rows
    assert {r["key"] for r in receiver.from_run(again.run["id"])} == workspace.keys


def test_a_damaged_journal_is_named_and_a_reset_mends_it(
    tmp_path: Path, receiver: ReceiverProcess, processes: Processes
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, 500)
    assert workspace.sync(processes, "first").returncode == 0
    workspace.journal_dir.mkdir(parents=True, exist_ok=True)
    journal = workspace.journal_dir / f"{99:012d}.arrow"
    journal.write_bytes(b"PK\x03\x04 not an Arrow stream at all" + os.urandom(4_000))

    damaged = cli(workspace, "sync", "run", "users")
    assert damaged.returncode == EXIT_DAMAGED, damaged.stderr
    said_clearly(damaged, "journal", str(journal), "is damaged", "ebbtide reset users")
    assert run_statuses(workspace) == ["success", "failed"]

    assert cli(workspace, "reset", "users", "--yes").returncode == 0
    again = workspace.sync(processes, "again")
    assert again.returncode == 0, again.stderr
    assert {r["key"] for r in receiver.from_run(again.run["id"])} == workspace.keys
