"""The REST API (FastAPI's TestClient) over a real workspace, SQLite state store and syncs to
the loopback receiver: every endpoint, and the 401, 403, 404 and 422 answers."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from ebbtide.demo.receiver import Receiver
from ebbtide.services.history import History
from ebbtide.services.views import RunView
from ebbtide.state.schedules import ScheduleBook
from tests.integration.api_kit import Api


def test_healthz_needs_no_token(api: Api) -> None:
    answer = api.client.get("/healthz")
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


def test_openapi_document_lists_the_v1_routes(api: Api) -> None:
    paths = api.client.get("/api/v1/openapi.json").json()["paths"]
    assert {"/api/v1/mappings", "/api/v1/runs/{run_id}/failed-records"} <= set(paths)


def test_mappings_list_and_one_with_its_last_run(api: Api) -> None:
    run = api.service.run("users_mirror")
    listed = api.client.get("/api/v1/mappings", headers=api.read)
    assert listed.status_code == 200
    assert [m["name"] for m in listed.json()] == ["users_mirror", "users_upsert"]
    one = api.client.get("/api/v1/mappings/users_mirror", headers=api.read).json()
    assert one["last_run"]["id"] == run.id and one["health"] == "healthy"
    assert one["model"] == "users" and one["destination"] == "hook"


def test_unknown_mapping_is_404_naming_it(api: Api) -> None:
    answer = api.client.get("/api/v1/mappings/nope", headers=api.read)
    assert answer.status_code == 404
    assert "nope" in answer.json()["error"]
    post = api.client.post("/api/v1/mappings/nope/sync", headers=api.write)
    assert post.status_code == 404 and "nope" in post.json()["error"]


def test_runs_list_has_the_fields_of_runs_list_json_and_filters(api: Api) -> None:
    first = api.service.run("users_mirror")
    api.service.run("users_upsert")
    answer = api.client.get("/api/v1/runs", headers=api.read)
    assert answer.status_code == 200
    runs = answer.json()
    assert len(runs) == 2
    expected = History(api.service.workspace, api.service.state).runs(limit=20)
    assert runs == [RunView.model_dump(view, mode="json") for view in expected]
    assert set(runs[0]) >= {"id", "mapping", "status", "trigger", "started_at", "loaded_new"}
    only = api.client.get(
        "/api/v1/runs?mapping=users_mirror&status=success&limit=5", headers=api.read
    )
    assert [r["id"] for r in only.json()] == [first.id]
    none = api.client.get("/api/v1/runs?status=failed", headers=api.read)
    assert none.json() == []
    limited = api.client.get("/api/v1/runs?limit=1", headers=api.read)
    assert len(limited.json()) == 1


def test_runs_are_filtered_by_trigger_and_time_and_paged_by_id_in_the_state_store(
    api: Api,
) -> None:
    ids = [api.service.run("users_mirror").id for _ in range(5)]
    runs = History(api.service.workspace, api.service.state).runs(limit=20)
    started = {run.id: run.started_at for run in runs}

    def listed(**query: object) -> list[int]:
        answer = api.client.get("/api/v1/runs", headers=api.read, params=query)
        assert answer.status_code == 200, answer.text
        return [run["id"] for run in answer.json()]

    newest_first = sorted(ids, reverse=True)
    page = listed(limit=2)
    assert page == newest_first[:2]
    assert listed(limit=2, before=page[-1]) == newest_first[2:4]
    assert listed(limit=2, before=newest_first[3]) == newest_first[4:]
    assert listed(trigger="manual", limit=10) == newest_first
    assert listed(trigger="schedule") == []
    since = started[ids[2]].isoformat()
    assert listed(since=since) == newest_first[:3]
    assert listed(until=since) == newest_first[3:]
    assert listed(status="success", mapping="users_mirror", limit=3) == newest_first[:3]
    bad = api.client.get("/api/v1/runs", headers=api.read, params={"trigger": "cron"})
    assert bad.status_code == 422


def test_run_details_and_failed_records(api: Api, receiver: Receiver) -> None:
    receiver.reject(3, message="bad email")
    run = api.service.run("users_mirror")
    assert run.failed == 1
    details = api.client.get(f"/api/v1/runs/{run.id}", headers=api.read)
    assert details.status_code == 200
    body = details.json()
    assert body["id"] == run.id and body["status"] == "partial_success"
    [group] = body["failure_groups"]
    assert group["count"] == 1 and group["message"].endswith("bad email")
    failed = api.client.get(f"/api/v1/runs/{run.id}/failed-records", headers=api.read)
    assert failed.status_code == 200
    [record] = failed.json()
    assert record["key"] == 3 and record["error_class"] == "validation"
    assert "key_text" not in record and record["recommended_action"]


def test_unknown_run_is_404(api: Api) -> None:
    answer = api.client.get("/api/v1/runs/999", headers=api.read)
    assert answer.status_code == 404 and "999" in answer.json()["error"]


def test_bad_limit_is_422_with_a_json_error(api: Api) -> None:
    answer = api.client.get("/api/v1/runs?limit=abc", headers=api.read)
    assert answer.status_code == 422
    assert "limit" in answer.json()["error"]


def test_sync_now_is_queued_then_merged(api: Api) -> None:
    first = api.client.post("/api/v1/mappings/users_mirror/sync", headers=api.write)
    assert first.status_code == 202
    assert first.json()["mapping"] == "users_mirror" and first.json()["request"] == "queued"
    assert first.json()["requested_by"] == "api: ops"
    second = api.client.post("/api/v1/mappings/users_mirror/sync", headers=api.write)
    assert second.status_code == 202 and second.json()["request"] == "merged"
    waiting = ScheduleBook(api.service.state.engine).waiting("users_mirror")
    assert waiting is not None and waiting.requested_by == "api: ops"


def test_pause_and_resume(api: Api) -> None:
    book = ScheduleBook(api.service.state.engine)
    paused = api.client.post("/api/v1/mappings/users_upsert/pause", headers=api.write)
    assert paused.status_code == 200 and paused.json() == {
        "mapping": "users_upsert",
        "paused": True,
    }
    slot = book.slot("users_upsert")
    assert slot is not None and slot.paused
    resumed = api.client.post("/api/v1/mappings/users_upsert/resume", headers=api.write)
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    slot = book.slot("users_upsert")
    assert slot is not None and not slot.paused


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({}, "missing Authorization header"),
        ({"Authorization": "Basic abc"}, "must read `Bearer <token>`"),
        ({"Authorization": "Bearer not-a-token"}, "invalid token"),
    ],
)
def test_missing_or_wrong_token_is_401(api: Api, headers: dict[str, str], says: str) -> None:
    answer = api.client.get("/api/v1/runs", headers=headers)
    assert answer.status_code == 401
    assert says in answer.json()["error"]
    assert answer.headers["www-authenticate"] == "Bearer"
    assert "not-a-token" not in answer.text


def test_read_token_cannot_post_403(api: Api) -> None:
    for action in ("sync", "pause", "resume"):
        answer = api.client.post(f"/api/v1/mappings/users_mirror/{action}", headers=api.read)
        assert answer.status_code == 403
        assert "write token" in answer.json()["error"]
    assert ScheduleBook(api.service.state.engine).waiting("users_mirror") is None


def test_state_store_keeps_only_the_token_hash(api: Api) -> None:
    with api.service.state.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text("select * from api_tokens"))]
    assert rows and not any(api.write_token in str(row) for row in rows)
