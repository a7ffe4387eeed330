"""The `ebbtide` command against a receiver that redirects or answers in bad faith: nothing is
reported loaded that the destination did not acknowledge, the person is told what to fix, and
the next sync after the fix delivers everything.

The CLI runs as a subprocess; the hostile receiver serves from a thread of the test process on
127.0.0.1, recording what each path received.
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

from tests.hostile_receiver import HostileReceiver
from tests.integration.workspace_kit import TOKEN, hook, mapping, users_table, write_workspace

ROWS = 12
MAPPING = "users"


@pytest.fixture
def receiver() -> Iterator[HostileReceiver]:
    with HostileReceiver() as running:
        yield running


@pytest.fixture
def elsewhere() -> Iterator[HostileReceiver]:
    with HostileReceiver() as running:
        yield running


def configure(root: Path, url: str) -> None:
    """The URL as a person writes it in ebbtide.yml; the token from the environment."""
    write_workspace(
        root,
        destinations={"hook": hook(url=url, batch_size=100)},
        mappings={MAPPING: mapping("mirror")},
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    users_table(root, ROWS)
    return root


def ebbtide(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ebbtide", "-w", str(workspace), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "400", "HOOK_TOKEN": TOKEN},
    )


def sync(workspace: Path) -> tuple[int, dict[str, Any]]:
    done = ebbtide(workspace, "sync", "run", MAPPING, "--json")
    assert "Traceback" not in done.stderr, done.stderr
    [run] = json.loads(done.stdout)
    return done.returncode, run


def failures(workspace: Path, run_id: int) -> list[dict[str, Any]]:
    done = ebbtide(workspace, "runs", "failed", str(run_id), "--json")
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found


def assert_everything_loads_now(workspace: Path, receiver: HostileReceiver, path: str) -> None:
    code, run = sync(workspace)
    assert (code, run["status"], run["loaded_new"]) == (0, "success", ROWS)
    assert sorted(receiver.keys_received(path)) == list(range(1, ROWS + 1))


def test_a_redirected_url_loads_nothing_names_the_new_url_and_loads_all_once_fixed(
    workspace: Path, receiver: HostileReceiver
) -> None:
    configure(workspace, receiver.url("/ingest"))
    receiver.redirect("/ingest", 301, "/v2/ingest")
    code, run = sync(workspace)

    assert (code, run["status"], run["loaded_new"], run["failed"]) == (1, "failed", 0, ROWS)
    assert receiver.requests_to("/v2/ingest") == []  # no GET followed the 301
    new_url = receiver.url("/v2/ingest")
    for failure in failures(workspace, run["id"]):
        assert failure["error_class"] == "not_found"
        assert new_url in failure["message"]
        assert new_url in failure["recommended_action"]
        assert "`destinations.hook.url`" in failure["recommended_action"]

    configure(workspace, new_url)
    assert_everything_loads_now(workspace, receiver, "/v2/ingest")


def test_a_redirect_to_another_origin_never_reaches_it(
    workspace: Path, receiver: HostileReceiver, elsewhere: HostileReceiver
) -> None:
    configure(workspace, receiver.url("/ingest"))
    receiver.redirect("/ingest", 307, elsewhere.url("/ingest"))
    code, run = sync(workspace)
    assert (code, run["loaded_new"]) == (1, 0)
    (post,) = receiver.requests_to("/ingest")
    assert post.headers["Authorization"] == f"Bearer {TOKEN}"
    assert elsewhere.seen == []


def test_an_answer_naming_keys_in_another_form_loads_nothing_and_says_which_key(
    workspace: Path, receiver: HostileReceiver
) -> None:
    configure(workspace, receiver.url("/ingest"))
    receiver.mode = "key_as_string"
    code, run = sync(workspace)

    assert (code, run["status"], run["loaded_new"]) == (1, "failed", 0)
    assert run["failed_by_class"] == {"server_error": ROWS}
    key = receiver.requests_to("/ingest")[0].records()[0]["key"]
    says = f'names key "{key}" which is not in the batch (sent as {key})'
    assert all(says in f["message"] for f in failures(workspace, run["id"]))

    receiver.mode = "accept"
    receiver.forget()
    assert_everything_loads_now(workspace, receiver, "/ingest")


def test_a_2xx_html_page_loads_nothing(workspace: Path, receiver: HostileReceiver) -> None:
    configure(workspace, receiver.url("/ingest"))
    receiver.mode = "garbage_html"
    code, run = sync(workspace)
    assert (code, run["status"], run["loaded_new"]) == (1, "failed", 0)
    messages = {f["message"] for f in failures(workspace, run["id"])}
    assert len(messages) == 1
    assert "not the webhook protocol's (it is not JSON" in messages.pop()

    receiver.mode = "accept"
    receiver.forget()
    assert_everything_loads_now(workspace, receiver, "/ingest")
