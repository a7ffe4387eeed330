"""A snapshot file another process holds, or one that is damaged: said at once, and how."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ebbtide.errors import SnapshotDamagedError
from ebbtide.snapshots import duckdb as snapshots
from ebbtide.snapshots.duckdb import DuckDBSnapshotStore, SnapshotBusyError
from tests.unit.test_snapshot_store import MAPPING, stage_and_diff, users

HOLD_FILE = """
import duckdb, sys
con = duckdb.connect(sys.argv[1])
print("open", flush=True)
sys.stdin.read()
"""


def snapshot_file(state_dir: Path) -> Path:
    return state_dir / snapshots.SNAPSHOTS_DIR / f"{MAPPING.name}.duckdb"


def test_a_snapshot_another_process_holds_is_busy_naming_that_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DuckDBSnapshotStore(tmp_path, MAPPING)
    stage_and_diff(store, users([1, 2, 3]))
    store.close()
    monkeypatch.setattr(snapshots, "ATTACH_WAIT_S", 0.2)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_FILE, str(snapshot_file(tmp_path))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(SnapshotBusyError) as busy:
            DuckDBSnapshotStore(tmp_path, MAPPING)
        assert f"is in use by another process (pid {holder.pid})" in str(busy.value)
    finally:
        holder.kill()
        holder.wait(timeout=10)
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()
    assert not list((tmp_path / "work").iterdir()), "a refused store left its scratch folder"


def test_a_snapshot_that_is_not_a_duckdb_file_is_damaged_not_busy(tmp_path: Path) -> None:
    file = snapshot_file(tmp_path)
    file.parent.mkdir(parents=True)
    file.write_bytes(b"this is not a DuckDB database" * 1_000)
    with pytest.raises(SnapshotDamagedError) as damaged:
        DuckDBSnapshotStore(tmp_path, MAPPING, read_only=True)
    assert str(file) in str(damaged.value) and "ebbtide reset users_to_crm" in str(damaged.value)
