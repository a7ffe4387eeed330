"""A SQLite state store that another process keeps write-locked: a clear message, no traceback."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.harness import (
    MAPPING,
    Processes,
    ReceiverProcess,
    Workspace,
    holding_state_store,
    receiver_fixture,
)

ROWS = 200

receiver = receiver_fixture(delay_s=0)


def test_a_sync_that_cannot_get_the_write_lock_says_who_has_it_and_exits_busy(
    tmp_path: Path, processes: Processes, receiver: ReceiverProcess
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, ROWS)
    assert workspace.runs() == {}  # the state store exists, at the latest schema
    env = {**workspace.env, "EBBTIDE_STATE_LOCK_WAIT_S": "1"}

    with holding_state_store(workspace):
        assert workspace.runs() == {}  # reading the history does not need the lock
        locked = workspace.cli("sync", "run", MAPPING, timeout_s=120, env=env)
    said = " ".join(locked.stderr.split())  # the console may wrap a long line
    assert locked.returncode == 4, locked.stderr
    assert "Traceback" not in locked.stderr and "OperationalError" not in locked.stderr
    assert f"the state store {workspace.state_db} stayed locked for 1 s" in said
    # This test's process holds the lock: the message names it, as it would a stopped sync.
    assert f"pid {os.getpid()} (" in said and ") holds a write lock on it" in said
    assert receiver.count() == 0

    released = workspace.sync(processes, "after")
    assert released.returncode == 0, released.stderr
    assert released.run["status"] == "success" and released.run["loaded_new"] == ROWS
    assert list(workspace.runs()) == [released.run["id"]]  # the refused sync left no run
