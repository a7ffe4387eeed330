"""Keys, messages, codes and payloads that look like Rich markup, shown by every view of the
`ebbtide` command exactly as the warehouse and the destination wrote them.

A key `[/bold]` once crashed `sync run` (after its run was committed), `runs show`, `runs
failed` and `records failed`: Rich read it as a closing tag with nothing to close.
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
from tests.integration.workspace_kit import TOKEN, hook, mapping, warehouse_sql, write_workspace

KEYS = ["[/bold]", "[red]", "[link=https://evil.example/]x[/link]", "plain-1", "plain-2"]
REJECTED = {
    "[/bold]": ("[/]", "email [bold]must[/bold] be valid [/red]"),
    "[red]": ("E[red]42", "[link=https://evil.example/]click[/link]"),
    "[link=https://evil.example/]x[/link]": ("[/bold]", "[/bold] closes nothing"),
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        for key, (code, message) in REJECTED.items():
            running.reject(key, code=code, message=message)
        yield running


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    write_workspace(
        tmp_path,
        destinations={"hook": hook(batch_size=2)},
        mappings={"users": mapping("upsert")},
    )
    values = ", ".join(f"('{k}', '[/i]{k}@example.com', 'pro', 1.5)" for k in KEYS)
    warehouse_sql(
        tmp_path,
        f"CREATE TABLE users AS SELECT * FROM (VALUES {values}) t(id, email, plan, ltv)",
    )
    return tmp_path


def ebbtide(workspace: Path, receiver: Receiver, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "ebbtide", "-w", str(workspace), *args],
        capture_output=True,
        text=True,
        timeout=60,
        # Wide enough that no cell wraps: each text must appear whole, on one line.
        env={**os.environ, "COLUMNS": "500", "HOOK_URL": receiver.url, "HOOK_TOKEN": TOKEN},
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert "internal error" not in done.stderr, done.stderr
    return done


def assert_shows_every_text(output: str, *, codes: bool = True, payloads: bool = False) -> None:
    for key, (code, message) in REJECTED.items():
        assert json.dumps(key) in output, key
        assert message in output, message
        if codes:
            assert code in output, code
        if payloads:
            assert f"[/i]{key}@example.com" in output


def test_markup_in_keys_messages_and_payloads_is_shown_as_text_by_every_view(
    workspace: Path, receiver: Receiver
) -> None:
    plan = ebbtide(workspace, receiver, "sync", "plan", "users", "--samples", "5")
    assert plan.returncode == 0, plan.stderr
    assert '"[/i][link=https://evil.example/]x[/link]@example.com"' in plan.stdout

    done = ebbtide(workspace, receiver, "sync", "run", "users")
    assert done.returncode == 3, done.stderr  # the run's own exit code: partial success
    for key, (_, message) in REJECTED.items():
        assert json.dumps(key) in done.stdout and message in done.stdout
    run_id = re.search(r"ebbtide runs show (\d+)", done.stdout)
    assert run_id is not None, done.stdout
    assert sorted(receiver.keys()) == ["plain-1", "plain-2"]

    shown = ebbtide(workspace, receiver, "runs", "show", run_id.group(1))
    assert shown.returncode == 0, shown.stderr
    assert_shows_every_text(shown.stdout, codes=False)
    assert "[/i]" in shown.stdout  # a sample payload, as sent

    failed = ebbtide(workspace, receiver, "runs", "failed", run_id.group(1))
    assert failed.returncode == 0, failed.stderr
    assert_shows_every_text(failed.stdout, payloads=True)

    pending = ebbtide(workspace, receiver, "records", "failed", "users")
    assert pending.returncode == 0, pending.stderr
    assert_shows_every_text(pending.stdout, codes=False)


def test_markup_in_a_run_error_is_printed_as_text_with_the_runs_exit_code(
    tmp_path: Path, receiver: Receiver
) -> None:
    write_workspace(
        tmp_path,
        destinations={"hook": hook()},
        mappings={"users": mapping("upsert")},
        sql='select id, email, plan, ltv from users where "[/bold]" = 1',
    )
    warehouse_sql(
        tmp_path, "CREATE TABLE users AS SELECT 1 AS id, 'a' AS email, 'b' AS plan, 2 AS ltv"
    )
    done = ebbtide(tmp_path, receiver, "sync", "run", "users")
    assert done.returncode == 1, done.stderr  # the failed run's exit code
    said = " ".join(done.stderr.split())
    assert "users: the model's SQL failed on DuckDB" in said and '"[/bold]"' in said
    run_id = ebbtide(tmp_path, receiver, "runs", "list", "--json")
    [run] = json.loads(run_id.stdout)
    shown = ebbtide(tmp_path, receiver, "runs", "show", str(run["id"]))
    assert shown.returncode == 0 and '"[/bold]"' in shown.stdout
