"""`ebbtide sync run --all` with one mapping busy: the others run, every result is printed, the
busy one is reported with the run that holds it, and the exit code is the worst of them.

The busy mapping is held by a real sync in another process, stuck mid-load on a receiver that
does not answer.
"""

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
from tests.e2e.harness import Processes, wait_until
from tests.integration.workspace_kit import TOKEN, hook, mapping, users_table, write_workspace

ROWS = 20


@pytest.fixture
def fast() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def stuck() -> Iterator[Receiver]:
    with Receiver() as running:
        running.hang_s = 3600  # the holder stays mid-load until the test kills it
        yield running


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    slow_hook = {**hook(timeout_s=3600), "url": "${SLOW_URL}"}
    write_workspace(
        root,
        destinations={"hook": hook(), "slow": slow_hook},
        mappings={
            "first": mapping("upsert"),
            "held": mapping("upsert", destination="slow"),
            "last": mapping("upsert"),
        },
    )
    users_table(root, ROWS)
    return root


def env(fast: Receiver, stuck: Receiver) -> dict[str, str]:
    return {
        **os.environ,
        "COLUMNS": "300",
        "HOOK_URL": fast.url,
        "SLOW_URL": stuck.url,
        "HOOK_TOKEN": TOKEN,
    }


def cli(workspace: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "ebbtide", "-w", str(workspace), *args]


def hold(processes: Processes, workspace: Path, fast: Receiver, stuck: Receiver) -> int:
    """Start a sync of `held` and wait until it is mid-load; returns its run id."""
    processes.start(
        cli(workspace, "sync", "run", "held"), env(fast, stuck), workspace.parent / "holder"
    )
    wait_until(lambda: stuck.requests, 60, "the holder's first batch")
    listed = subprocess.run(
        cli(workspace, "runs", "list", "held", "--json"),
        capture_output=True,
        text=True,
        timeout=60,
        env=env(fast, stuck),
    )
    [run] = json.loads(listed.stdout)
    assert run["status"] == "running"
    return int(run["id"])


@pytest.mark.parametrize("json_output", [False, True], ids=["table", "json"])
def test_sync_all_runs_every_mapping_and_reports_the_busy_one(
    processes: Processes,
    workspace: Path,
    fast: Receiver,
    stuck: Receiver,
    json_output: bool,
) -> None:
    holder = hold(processes, workspace, fast, stuck)
    args = ["sync", "run", "--all", *(["--json"] if json_output else [])]
    done = processes.start(cli(workspace, *args), env(fast, stuck), workspace.parent / "all")
    done.wait(timeout=120)
    stdout = (workspace.parent / "all.out").read_text()
    stderr = " ".join((workspace.parent / "all.err").read_text().split())

    assert done.returncode == 4, stderr  # busy outranks the successes
    assert f"held: not synced: mapping 'held' is busy: run {holder} holds it" in stderr
    assert "Traceback" not in stderr
    if json_output:
        runs = json.loads(stdout)
        assert [(r["mapping"], r["status"], r["loaded_new"]) for r in runs] == [
            ("first", "success", ROWS),
            ("last", "success", ROWS),
        ]
    else:
        rows = [line for line in stdout.splitlines() if re.search(r"│ (first|last|held) ", line)]
        assert [re.findall(r"│ (first|last|held) ", r)[0] for r in rows] == ["first", "last"]
        assert all("success" in r for r in rows)
    assert sorted(fast.keys()) == sorted(list(range(1, ROWS + 1)) * 2)


def test_sync_all_exits_with_a_failed_runs_code_over_a_busy_one(
    processes: Processes, workspace: Path, fast: Receiver, stuck: Receiver
) -> None:
    hold(processes, workspace, fast, stuck)
    fast.status_for_all = 401  # `first` and `last` fail on bad credentials
    done = processes.start(
        cli(workspace, "sync", "run", "--all", "--json"),
        env(fast, stuck),
        workspace.parent / "all",
    )
    done.wait(timeout=120)
    runs = json.loads((workspace.parent / "all.out").read_text())
    assert [(r["mapping"], r["status"]) for r in runs] == [("first", "failed"), ("last", "failed")]
    assert done.returncode == 1
    assert "held: not synced" in (workspace.parent / "all.err").read_text()
