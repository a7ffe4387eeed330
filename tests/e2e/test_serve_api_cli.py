"""`ebbtide serve --port 0` as a real process, driven through its REST API as an operator would:
a token made with the CLI, "sync now", replay and cancel of runs, a running sync's progress as
Server-Sent Events, /readyz across edits of ebbtide.yml, /metrics; SIGTERM stops it, exit 0.

Every wait is for a line serve prints, a run the history lists, a record the receiver got or an
HTTP answer; a sync is held mid-load by the receiver (`--hold-after`, released by SIGUSR1).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import (
    BATCH_SIZE,
    CONCURRENCY,
    MAPPING,
    Processes,
    ReceiverProcess,
    Serve,
    Workspace,
    receiver_fixture,
    wait_until,
)

STARTED = re.compile(r"started (\S+) run (\d+) ")
# Generous: four tests share two cores, under `make stress-e2e` with busy loops beside them.
TIMEOUT_S = 120

receiver = receiver_fixture(delay_s=0)


def create_token(workspace: Workspace, scope: str, name: str = "ops") -> str:
    done = workspace.cli("tokens", "create", "--scope", scope, "--name", name, "--json")
    assert done.returncode == 0, done.stderr
    token: str = json.loads(done.stdout)["token"]
    return token


@contextmanager
def api_client(serve: Serve, workspace: Workspace) -> Iterator[httpx.Client]:
    """A client of serve's REST API with a write token named `ops`."""
    headers = {"Authorization": f"Bearer {create_token(workspace, 'write')}"}
    with httpx.Client(base_url=serve.api_url(), headers=headers, timeout=TIMEOUT_S) as client:
        yield client


def sync_now(client: httpx.Client) -> None:
    asked = client.post(f"/api/v1/mappings/{MAPPING}/sync")
    assert asked.status_code == 202, asked.text


def finished_runs(client: httpx.Client) -> list[dict[str, Any]]:
    answer = client.get("/api/v1/runs", params={"mapping": MAPPING})
    assert answer.status_code == 200, answer.text
    return [run for run in answer.json() if run["status"] != "running"]


def started_run(serve: Serve) -> int:
    """The id of the first run serve said it started."""
    found = wait_until(
        lambda: serve.seen(lambda: STARTED.search(serve.text())),
        TIMEOUT_S,
        f"a run to start, in {serve.log}:\n{serve.text()}",
    )
    return int(found.group(2))


def progress_in_load(client: httpx.Client, run_id: int) -> dict[str, Any]:
    """The run's progress once it reports its load phase."""

    def look() -> dict[str, Any] | None:
        answer = client.get(f"/api/v1/runs/{run_id}/progress")
        assert answer.status_code == 200, answer.text
        progress: dict[str, Any] = answer.json()
        return progress if progress["phase"] == "load" else None

    found: dict[str, Any] = wait_until(look, TIMEOUT_S, f"run {run_id} to report its load")
    return found


def next_event(lines: Iterator[str]) -> tuple[str, dict[str, Any]]:
    """The next Server-Sent Event: its name and its JSON data (comments are skipped)."""
    kind, data = "", ""
    for line in lines:
        if line.startswith("event:"):
            kind = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data = line.removeprefix("data:").strip()
        elif not line and kind:
            return kind, json.loads(data)
    raise AssertionError("the event stream ended before its `finished` event")


def edit(file: Path, text: str) -> None:
    """Save `file` as an editor does, at once: serve never reads it half written."""
    draft = file.with_name(f".{file.name}.swp")
    draft.write_text(text)
    os.replace(draft, file)


def metric(client: httpx.Client, sample: str) -> float | None:
    """The value of one sample (`name{labels}`) of /metrics, or None when absent."""
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    for line in answer.text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return None


def test_serve_api_lists_runs_and_takes_a_sync_now(
    tmp_path: Path, processes: Processes, receiver: ReceiverProcess
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, rows=40)
    workspace.configure(schedule="manual")
    serve = Serve(workspace, processes, "serve", "--port", "0")
    url = serve.api_url()
    assert url.startswith("http://127.0.0.1:")
    token = create_token(workspace, "write", name="e2e")
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


def test_replay_asked_through_the_api_is_run_by_serve_and_resends_the_run(
    tmp_path: Path, processes: Processes, receiver: ReceiverProcess
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, rows=40)
    workspace.configure(schedule="manual")
    serve = Serve(workspace, processes, "serve")
    with api_client(serve, workspace) as client:
        sync_now(client)
        [(first, status)] = serve.wait_finished(1)
        assert status == "success" and receiver.count(first) == 40

        answer = client.post(f"/api/v1/runs/{first}/replay", json={})
        assert answer.status_code == 202, answer.text
        asked = answer.json()
        assert (asked["replay_of"], asked["records"], asked["request"]) == (first, 40, "queued")
        [_, (replay, status)] = serve.wait_finished(2)
        actions = client.get("/api/v1/actions").json()
    assert status == "success" and replay > first
    serve.wait_line(f"claimed users (replay of run {first} by api: ops)")
    sent, again = receiver.from_run(first), receiver.from_run(replay)
    assert {r["key"] for r in again} == workspace.keys and len(again) == 40
    assert {(r["key"], r["op"]) for r in again} == {(r["key"], r["op"]) for r in sent}
    run = workspace.runs()[replay]
    assert (run["trigger"], run["replay_of"], run["actor"]) == ("replay", first, "api: ops")
    assert [(a["action"], a["actor"], a["run_id"]) for a in actions] == [
        ("replay", "api: ops", first),
        ("sync_now", "api: ops", None),
    ]
    assert serve.stop() == 0


def test_cancel_through_the_api_stops_the_run_serve_executes_and_the_next_sync_sends_the_rest(
    tmp_path: Path, processes: Processes
) -> None:
    rows = BATCH_SIZE * CONCURRENCY * 4  # held with at most CONCURRENCY batches in flight
    log = tmp_path / "received.jsonl"
    with ReceiverProcess.start(log, delay_s=0, hold_after=1) as held:
        workspace = Workspace.create(tmp_path / "ws", held.url, rows=rows)
        workspace.configure(schedule="manual")
        serve = Serve(workspace, processes, "serve")
        with api_client(serve, workspace) as client:
            sync_now(client)
            run_id = started_run(serve)
            wait_until(lambda: held.count(run_id) > 0, TIMEOUT_S, "the run's first records")
            progress_in_load(client, run_id)

            answer = client.post(f"/api/v1/runs/{run_id}/cancel")
            assert answer.status_code == 202, answer.text
            assert (answer.json()["id"], answer.json()["status"]) == (run_id, "running")
            progress = client.get(f"/api/v1/runs/{run_id}/progress").json()
            assert progress["cancel_requested_by"] == "api: ops"
            held.release()
            assert serve.wait_finished(1) == [(run_id, "cancelled")]

            again = client.post(f"/api/v1/runs/{run_id}/cancel")
            assert again.status_code == 409 and "not running" in again.json()["error"]
            assert client.get("/healthz").json() == {"status": "ok"}
            sync_now(client)  # serve keeps serving: the next sync sends the rest
            [_, (rest, status)] = serve.wait_finished(2)
            actions = client.get("/api/v1/actions", params={"mapping": MAPPING}).json()
            metrics = client.get("/metrics").text.splitlines()
        runs = workspace.runs()
        records = held.records()
    # The cancelled run counts too (counted once its event was logged: the next run ended since).
    assert f'ebbtide_runs_total{{mapping="{MAPPING}",status="cancelled"}} 1.0' in metrics
    assert serve.process.poll() is None
    cancelled = runs[run_id]
    assert cancelled["status"] == "cancelled" and cancelled["trigger"] == "manual"
    assert "cancelled by api: ops" in cancelled["error"]
    assert cancelled["loaded_new"] <= BATCH_SIZE * CONCURRENCY  # what was in flight, at most
    assert len({r["key"] for r in held.from_run(run_id)}) <= BATCH_SIZE * CONCURRENCY
    assert status == "success" and runs[rest]["added"] == rows - cancelled["loaded_new"]
    assert {r["key"] for r in records} == workspace.keys
    assert [(a["action"], a["actor"], a["run_id"]) for a in actions] == [
        ("sync_now", "api: ops", None),
        ("cancel", "api: ops", run_id),
        ("sync_now", "api: ops", None),
    ]
    assert serve.stop() == 0


def test_progress_events_of_a_running_sync_end_with_its_finished_run(
    tmp_path: Path, processes: Processes
) -> None:
    rows = BATCH_SIZE * CONCURRENCY * 2
    log = tmp_path / "received.jsonl"
    with ReceiverProcess.start(log, delay_s=0, hold_after=1) as held:
        workspace = Workspace.create(tmp_path / "ws", held.url, rows=rows)
        workspace.configure(schedule="manual")
        serve = Serve(workspace, processes, "serve")
        with api_client(serve, workspace) as client:
            sync_now(client)
            run_id = started_run(serve)
            assert progress_in_load(client, run_id)["total"] == rows
            with client.stream("GET", f"/api/v1/runs/{run_id}/events") as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                lines = stream.iter_lines()
                kind, first = next_event(lines)
                assert kind == "progress" and (first["run_id"], first["phase"]) == (run_id, "load")
                assert first["status"] == "running" and first["total"] == rows
                held.release()
                progress = [first]
                while (event := next_event(lines))[0] == "progress":
                    progress.append(event[1])
                # The stream ends after `finished`.
                assert not [line for line in lines if line.startswith(("event:", "data:"))]
        assert held.count(run_id) == rows
    kind, finished = event
    assert kind == "finished" and finished["id"] == run_id
    assert finished["status"] == "success" and finished["loaded_new"] == rows
    done = [p["done"] for p in progress if p["phase"] == "load"]
    assert done == sorted(done) and all(d <= rows for d in done)
    assert serve.wait_finished(1) == [(run_id, "success")]
    assert serve.stop() == 0


def test_readyz_follows_edits_of_the_workspace_and_metrics_count_this_serves_runs(
    tmp_path: Path, processes: Processes, receiver: ReceiverProcess
) -> None:
    workspace = Workspace.create(tmp_path / "ws", receiver.url, rows=30)
    workspace.configure(schedule="manual")
    serve = Serve(workspace, processes, "serve")
    with api_client(serve, workspace) as client:
        assert client.get("/readyz").json() == {"status": "ready"}
        success = f'ebbtide_runs_total{{mapping="{MAPPING}",status="success"}}'
        assert metric(client, success) is None
        sync_now(client)
        [(_, status)] = serve.wait_finished(1)
        assert status == "success"
        # Counted just after serve logs the run: the counters are what is waited for.
        loaded = 'ebbtide_records_loaded_total{destination="hook",operation="new"}'
        wait_until(lambda: metric(client, loaded) == 30.0, TIMEOUT_S, "the loaded records")
        assert metric(client, success) == 1.0
        assert metric(client, 'ebbtide_queue_depth{kind="sync_now"}') == 0.0
        since = metric(client, f'ebbtide_seconds_since_last_success{{mapping="{MAPPING}"}}')
        assert since is not None and since >= 0

        config = workspace.root / "ebbtide.yml"
        valid = config.read_text()
        edit(config, valid.replace("destination: hook", "destination: hoook"))
        unready = wait_until(
            lambda: (answer := client.get("/readyz")).status_code == 503 and answer.json(),
            TIMEOUT_S,
            "/readyz to answer 503 after an invalid edit",
        )
        assert unready["status"] == "not ready"
        assert "ebbtide.yml as edited is invalid" in unready["error"]
        assert "hoook" in unready["error"] and "did you mean" in unready["error"]
        assert "changed but is invalid" in serve.text()
        assert client.get("/healthz").status_code == 200  # the process still answers

        edit(config, valid)
        wait_until(
            lambda: client.get("/readyz").status_code == 200,
            TIMEOUT_S,
            "/readyz to answer 200 after a valid edit",
        )
        assert client.get("/readyz").json() == {"status": "ready"}
        serve.wait_line("reloaded ebbtide.yml: 1 mapping(s)")
        assert metric(client, success) == 1.0  # the counters outlive a reload
    assert serve.stop() == 0
