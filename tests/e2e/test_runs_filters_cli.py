"""`runs list` filters and pages the history in the state store, through the real CLI."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Processes, ReceiverProcess, Workspace


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ReceiverProcess]:
    running = ReceiverProcess.start(tmp_path / "received.jsonl", delay_s=0)
    yield running
    running.stop()


def listed(workspace: Workspace, *options: str) -> list[tuple[int, str, str]]:
    done = subprocess.run(
        workspace.cli_args("runs", "list", "--json", *options),
        capture_output=True,
        text=True,
        timeout=60,
        env=workspace.env,
    )
    assert done.returncode == 0, done.stderr
    return [(run["id"], run["trigger"], run["status"]) for run in json.loads(done.stdout)]


def test_runs_list_by_status_and_trigger_and_page_by_page(
    tmp_path: Path, processes: Processes, receiver: ReceiverProcess
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, 50)
    assert workspace.sync(processes, "first").returncode == 0
    reset = subprocess.run(
        workspace.cli_args("reset", "users", "--yes"),
        capture_output=True,
        timeout=60,
        env=workspace.env,
    )
    assert reset.returncode == 0
    assert workspace.sync(processes, "second").returncode == 0

    assert listed(workspace) == [
        (3, "manual", "success"),
        (2, "reset", "success"),
        (1, "manual", "success"),
    ]
    assert listed(workspace, "--trigger", "reset") == [(2, "reset", "success")]
    assert listed(workspace, "--trigger", "manual", "--limit", "1") == [(3, "manual", "success")]
    assert listed(workspace, "--before", "3", "--limit", "1") == [(2, "reset", "success")]
    assert listed(workspace, "--status", "failed") == []
    refused = subprocess.run(
        workspace.cli_args("runs", "list", "--status", "nope"),
        capture_output=True,
        text=True,
        timeout=60,
        env=workspace.env,
    )
    assert refused.returncode == 2 and "nope" in refused.stderr
