"""A state store write lock held by another process: the message names that process."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ebbtide.state.store import SqlStateStore, StateStoreLockedError
from tests.e2e.harness import stop_and_wait

HOLD_WRITE_LOCK = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_write_lock_held_by_a_stopped_process_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EBBTIDE_STATE_LOCK_WAIT_S", "0.2")
    store = SqlStateStore("sqlite:///.ebbtide/state.db", tmp_path)
    path = tmp_path / ".ebbtide" / "state.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITE_LOCK, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        stop_and_wait(holder, "the holder")  # frozen in its transaction, as the soak found
        with pytest.raises(StateStoreLockedError) as locked:
            store.start_run("m", "manual", lease_ttl_s=60)
        said = str(locked.value)
        assert f"pid {holder.pid} (" in said and ", stopped) holds a write lock" in said, said
        assert store.list_runs() == []
    finally:
        holder.send_signal(signal.SIGCONT)
        holder.kill()
        holder.wait(timeout=10)
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()
    run, _ = store.start_run("m", "manual", lease_ttl_s=60)
    assert run.id == 1
    store.dispose()
