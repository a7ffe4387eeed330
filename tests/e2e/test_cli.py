"""The `ebbtide` command as a person runs it: a subprocess, its output and its exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from ebbtide.services.workspace_init import init_workspace
from ebbtide.state.store import SqlStateStore

RUN_KEYS = {
    "id",
    "mapping",
    "status",
    "trigger",
    "started_at",
    "finished_at",
    "duration_s",
    "extracted",
    "added",
    "updated",
    "deleted",
    "loaded_new",
    "loaded_updated",
    "loaded_deleted",
    "failed",
}


def ebbtide(
    workspace: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ebbtide", "-w", str(workspace), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    init_workspace(root, demo=True)
    return root


def test_validate_accepts_the_demo_workspace(workspace: Path) -> None:
    done = ebbtide(workspace, "validate", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["mappings"] == 3


def test_validate_names_file_line_and_key_of_a_typo(workspace: Path) -> None:
    config = workspace / "ebbtide.yml"
    config.write_text(config.read_text().replace("primary_key: order_id", "primay_key: order_id"))
    line = next(
        i for i, text in enumerate(config.read_text().splitlines(), 1) if "primay_key" in text
    )
    done = ebbtide(workspace, "validate")
    assert done.returncode == 2
    assert f"ebbtide.yml:{line}: models.orders.primay_key: unknown key 'primay_key'" in done.stderr
    assert "did you mean 'primary_key'" in done.stderr
    assert "Traceback" not in done.stderr


def test_secret_from_environment_never_shown(workspace: Path) -> None:
    secret = "s3cr3t-token-value"
    done = ebbtide(
        workspace,
        "sync",
        "run",
        "users_to_crm",
        "--json",
        env={"DEMO_HOOK_TOKEN": secret, "DEMO_HOOK_URL": "http://127.0.0.1:9/x" + secret},
    )
    assert done.returncode == 1
    assert secret not in done.stdout + done.stderr
    shown = ebbtide(workspace, "runs", "show", "1", "--json")
    assert secret not in shown.stdout
    assert json.loads(shown.stdout)["failures"][0]["error_class"] == "network"


def test_sync_run_then_history_in_json(workspace: Path) -> None:
    first = ebbtide(workspace, "sync", "run", "users_to_archive", "--json")
    assert first.returncode == 0, first.stderr
    [run] = json.loads(first.stdout)
    assert set(run) >= RUN_KEYS
    assert (run["status"], run["extracted"], run["added"], run["loaded_new"]) == (
        "success",
        3000,
        3000,
        3000,
    )
    lines = (workspace / "out" / "users.jsonl").read_text().splitlines()
    assert len(lines) == 3000

    with duckdb.connect(str(workspace / "warehouse.duckdb")) as con:
        con.execute("UPDATE users SET name = 'Renamed' WHERE id <= 5")
        con.execute("DELETE FROM users WHERE id > 2990")
    plan = ebbtide(workspace, "sync", "plan", "users_to_archive", "--json")
    assert plan.returncode == 0, plan.stderr
    planned = json.loads(plan.stdout)
    assert (planned["updated"], planned["deleted"], planned["would_send"]) == (5, 10, 15)
    assert (
        len((workspace / "out" / "users.jsonl").read_text().splitlines()) == 3000
    )  # plan sent nothing

    second = ebbtide(workspace, "sync", "run", "users_to_archive", "--json")
    [run2] = json.loads(second.stdout)
    assert (run2["updated"], run2["deleted"], run2["loaded_updated"], run2["loaded_deleted"]) == (
        5,
        10,
        5,
        10,
    )

    listed = json.loads(ebbtide(workspace, "runs", "list", "--json").stdout)
    assert [r["id"] for r in listed] == [run2["id"], run["id"]]
    shown = ebbtide(workspace, "runs", "show", str(run2["id"]))
    assert shown.returncode == 0
    assert "users_to_archive" in shown.stdout and "success" in shown.stdout


def test_unreachable_destination_fails_with_exit_1_and_an_explanation(workspace: Path) -> None:
    done = ebbtide(
        workspace, "sync", "run", "users_to_crm", env={"DEMO_HOOK_URL": "http://127.0.0.1:9/none"}
    )
    assert done.returncode == 1
    assert "network" in done.stdout
    assert "check the URL" in done.stdout + done.stderr


def test_busy_mapping_exits_4(workspace: Path) -> None:
    store = SqlStateStore("sqlite:///.ebbtide/state.db", workspace)
    store.start_run("users_to_archive", "manual", lease_ttl_s=600)
    done = ebbtide(workspace, "sync", "run", "users_to_archive")
    assert done.returncode == 4
    assert "busy" in done.stderr


def test_bad_usage_exits_2(workspace: Path) -> None:
    assert ebbtide(workspace, "sync", "run").returncode == 2
    unknown = ebbtide(workspace, "sync", "run", "users_to_arcive")
    assert unknown.returncode == 2
    assert "did you mean 'users_to_archive'" in unknown.stderr
