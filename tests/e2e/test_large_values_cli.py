"""Huge values through `ebbtide sync run`, a subprocess, to the receiver on 127.0.0.1.

A single 50 MB value once crashed the outbound query (DuckDB ran out of memory rendering it)
and with it the whole run. Now that record fails alone as `payload_too_large`, naming the
column; the others load, and the next sync sends it once the value is fixed. Batches are cut
by bytes as well as by rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ebbtide.demo.receiver import Receiver
from ebbtide.snapshots.outbound import MAX_BATCH_BYTES
from tests.integration.workspace_kit import TOKEN, hook, warehouse_sql, write_workspace

ROWS = 30
HUGE_KEY = 7
HUGE_BYTES = 50 * 2**20
# What the CLI measured at its peak syncing the 50 MB value: about 480 MB, most of it the
# DuckDB source materialising the value; the run used to die of an out-of-memory error instead.
PEAK_RSS_BYTES = 800 * 2**20

# Runs the CLI as its only child, so the peak memory reported is the CLI's own.
MEASURED = """\
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"code": done.returncode, "out": done.stdout, "err": done.stderr,
                  "peak_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
""".replace("import resource", "import json, resource")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def workspace(root: Path, bio_sql: str) -> Path:
    fields = {"email": "email", "bio": "bio"}
    write_workspace(
        root,
        destinations={"hook": hook(batch_size=100)},
        mappings={
            "users": {"model": "users", "destination": "hook", "action": "upsert", "fields": fields}
        },
        sql="select id, email, bio from users",
    )
    warehouse_sql(
        root,
        f"CREATE TABLE users AS SELECT i::BIGINT AS id, 'user' || i || '@example.com' AS email,"
        f" {bio_sql} AS bio FROM range(1, {ROWS + 1}) t(i)",
    )
    return root


def ebbtide(root: Path, receiver: Receiver, *args: str) -> dict[str, Any]:
    """Run the CLI; its exit code, output and peak resident memory (KiB)."""
    command = [sys.executable, "-m", "ebbtide", "-w", str(root), *args]
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, *command],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HOOK_URL": receiver.url, "HOOK_TOKEN": TOKEN, "COLUMNS": "300"},
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    assert "Traceback" not in result["err"], result["err"]
    return result


def test_a_50_mb_value_fails_alone_and_the_next_sync_sends_it_once_fixed(
    tmp_path: Path, receiver: Receiver
) -> None:
    bio = f"CASE WHEN i = {HUGE_KEY} THEN repeat('x', {HUGE_BYTES}) ELSE 'bio ' || i END"
    root = workspace(tmp_path, bio)

    first = ebbtide(root, receiver, "sync", "run", "users", "--json")
    assert first["code"] == 3, first["err"]
    [run] = json.loads(first["out"])
    assert (run["status"], run["failed"], run["loaded_new"]) == ("partial_success", 1, ROWS - 1)
    assert sorted(receiver.keys()) == [k for k in range(1, ROWS + 1) if k != HUGE_KEY]
    assert first["peak_kb"] * 1024 < PEAK_RSS_BYTES

    failed = ebbtide(root, receiver, "runs", "failed", str(run["id"]), "--json")
    [failure] = json.loads(failed["out"])
    assert failure["key"] == HUGE_KEY
    assert failure["error_class"] == "payload_too_large"
    assert "column 'bio' holds 50.0 MiB" in failure["message"]
    assert "max_record_bytes" in failure["message"]
    assert len(failure["payload"] or "") < 1000  # the huge record was never built

    receiver.reset()
    warehouse_sql(root, f"UPDATE users SET bio = 'fixed' WHERE id = {HUGE_KEY}")
    second = ebbtide(root, receiver, "sync", "run", "users", "--json")
    assert second["code"] == 0, second["err"]
    [run] = json.loads(second["out"])
    assert (run["status"], run["loaded_updated"] + run["loaded_new"]) == ("success", 1)
    assert [(r["key"], r["data"]["bio"]) for r in receiver.records] == [(HUGE_KEY, "fixed")]


def test_batches_of_large_records_are_cut_by_bytes(tmp_path: Path, receiver: Receiver) -> None:
    record_bytes = 2**20  # 30 records of 1 MiB: one batch by rows, two by bytes at least
    root = workspace(tmp_path, f"repeat('y', {record_bytes})")
    done = ebbtide(root, receiver, "sync", "run", "users", "--json")
    assert done["code"] == 0, done["err"]
    sizes = [exchange.records for exchange in receiver.exchanges]
    assert sum(sizes) == ROWS and len(sizes) >= 2
    assert max(sizes) <= MAX_BATCH_BYTES // record_bytes


def test_many_large_rows_are_rendered_in_slices_duckdb_can_hold(
    tmp_path: Path, receiver: Receiver
) -> None:
    # 200 rows of 1 MiB: every record fits, but rendered all at once (DuckDB renders 2,048
    # rows at a time) they ran the outbound query out of memory.
    rows = 200
    root = workspace(tmp_path, "repeat(chr(97 + (i % 26)::INTEGER), 1048576) || i")
    warehouse_sql(
        root,
        "INSERT INTO users SELECT i, 'user' || i || '@example.com',"
        f" repeat('z', 1048576) || i FROM range({ROWS + 1}, {rows + 1}) t(i)",
    )
    done = ebbtide(root, receiver, "sync", "run", "users", "--json")
    assert done["code"] == 0, done["err"]
    [run] = json.loads(done["out"])
    assert (run["status"], run["loaded_new"]) == ("success", rows)
    assert sorted(receiver.keys()) == list(range(1, rows + 1))
    assert all(len(r["data"]["bio"]) > 2**20 for r in receiver.records)
