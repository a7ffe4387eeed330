"""`ebbtide serve --port 0` as a real process: its REST API answers a token made with the CLI,
takes a "sync now", and shows the run; SIGTERM stops both and exits 0.

Every wait is for a line serve prints or a run the API lists.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import (
    Processes,
    ReceiverProcess,
    Serve,
    Workspace,
    receiver_fixture,
    wait_until,
)

LISTENING = re.compile(r"api listening on (http://\S+)")

receiver = receiver_fixture(delay_s=0)


def create_token(workspace: Workspace, scope: str) -> str:
    done = workspace.cli("tokens", "create", "--scope", scope, "--name", "e2e", "--json")
    assert done.returncode == 0, done.stderr
    token: str = json.loads(done.stdout)["token"]
    return token


def finished_runs(client: httpx.Client) -> list[dict[str, Any]]:
    answer = client.get("/api/v1/runs", params={"mapping": "users"})
    assert answer.status_code == 200, answer.text
    return [run for run in answer.json() if run["status"] != "running"]


def test_serve_api_lists_runs_and_takes_a_sync_now(
    tmp_path: Path, processes: Processes, receiver: ReceiverProcess
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, rows=40)
    workspace.configure(schedule="manual")
    serve = Serve(workspace, processes, "serve", "--port", "0")
    serve.wait_line("api listening on http://127.0.0.1:")
    [url] = LISTENING.findall(serve.text())
    token = create_token(workspace, "write")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        assert client.get("/api/v1/runs").json() == []
        assert httpx.get(f"{url}/api/v1/runs", timeout=30).status_code == 401
        asked = client.post("/api/v1/mappings/users/sync")
        assert asked.status_code == 202
        assert asked.json()["request"] == "queued"
        [run] = wait_until(lambda: finished_runs(client), 120, f"the run in {serve.log}")
    assert run["status"] == "success" and run["trigger"] == "manual"
    assert run["actor"] == "api: e2e" and receiver.count(run["id"]) == 40
    assert serve.stop() == 0
    assert "stopped" in serve.text()
    assert token not in serve.text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=5)
