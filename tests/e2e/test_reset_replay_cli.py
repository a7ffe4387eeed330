"""`ebbtide reset`, `ebbtide replay` and `ebbtide journals prune` as a person runs them: the real
CLI in a subprocess (no terminal unless a test gives it one), its output and exit code, syncing
a DuckDB warehouse to the demo receiver on 127.0.0.1."""

from __future__ import annotations

import getpass
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ebbtide.demo.receiver import Receiver
from tests.e2e.harness import stopped_outside_a_transaction, wait_until
from tests.integration.workspace_kit import (
    TOKEN,
    expected_data,
    hook,
    mapping,
    users_table,
    warehouse_sql,
    write_workspace,
)

ROWS = 30
MAPPING = "users_mirror"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    write_workspace(
        root,
        destinations={"hook": hook(batch_size=10, timeout_s=30)},
        mappings={MAPPING: mapping("mirror")},
    )
    users_table(root, ROWS)
    return root


def env(receiver: Receiver) -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "HOOK_URL": receiver.url, "HOOK_TOKEN": TOKEN}


def args(workspace: Path, *rest: str) -> list[str]:
    return [sys.executable, "-m", "ebbtide", "-w", str(workspace), *rest]


def ebbtide(workspace: Path, receiver: Receiver, *rest: str) -> subprocess.CompletedProcess[str]:
    """The command with no terminal: stdin is /dev/null, as in a script or CI job."""
    return subprocess.run(
        args(workspace, *rest),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env=env(receiver),
    )


def flat(text: str) -> str:
    """Output with line wrapping undone, to look for a sentence in it."""
    return " ".join(text.split())


def sync(workspace: Path, receiver: Receiver) -> tuple[int, dict[str, Any]]:
    done = ebbtide(workspace, receiver, "sync", "run", MAPPING, "--json")
    assert "Traceback" not in done.stderr
    [run] = json.loads(done.stdout)
    return done.returncode, run


def runs(workspace: Path, receiver: Receiver) -> list[dict[str, Any]]:
    """`runs list --json`, oldest first."""
    done = ebbtide(workspace, receiver, "runs", "list", MAPPING, "--json")
    assert done.returncode == 0, done.stderr
    return list(reversed(json.loads(done.stdout)))


def received(receiver: Receiver) -> dict[Any, tuple[str, Any]]:
    return {r["key"]: (r["op"], r["data"]) for r in receiver.records}


def snapshot_file(workspace: Path) -> Path:
    return workspace / ".ebbtide" / "snapshots" / f"{MAPPING}.duckdb"


def journal(workspace: Path, run_id: int) -> Path:
    return workspace / ".ebbtide" / "journals" / MAPPING / f"{run_id:012d}.parquet"


def assert_nothing_new_to_send(workspace: Path, receiver: Receiver) -> None:
    receiver.reset()
    code, run = sync(workspace, receiver)
    assert code == 0, run["error"]
    assert (run["added"], run["updated"], run["deleted"], run["after_reset"]) == (0, 0, 0, False)
    assert receiver.requests == 0


# -- reset ------------------------------------------------------------------------------------


def test_reset_without_yes_and_without_a_terminal_refuses_with_exit_2_and_changes_nothing(
    workspace: Path, receiver: Receiver
) -> None:
    assert sync(workspace, receiver)[0] == 0

    done = ebbtide(workspace, receiver, "reset", MAPPING)

    assert done.returncode == 2
    said = flat(done.stderr)
    assert f"its next sync sends all {ROWS} record(s) of model 'users'" in said
    assert "can no longer be detected as deleted" in said
    assert f"pass --yes to reset {MAPPING}" in said
    assert "Nothing was changed" in said
    assert "Traceback" not in done.stderr
    assert snapshot_file(workspace).exists()
    assert [r["trigger"] for r in runs(workspace, receiver)] == ["manual"]
    assert_nothing_new_to_send(workspace, receiver)


def test_reset_yes_json_records_who_and_the_next_sync_sends_every_row(
    workspace: Path, receiver: Receiver
) -> None:
    receiver.reject(7)
    assert sync(workspace, receiver)[0] == 3  # partial success: 7 is pending
    receiver.clear_behaviours()

    done = ebbtide(workspace, receiver, "reset", MAPPING, "--yes", "--json")

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {k: result[k] for k in ("mapping", "model", "destination")} == {
        "mapping": MAPPING,
        "model": "users",
        "destination": "hook",
    }
    assert (result["model_rows"], result["snapshot_records"], result["pending_failures"]) == (
        ROWS,
        ROWS - 1,
        1,
    )
    reset = result["run"]
    assert (reset["trigger"], reset["status"], reset["actor"]) == (
        "reset",
        "success",
        getpass.getuser(),
    )
    assert not snapshot_file(workspace).exists()

    listed = ebbtide(
        workspace, receiver, "records", "failed", MAPPING, "--status", "reset", "--json"
    )
    assert listed.returncode == 0, listed.stderr
    assert [(r["key"], r["status"]) for r in json.loads(listed.stdout)] == [(7, "reset")]
    pending = ebbtide(workspace, receiver, "records", "failed", MAPPING, "--json")
    assert json.loads(pending.stdout) == []

    receiver.reset()
    code, run = sync(workspace, receiver)
    assert code == 0, run["error"]
    assert (run["added"], run["loaded_new"], run["after_reset"]) == (ROWS, ROWS, True)
    assert received(receiver) == {i: ("added", expected_data(i)) for i in range(1, ROWS + 1)}
    history = runs(workspace, receiver)
    assert [(r["trigger"], r["after_reset"]) for r in history] == [
        ("manual", False),
        ("reset", False),
        ("manual", True),
    ]
    assert history[1]["actor"] == getpass.getuser()


def test_reset_while_a_sync_of_the_mapping_runs_exits_4_and_changes_nothing(
    workspace: Path, receiver: Receiver
) -> None:
    assert sync(workspace, receiver)[0] == 0
    warehouse_sql(workspace, "UPDATE users SET plan = 'gold' WHERE id <= 3")
    receiver.hang_s = 3.0
    receiver.reset()
    syncing = subprocess.Popen(
        args(workspace, "sync", "run", MAPPING, "--json"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(receiver),
    )
    try:
        deadline = time.monotonic() + 60
        while receiver.requests == 0:  # the sync holds the lease and waits on the receiver
            assert syncing.poll() is None, syncing.communicate()
            assert time.monotonic() < deadline, "the sync never reached the receiver"
            time.sleep(0.02)
        # Held there (stopped, its lease kept) while the reset runs, however long a busy
        # machine makes that: the receiver's hang alone might end first.
        wait_until(
            lambda: stopped_outside_a_transaction(syncing, workspace / ".ebbtide" / "state.db"),
            30,
            "the sync to stop outside a state-store transaction",
        )
        try:
            done = ebbtide(workspace, receiver, "reset", MAPPING, "--yes")
        finally:
            syncing.send_signal(signal.SIGCONT)

        assert done.returncode == 4
        said = flat(done.stderr)
        assert "cannot reset while the mapping is syncing" in said
        assert "nothing was changed" in said
        assert "Traceback" not in done.stderr
        assert snapshot_file(workspace).exists()
    finally:
        receiver.hang_s = 0.0
        out, err = syncing.communicate(timeout=60)
    assert syncing.returncode == 0, err
    [held] = json.loads(out)
    assert (held["updated"], held["loaded_updated"]) == (3, 3)
    assert [r["trigger"] for r in runs(workspace, receiver)] == ["manual", "manual"]
    assert_nothing_new_to_send(workspace, receiver)


def test_unknown_mapping_reset_exits_2_naming_it(workspace: Path, receiver: Receiver) -> None:
    done = ebbtide(workspace, receiver, "reset", "users_mirorr", "--yes")
    assert done.returncode == 2
    assert "users_mirorr" in done.stderr and "Traceback" not in done.stderr


def test_changed_primary_key_fails_every_sync_until_reset_then_all_rows_are_sent(
    workspace: Path, receiver: Receiver
) -> None:
    assert sync(workspace, receiver)[0] == 0
    config = workspace / "ebbtide.yml"
    config.write_text(config.read_text().replace("primary_key: id", "primary_key: email"))
    receiver.reset()

    code, refused = sync(workspace, receiver)

    assert code == 1
    assert refused["status"] == "failed"
    assert f"`ebbtide reset {MAPPING}`" in refused["error"]
    assert receiver.requests == 0
    assert sync(workspace, receiver)[0] == 1  # still refused

    assert ebbtide(workspace, receiver, "reset", MAPPING, "--yes").returncode == 0
    code, run = sync(workspace, receiver)
    assert code == 0, run["error"]
    assert (run["added"], run["deleted"], run["after_reset"]) == (ROWS, 0, True)
    assert sorted(receiver.keys()) == sorted(f"user{i}@example.com" for i in range(1, ROWS + 1))


def answer_at_the_prompt(workspace: Path, receiver: Receiver, answer: str) -> tuple[int, str]:
    """`ebbtide reset` at a terminal (a pseudo-terminal as its stdin), answering its question."""
    primary, secondary = pty.openpty()
    try:
        process = subprocess.Popen(
            args(workspace, "reset", MAPPING),
            stdin=secondary,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(receiver),
        )
        os.close(secondary)
        assert process.stderr is not None
        prompt = ""
        deadline = time.monotonic() + 60
        while "[y/N]" not in prompt:  # answer once the question is asked
            assert time.monotonic() < deadline, f"no question asked: {prompt!r}"
            ready, _, _ = select.select([process.stderr], [], [], 0.5)
            if ready:
                prompt += os.read(process.stderr.fileno(), 4096).decode()
        os.write(primary, f"{answer}\n".encode())
        rest = process.communicate(timeout=60)[1]
    finally:
        os.close(primary)
    return process.returncode, flat(prompt + rest)


def test_reset_at_a_terminal_asks_and_no_changes_nothing_while_yes_resets(
    workspace: Path, receiver: Receiver
) -> None:
    assert sync(workspace, receiver)[0] == 0

    code, said = answer_at_the_prompt(workspace, receiver, "n")

    assert code == 1
    assert f"Reset {MAPPING}?" in said and "nothing was changed" in said
    assert snapshot_file(workspace).exists()
    assert [r["trigger"] for r in runs(workspace, receiver)] == ["manual"]

    code, said = answer_at_the_prompt(workspace, receiver, "y")

    assert code == 0, said
    assert [r["trigger"] for r in runs(workspace, receiver)] == ["manual", "reset"]
    receiver.reset()
    assert sync(workspace, receiver)[1]["loaded_new"] == ROWS


# -- replay -----------------------------------------------------------------------------------


def test_replay_without_yes_and_without_a_terminal_refuses_and_sends_nothing(
    workspace: Path, receiver: Receiver
) -> None:
    first = sync(workspace, receiver)[1]
    receiver.reset()

    done = ebbtide(workspace, receiver, "replay", str(first["id"]))

    assert done.returncode == 2
    said = flat(done.stderr)
    assert f"Replay run {first['id']} of mapping '{MAPPING}'" in said
    assert f"every record of that run ({ROWS})" in said
    assert f"pass --yes to replay run {first['id']}" in said
    assert receiver.requests == 0
    assert [r["trigger"] for r in runs(workspace, receiver)] == ["manual"]


def test_replay_yes_json_resends_the_run_as_sent_as_a_new_run(
    workspace: Path, receiver: Receiver
) -> None:
    first = sync(workspace, receiver)[1]
    original = received(receiver)
    warehouse_sql(workspace, "UPDATE users SET email = 'new' || id || '@example.com'")
    assert sync(workspace, receiver)[1]["updated"] == ROWS
    receiver.reset()

    done = ebbtide(workspace, receiver, "replay", str(first["id"]), "--yes", "--json")

    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert (run["trigger"], run["replay_of"], run["actor"]) == (
        "replay",
        first["id"],
        getpass.getuser(),
    )
    assert (run["status"], run["added"], run["loaded_new"], run["failed"]) == (
        "success",
        ROWS,
        ROWS,
        0,
    )
    assert received(receiver) == original  # the old emails, exactly as first sent
    # The destination has the old emails again: the next sync sends the current ones.
    receiver.reset()
    code, after = sync(workspace, receiver)
    assert (code, after["updated"]) == (0, ROWS)
    assert {data["email"] for _, data in received(receiver).values()} == {
        f"new{i}@example.com" for i in range(1, ROWS + 1)
    }


def test_replay_latest_resends_current_data_and_counts_deleted_keys_as_skipped(
    workspace: Path, receiver: Receiver
) -> None:
    first = sync(workspace, receiver)[1]
    warehouse_sql(
        workspace,
        "UPDATE users SET email = 'new1@example.com' WHERE id = 1",
        "DELETE FROM users WHERE id > 25",
    )
    receiver.reset()

    done = ebbtide(workspace, receiver, "replay", str(first["id"]), "--latest", "--yes", "--json")

    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert (run["updated"], run["skipped"], run["loaded_updated"]) == (25, 5, 25)
    assert received(receiver)[1] == ("updated", expected_data(1, "new1@example.com"))
    assert sorted(receiver.keys()) == list(range(1, 26))


def test_replay_only_failed_resends_just_the_rejected_records(
    workspace: Path, receiver: Receiver
) -> None:
    receiver.reject(4)
    receiver.reject(19)
    code, first = sync(workspace, receiver)
    assert (code, first["failed"]) == (3, 2)
    receiver.reset()

    still = ebbtide(workspace, receiver, "replay", str(first["id"]), "--only-failed", "--yes")
    assert still.returncode == 1  # every replayed record refused again: the replay failed
    receiver.clear_behaviours()
    receiver.reset()
    done = ebbtide(
        workspace, receiver, "replay", str(first["id"]), "--only-failed", "--yes", "--json"
    )

    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert (run["loaded_new"], run["replay_of"]) == (2, first["id"])
    assert sorted(receiver.keys()) == [4, 19]
    assert_nothing_new_to_send(workspace, receiver)


def test_journals_prune_json_then_replay_of_a_pruned_run_exits_2_saying_so(
    workspace: Path, receiver: Receiver
) -> None:
    first = sync(workspace, receiver)[1]
    kept = ebbtide(workspace, receiver, "journals", "prune", "--json")
    assert json.loads(kept.stdout) == {"files": 0, "bytes": 0, "keep_days": 30}
    assert journal(workspace, first["id"]).exists()
    size = journal(workspace, first["id"]).stat().st_size

    pruned = ebbtide(workspace, receiver, "journals", "prune", "--keep-days", "0", "--json")

    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout) == {"files": 1, "bytes": size, "keep_days": 0}
    assert not journal(workspace, first["id"]).exists()
    receiver.reset()
    done = ebbtide(workspace, receiver, "replay", str(first["id"]), "--yes")
    assert done.returncode == 2
    assert f"the journal of run {first['id']} was pruned" in flat(done.stderr)
    assert "Traceback" not in done.stderr
    assert receiver.requests == 0
    assert [r["trigger"] for r in runs(workspace, receiver)] == ["manual"]


def test_journals_prune_without_json_says_how_much_it_removed(
    workspace: Path, receiver: Receiver
) -> None:
    sync(workspace, receiver)
    done = ebbtide(workspace, receiver, "journals", "prune", "--keep-days", "0")
    assert done.returncode == 0, done.stderr
    assert "removed 1 journal(s)" in done.stdout and "older than 0 days" in done.stdout


def test_replay_of_a_run_with_nothing_to_replay_exits_2_saying_why(
    workspace: Path, receiver: Receiver
) -> None:
    sync(workspace, receiver)
    idle = sync(workspace, receiver)[1]
    reset = json.loads(ebbtide(workspace, receiver, "reset", MAPPING, "--yes", "--json").stdout)
    cases = {
        str(idle["id"]): f"run {idle['id']} sent no records",
        str(reset["run"]["id"]): "is a reset: it sent nothing",
        "999": "there is no run 999",
    }
    receiver.reset()

    for run_id, reason in cases.items():
        done = ebbtide(workspace, receiver, "replay", run_id, "--yes")
        assert done.returncode == 2, (run_id, done.stderr)
        assert reason in flat(done.stderr)
        assert "Traceback" not in done.stderr
    assert receiver.requests == 0
