"""The REST API's actions and deeper reads over a real workspace and receiver: reset with its
confirmation, sync plan, replay and cancel queued through the state store, progress as JSON and
Server-Sent Events, a key's history, failed-record filters and exports, the workspace catalogue,
alerts, the actions log, /readyz, /metrics and revoked tokens."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ebbtide.demo.receiver import Receiver
from ebbtide.services.scheduler import Scheduler, ThreadExecutor
from ebbtide.state.schedules import ScheduleBook
from ebbtide.state.tokens import TokenBook
from ebbtide.values import RunRecord, RunStatus, Trigger
from tests.e2e.harness import wait_until
from tests.integration.api_kit import Api
from tests.integration.workspace_kit import TOKEN, Kit, users_table
from tests.integration.workspace_kit import held_sync as held_mirror_sync

MIRROR = "users_mirror"


def run_queued(api: Api) -> list[str]:
    """One scheduler tick in this process, as `serve` would do it; waits for the runs."""
    state = api.service.state
    executor = ThreadExecutor(state, workers=2, on_event=lambda event: None)
    book = ScheduleBook(state.engine)
    claims = Scheduler(api.service.workspace, book, executor).tick()
    assert executor.wait_idle(60), "the queued runs did not finish"
    return [c.mapping for c in claims]


@contextmanager
def held_sync(api: Api, receiver: Receiver) -> Iterator[list[RunRecord]]:
    with held_mirror_sync(api.service, receiver) as finished:
        yield finished


def running_run(api: Api) -> int:
    runs = api.client.get("/api/v1/runs?status=running", headers=api.read).json()
    assert len(runs) == 1, runs
    return int(runs[0]["id"])


# -- reset -------------------------------------------------------------------------------------


def test_reset_needs_confirm_and_says_what_it_does(api: Api, receiver: Receiver) -> None:
    api.service.run(MIRROR)
    plan = api.client.get(f"/api/v1/mappings/{MIRROR}/reset", headers=api.read)
    assert plan.status_code == 200
    assert plan.json()["model_rows"] == 12 and plan.json()["snapshot_records"] == 12
    assert "can no longer be detected as deleted" in plan.json()["explanation"]

    for body in ({}, {"confirm": False}):
        refused = api.client.post(f"/api/v1/mappings/{MIRROR}/reset", headers=api.write, json=body)
        assert refused.status_code == 422
        assert '{"confirm": true}' in refused.json()["error"]
    receiver.reset()
    assert api.service.run(MIRROR).added == 0  # the snapshot was kept: nothing to send

    done = api.client.post(
        f"/api/v1/mappings/{MIRROR}/reset", headers=api.write, json={"confirm": True}
    )
    assert done.status_code == 200
    assert done.json()["trigger"] == "reset" and done.json()["actor"] == "api: ops"
    assert api.service.run(MIRROR).added == 12
    read_only = api.client.post(
        f"/api/v1/mappings/{MIRROR}/reset", headers=api.read, json={"confirm": True}
    )
    assert read_only.status_code == 403


def test_reset_while_the_mapping_syncs_is_409(api: Api, receiver: Receiver) -> None:
    with held_sync(api, receiver):
        answer = api.client.post(
            f"/api/v1/mappings/{MIRROR}/reset", headers=api.write, json={"confirm": True}
        )
        assert answer.status_code == 409
        assert "cannot reset while the mapping is syncing" in answer.json()["error"]


# -- plan --------------------------------------------------------------------------------------


def test_plan_reads_the_diff_and_sends_nothing(api: Api, receiver: Receiver) -> None:
    answer = api.client.get(f"/api/v1/mappings/{MIRROR}/plan?samples=2", headers=api.read)
    assert answer.status_code == 200, answer.text
    plan = answer.json()
    assert (plan["added"], plan["would_send"], len(plan["samples"])) == (12, 12, 2)
    assert receiver.requests == 0


# -- replay and cancel -------------------------------------------------------------------------


def test_replay_is_queued_and_run_by_the_scheduler(api: Api, receiver: Receiver) -> None:
    first = api.service.run(MIRROR)
    receiver.reset()
    answer = api.client.post(
        f"/api/v1/runs/{first.id}/replay", headers=api.write, json={"latest": True}
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["records"] == 12 and answer.json()["request"] == "queued"
    assert receiver.requests == 0  # queued: `serve` runs it

    assert run_queued(api) == [MIRROR]
    [replayed] = api.service.state.list_runs(MIRROR, 1)
    assert (replayed.trigger, replayed.replay_of) == (Trigger.REPLAY.value, first.id)
    assert replayed.actor == "api: ops" and replayed.status is RunStatus.SUCCESS
    assert sorted(receiver.keys()) == list(range(1, 13))


def test_replay_that_cannot_be_done_is_409_and_queues_nothing(api: Api) -> None:
    reset = api.client.post(
        f"/api/v1/mappings/{MIRROR}/reset", headers=api.write, json={"confirm": True}
    ).json()
    answer = api.client.post(f"/api/v1/runs/{reset['id']}/replay", headers=api.write)
    assert answer.status_code == 409 and "is a reset" in answer.json()["error"]
    assert ScheduleBook(api.service.state.engine).replays() == []
    bad = api.client.post(
        f"/api/v1/runs/{reset['id']}/replay", headers=api.write, json={"latest": "maybe"}
    )
    assert bad.status_code == 422 and "latest" in bad.json()["error"]
    missing = api.client.post("/api/v1/runs/999/replay", headers=api.write)
    assert missing.status_code == 404


def test_cancel_stops_a_running_sync_at_its_next_batch(
    api: Api, receiver: Receiver, kit: Kit
) -> None:
    users_table(kit.root, 100)  # ten batches: two in flight when held, eight after
    with held_sync(api, receiver) as finished:
        run_id = running_run(api)
        answer = api.client.post(f"/api/v1/runs/{run_id}/cancel", headers=api.write)
        assert answer.status_code == 202 and answer.json()["id"] == run_id
    [record] = finished
    assert record.status is RunStatus.CANCELLED
    assert record.error is not None and "cancelled by api: ops" in record.error
    assert record.loaded_new < 100
    assert api.service.run(MIRROR).added == 100 - record.loaded_new  # the next sends the rest
    again = api.client.post(f"/api/v1/runs/{run_id}/cancel", headers=api.write)
    assert again.status_code == 409 and "not running" in again.json()["error"]
    actions = api.client.get(f"/api/v1/mappings/{MIRROR}/actions", headers=api.read).json()
    assert [(a["action"], a["actor"], a["run_id"]) for a in actions] == [
        ("cancel", "api: ops", run_id)
    ]


# -- progress ----------------------------------------------------------------------------------


def test_progress_of_a_running_sync_and_its_event_stream(api: Api, receiver: Receiver) -> None:
    with held_sync(api, receiver):
        run_id = running_run(api)
        progress = wait_until(
            lambda: (
                p
                if (
                    p := api.client.get(f"/api/v1/runs/{run_id}/progress", headers=api.read)
                ).json()["phase"]
                == "load"
                else None
            ),
            30,
            "the run to report its load phase",
        ).json()
        assert progress["status"] == "running" and progress["total"] == 12
        with api.client.stream("GET", f"/api/v1/runs/{run_id}/events", headers=api.read) as sse:
            assert sse.headers["content-type"].startswith("text/event-stream")
            lines = sse.iter_lines()
            first = _event(lines)
            assert first[0] == "progress" and first[1]["run_id"] == run_id
            receiver.release()
            while (event := _event(lines))[0] == "progress":
                pass
    assert event[0] == "finished"
    assert event[1]["id"] == run_id and event[1]["status"] == "success"
    ended = api.client.get(f"/api/v1/runs/{run_id}/progress", headers=api.read).json()
    assert ended["status"] == "success" and ended["phase"] is None


def _event(lines: Iterator[str]) -> tuple[str, dict[str, object]]:
    kind, data = "", ""
    for line in lines:
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif not line and kind:
            return kind, json.loads(data)
    raise AssertionError("the event stream ended")


# -- key history and failed records ------------------------------------------------------------


def test_history_of_one_key_across_runs(api: Api, receiver: Receiver) -> None:
    receiver.reject(3, message="bad email", error_class="validation")
    failed = api.service.run(MIRROR)
    url = f"/api/v1/mappings/{MIRROR}/records/3/history"
    pending = api.client.get(url, headers=api.read).json()["pending"]
    assert pending["status"] == "pending" and pending["key"] == 3
    receiver.clear_behaviours()
    api.service.run(MIRROR)  # retried: loaded
    loaded = api.service.run(MIRROR)
    assert loaded.added == 0

    answer = api.client.get(f"/api/v1/mappings/{MIRROR}/records/3/history", headers=api.read)
    assert answer.status_code == 200, answer.text
    history = answer.json()
    assert history["key"] == 3 and history["pending"] is None
    assert [(r["run_id"], r["outcome"]) for r in history["runs"]] == [
        (failed.id + 1, "loaded"),
        (failed.id, "failed"),
    ]
    assert history["runs"][1]["error_class"] == "validation"
    assert history["runs"][1]["message"].endswith("bad email")
    never = api.client.get(f"/api/v1/mappings/{MIRROR}/records/999/history", headers=api.read)
    assert never.json()["runs"] == []


def test_failed_records_of_a_mapping_filtered_and_exported(api: Api, receiver: Receiver) -> None:
    receiver.reject(2, message='=HYPERLINK("http://x")', error_class="validation")
    receiver.reject(11, message="no such list", error_class="not_found")
    run = api.service.run(MIRROR)
    assert run.failed == 2
    url = f"/api/v1/mappings/{MIRROR}/failed-records"

    def keys(**query: object) -> list[object]:
        answer = api.client.get(url, headers=api.read, params=query)
        assert answer.status_code == 200, answer.text
        return sorted(r["key"] for r in answer.json())

    assert keys() == [2, 11]
    assert keys(error_class="not_found") == [11]
    assert keys(key="1") == [11]
    assert keys(status="expired") == []
    assert api.client.get(url, headers=api.read, params={"error_class": "nope"}).status_code == 422

    jsonl = api.client.get(f"{url}/export?format=jsonl", headers=api.read)
    assert jsonl.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in jsonl.text.splitlines()]
    assert sorted(r["key"] for r in rows) == [2, 11]
    exported = api.client.get(f"{url}/export", headers=api.read)
    assert "attachment" in exported.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert {r["key"] for r in table} == {"2", "11"}
    # A message that a spreadsheet would run as a formula is written as text.
    formula = next(r for r in table if r["key"] == "2")["message"]
    assert not formula.startswith("=")

    per_run = api.client.get(
        f"/api/v1/runs/{run.id}/failed-records?error_class=validation", headers=api.read
    ).json()
    assert [r["key"] for r in per_run] == [2]
    run_csv = api.client.get(f"/api/v1/runs/{run.id}/failed-records/export", headers=api.read)
    assert len(list(csv.DictReader(io.StringIO(run_csv.text)))) == 2


# -- the workspace -----------------------------------------------------------------------------


def test_sources_models_and_destinations_never_show_credentials(api: Api) -> None:
    sources = api.client.get("/api/v1/sources", headers=api.read).json()
    assert sources == [{"name": "warehouse", "type": "duckdb", "models": ["users"]}]
    models = api.client.get("/api/v1/models", headers=api.read).json()
    assert models[0]["primary_key"] == ["id"] and models[0]["mappings"] == [MIRROR, "users_upsert"]
    answer = api.client.get("/api/v1/destinations", headers=api.read)
    [hook] = answer.json()
    assert (hook["name"], hook["type"], hook["mappings"]) == (
        "hook",
        "webhook",
        [MIRROR, "users_upsert"],
    )
    assert TOKEN not in answer.text and "127.0.0.1" not in answer.text


def test_mapping_shows_paused_and_next_due(api: Api) -> None:
    api.client.post(f"/api/v1/mappings/{MIRROR}/pause", headers=api.write)
    one = api.client.get(f"/api/v1/mappings/{MIRROR}", headers=api.read).json()
    assert one["paused"] is True and one["next_due_at"] is None
    api.client.post(f"/api/v1/mappings/{MIRROR}/resume", headers=api.write)
    assert api.client.get(f"/api/v1/mappings/{MIRROR}", headers=api.read).json()["paused"] is False
    actions = api.client.get("/api/v1/actions", headers=api.read).json()
    assert [(a["action"], a["mapping"], a["actor"]) for a in actions] == [
        ("resume", MIRROR, "api: ops"),
        ("pause", MIRROR, "api: ops"),
    ]


# -- alerts and notifications ------------------------------------------------------------------


def test_in_app_alerts_subscribed_read_and_marked(api: Api, receiver: Receiver) -> None:
    created = api.client.post(
        "/api/v1/alerts/subscriptions",
        headers=api.write,
        json={"email": "ana@example.com", "channels": ["in_app"], "mappings": [MIRROR]},
    )
    assert created.status_code == 201, created.text
    assert created.json()["to"] == "ana@example.com" and created.json()["channels"] == ["in_app"]
    listed = api.client.get("/api/v1/alerts/subscriptions", headers=api.read).json()
    assert [s["id"] for s in listed] == [created.json()["id"]]
    assert api.client.get("/api/v1/alerts/emails", headers=api.read).json() == []

    receiver.status_for_all = 500
    failed = api.service.run(MIRROR)
    assert failed.status is RunStatus.FAILED
    url = "/api/v1/notifications?email=ana@example.com"
    [note] = api.client.get(f"{url}&unread=true", headers=api.read).json()
    assert note["run_id"] == failed.id and note["read"] is False
    marked = api.client.post(
        "/api/v1/notifications/read", headers=api.write, json={"email": "ana@example.com"}
    )
    assert marked.json()["marked_read"] == 1
    assert api.client.get(f"{url}&unread=true", headers=api.read).json() == []

    unknown_mapping = api.client.post(
        "/api/v1/alerts/subscriptions",
        headers=api.write,
        json={"email": "bo@example.com", "channels": ["in_app"], "mappings": ["nope"]},
    )
    assert unknown_mapping.status_code == 404 and "nope" in unknown_mapping.json()["error"]
    no_email = api.client.post("/api/v1/alerts/subscriptions", headers=api.write, json={})
    assert no_email.status_code == 422 and "email" in no_email.json()["error"]
    gone = api.client.delete(
        f"/api/v1/alerts/subscriptions/{created.json()['id']}", headers=api.write
    )
    assert gone.status_code == 200
    again = api.client.delete(
        f"/api/v1/alerts/subscriptions/{created.json()['id']}", headers=api.write
    )
    assert again.status_code == 404


# -- operations --------------------------------------------------------------------------------


def test_readyz_and_metrics(api: Api, receiver: Receiver) -> None:
    assert api.client.get("/readyz").json() == {"status": "ready"}
    api.service.run(MIRROR)
    api.client.post(f"/api/v1/mappings/{MIRROR}/sync", headers=api.write)
    metrics = api.client.get("/metrics")
    assert metrics.status_code == 200
    lines = metrics.text.splitlines()
    assert 'ebbtide_queue_depth{kind="sync_now"} 1.0' in lines
    assert any(
        line.startswith(f'ebbtide_seconds_since_last_success{{mapping="{MIRROR}"}}')
        for line in lines
    )
    assert not any('mapping="users_upsert"' in line for line in lines if "since_last" in line)


def test_revoked_token_is_refused(api: Api) -> None:
    book = TokenBook(api.service.state.engine)
    [ops] = [t for t in book.listed() if t.name == "ops"]
    assert book.revoke(ops.id)
    answer = api.client.get("/api/v1/runs", headers=api.write)
    assert answer.status_code == 401 and "invalid token" in answer.json()["error"]
    assert not book.revoke(ops.id)
    assert [t.name for t in book.listed()] == ["dashboards"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/sources",
        "/api/v1/actions",
        "/api/v1/alerts/subscriptions",
        "/api/v1/runs/1/progress",
    ],
)
def test_every_new_read_needs_a_token(api: Api, path: str) -> None:
    assert api.client.get(path).status_code == 401


def test_unknown_or_impossible_run_ids_are_404_and_422_before_any_stream(api: Api) -> None:
    events = api.client.get("/api/v1/runs/999/events", headers=api.read)
    assert events.status_code == 404 and "999" in events.json()["error"]
    huge = api.client.get(f"/api/v1/runs/{2**63}", headers=api.read)
    assert huge.status_code == 422 and "run_id" in huge.json()["error"]
