"""Failed records as a person finds them with the `ebbtide` command: a subprocess, its output
and its exit code, against the real receiver on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ebbtide.demo.receiver import Receiver
from tests.integration.workspace_kit import TOKEN, hook, mapping, users_table, write_workspace

ROWS = 30
FAILED_KEYS = {"key", "operation", "error_class", "code", "http_status", "message", "payload"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def workspace(tmp_path: Path, receiver: Receiver) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    write_workspace(
        root,
        destinations={"hook": hook(batch_size=10)},
        mappings={"users_mirror": mapping("mirror")},
    )
    users_table(root, ROWS)
    return root


def ebbtide(workspace: Path, receiver: Receiver, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ebbtide", "-w", str(workspace), *args],
        capture_output=True,
        text=True,
        timeout=60,
        # Wide enough that no table cell wraps a recommended action.
        env={**os.environ, "COLUMNS": "400", "HOOK_URL": receiver.url, "HOOK_TOKEN": TOKEN},
    )


def sync(workspace: Path, receiver: Receiver) -> tuple[int, dict[str, object]]:
    done = ebbtide(workspace, receiver, "sync", "run", "users_mirror", "--json")
    [run] = json.loads(done.stdout)
    return done.returncode, run


def reject_some(receiver: Receiver) -> None:
    for key in (3, 17):
        receiver.reject(key, code="INVALID_EMAIL", message="email: not a valid address")
    receiver.reject(25, code="DUPLICATE", message="already exists", error_class="conflict")


def test_partial_success_exits_3_and_runs_show_groups_failures_with_actions(
    workspace: Path, receiver: Receiver
) -> None:
    reject_some(receiver)
    done = ebbtide(workspace, receiver, "sync", "run", "users_mirror")
    assert done.returncode == 3, done.stderr
    assert "partial_success" in done.stdout
    run_id = re.search(r"ebbtide runs show (\d+)", done.stdout)
    assert run_id is not None, done.stdout

    shown = ebbtide(workspace, receiver, "runs", "show", run_id.group(1))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    validation = next(line for line in lines if "email: not a valid address" in line)
    assert re.search(r"│\s*2\s*│", validation)  # the group's count
    assert "3, 17" in validation  # sample keys
    assert "mappings.users_mirror.fields.email" in validation  # recommended action
    conflict = next(line for line in lines if "already exists" in line)
    assert re.search(r"│\s*1\s*│", conflict) and "25" in conflict
    assert "use mode upsert" in conflict
    assert "partial_success" in shown.stdout


def test_runs_failed_json_lists_every_failed_record_with_its_details(
    workspace: Path, receiver: Receiver
) -> None:
    reject_some(receiver)
    code, run = sync(workspace, receiver)
    assert code == 3 and run["status"] == "partial_success"
    assert run["failed_by_class"] == {"validation": 2, "conflict": 1}

    done = ebbtide(workspace, receiver, "runs", "failed", str(run["id"]), "--json")
    assert done.returncode == 0, done.stderr
    failures = {f["key"]: f for f in json.loads(done.stdout)}
    assert set(failures) == {3, 17, 25}
    assert all(FAILED_KEYS | {"recommended_action"} <= set(f) for f in failures.values())
    three = failures[3]
    assert (three["operation"], three["error_class"], three["code"]) == (
        "added",
        "validation",
        "INVALID_EMAIL",
    )
    assert three["message"] == "email: not a valid address"
    assert json.loads(three["payload"])["data"]["email"] == "user3@example.com"
    assert "mappings.users_mirror.fields.email" in three["recommended_action"]
    assert failures[25]["error_class"] == "conflict"


def test_records_failed_json_tracks_failures_across_syncs(
    workspace: Path, receiver: Receiver
) -> None:
    reject_some(receiver)
    first_code, first = sync(workspace, receiver)
    second_code, second = sync(workspace, receiver)  # only the 3 are sent: none loads
    assert (first_code, second_code) == (3, 1)
    assert (second["status"], second["retried"], second["added"]) == ("failed", 3, 3)

    done = ebbtide(workspace, receiver, "records", "failed", "users_mirror", "--json")
    assert done.returncode == 0, done.stderr
    records = {r["key"]: r for r in json.loads(done.stdout)}
    assert set(records) == {3, 17, 25}
    for record in records.values():
        assert (record["status"], record["failed_syncs"]) == ("pending", 2)
        assert record["last_run_id"] == second["id"]
        assert record["first_failed_at"] < record["last_failed_at"]
        assert record["recommended_action"]
    assert records[17]["message"] == "email: not a valid address"

    receiver.clear_behaviours()
    receiver.reject(25, code="DUPLICATE", message="already exists", error_class="conflict")
    third_code, third = sync(workspace, receiver)
    assert (third_code, third["status"], third["loaded_new"]) == (3, "partial_success", 2)
    pending = ebbtide(workspace, receiver, "records", "failed", "users_mirror", "--json")
    assert [r["key"] for r in json.loads(pending.stdout)] == [25]
    resolved = ebbtide(
        workspace, receiver, "records", "failed", "users_mirror", "--json", "--status", "resolved"
    )
    assert sorted(r["key"] for r in json.loads(resolved.stdout)) == [3, 17]


def test_exit_codes_tell_success_partial_success_and_failure_apart(
    workspace: Path, receiver: Receiver
) -> None:
    receiver.status_for_all = 401
    failed = ebbtide(workspace, receiver, "sync", "run", "users_mirror")
    assert failed.returncode == 1
    assert "destinations.hook.headers" in failed.stdout  # the recommended action
    assert TOKEN not in failed.stdout + failed.stderr
    assert "Traceback" not in failed.stderr

    receiver.clear_behaviours()
    receiver.reject(4)
    assert ebbtide(workspace, receiver, "sync", "run", "users_mirror").returncode == 3
    receiver.clear_behaviours()
    assert ebbtide(workspace, receiver, "sync", "run", "users_mirror").returncode == 0
