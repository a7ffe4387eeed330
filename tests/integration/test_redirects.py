"""A webhook URL that redirects never gets records counted as loaded, nor credentials sent away.

Real engine, real HTTP on 127.0.0.1: the hostile receiver answers redirects and records what
every path received (method, headers, body).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ebbtide.alerts.http import AlertPostError, post_json
from ebbtide.errors import ErrorClass
from ebbtide.services.advice import recommended_action
from ebbtide.services.sync import SyncService
from ebbtide.values import RunStatus
from tests.hostile_receiver import HostileReceiver
from tests.integration.workspace_kit import TOKEN, Kit, hook, mapping, users_table, write_workspace

ROWS = 6  # one batch
API_KEY = "api-key-not-a-real-secret-0815"


@pytest.fixture
def receiver() -> Iterator[HostileReceiver]:
    with HostileReceiver() as running:
        yield running


@pytest.fixture
def elsewhere() -> Iterator[HostileReceiver]:
    """Another origin (another port): what a redirect must never hand the credentials to."""
    with HostileReceiver() as running:
        yield running


def configure(kit: Kit, url: str, **extra: Any) -> SyncService:
    """The URL is written in ebbtide.yml as it is (not a secret), the credentials come from the
    environment, in two headers: any configured header is a credential."""
    kit.monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    kit.monkeypatch.setenv("HOOK_API_KEY", API_KEY)
    destination = hook(url=url, **extra)
    destination["headers"]["X-Api-Key"] = "${HOOK_API_KEY}"
    write_workspace(kit.root, destinations={"hook": destination}, mappings={"users": mapping()})
    return kit.service()


def failure_message(service: SyncService, run_id: int) -> str:
    messages = {f.message for f in service.state.failures(run_id)}
    assert len(messages) == 1, messages
    return messages.pop()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_loads_nothing_and_the_action_names_the_new_url(
    kit: Kit, receiver: HostileReceiver, status: int
) -> None:
    users_table(kit.root, ROWS)
    service = configure(kit, receiver.url("/ingest"))
    receiver.redirect("/ingest", status, "/v2/ingest")
    run = service.run("users")

    assert run.status is RunStatus.FAILED, run.error
    assert (run.loaded_new, run.failed, run.failed_by_class) == (0, ROWS, {"not_found": ROWS})
    assert receiver.requests_to("/v2/ingest") == []  # no bodiless GET, nothing at all
    assert [s.method for s in receiver.requests_to("/ingest")] == ["POST"]
    new_url = receiver.url("/v2/ingest")
    message = failure_message(service, run.id)
    assert f"redirects to {new_url};" in message
    action = recommended_action(kit.workspace(), "users", ErrorClass.NOT_FOUND, message)
    assert new_url in action and "`destinations.hook.url`" in action

    # The records were never acknowledged: once the URL is fixed, all of them go.
    service = configure(kit, new_url)
    fixed = service.run("users")
    assert fixed.status is RunStatus.SUCCESS, fixed.error
    assert (fixed.loaded_new, fixed.retried) == (ROWS, ROWS)
    assert sorted(receiver.keys_received("/v2/ingest")) == list(range(1, ROWS + 1))


@pytest.mark.parametrize("follow", [False, True])
@pytest.mark.parametrize("status", [302, 307, 308])
def test_a_redirect_to_another_origin_never_gets_the_configured_headers(
    kit: Kit, receiver: HostileReceiver, elsewhere: HostileReceiver, status: int, follow: bool
) -> None:
    users_table(kit.root, ROWS)
    service = configure(kit, receiver.url("/ingest"), follow_same_origin_redirects=follow)
    receiver.redirect("/ingest", status, elsewhere.url("/collect"))
    run = service.run("users")

    assert (run.status, run.loaded_new) == (RunStatus.FAILED, 0)
    (post,) = receiver.requests_to("/ingest")
    assert post.headers["X-Api-Key"] == API_KEY  # sent where it was configured to go …
    assert elsewhere.seen == []  # … and nowhere else
    assert f"redirects to {elsewhere.url('/collect')};" in failure_message(service, run.id)


@pytest.mark.parametrize("status", [307, 308])
def test_a_same_origin_307_or_308_is_followed_with_the_same_post_when_allowed(
    kit: Kit, receiver: HostileReceiver, status: int
) -> None:
    users_table(kit.root, ROWS)
    service = configure(kit, receiver.url("/ingest"), follow_same_origin_redirects=True)
    receiver.redirect("/ingest", status, "/v2/ingest")
    run = service.run("users")

    assert run.status is RunStatus.SUCCESS, run.error
    assert run.loaded_new == ROWS
    (first,) = receiver.requests_to("/ingest")
    (moved,) = receiver.requests_to("/v2/ingest")
    assert moved.method == "POST" and moved.body == first.body
    for header in ("Authorization", "X-Api-Key", "Idempotency-Key", "Content-Type"):
        assert moved.headers[header] == first.headers[header], header


@pytest.mark.parametrize("status", [301, 302, 303])
def test_a_redirect_that_lets_clients_switch_to_get_is_never_followed(
    kit: Kit, receiver: HostileReceiver, status: int
) -> None:
    users_table(kit.root, ROWS)
    service = configure(kit, receiver.url("/ingest"), follow_same_origin_redirects=True)
    receiver.redirect("/ingest", status, "/v2/ingest")
    run = service.run("users")
    assert (run.status, run.loaded_new) == (RunStatus.FAILED, 0)
    assert receiver.requests_to("/v2/ingest") == []


def test_a_redirect_loop_ends_as_a_failure(kit: Kit, receiver: HostileReceiver) -> None:
    users_table(kit.root, ROWS)
    service = configure(kit, receiver.url("/a"), follow_same_origin_redirects=True)
    receiver.redirect("/a", 307, "/b")
    receiver.redirect("/b", 308, "/a")
    run = service.run("users")
    assert (run.status, run.loaded_new, run.failed) == (RunStatus.FAILED, 0, ROWS)
    assert "redirects in a row" in failure_message(service, run.id)
    assert all(s.method == "POST" for s in receiver.seen)


@pytest.mark.parametrize("status", [301, 302, 307])
def test_an_alert_webhook_that_redirects_is_not_delivered_nor_followed(
    receiver: HostileReceiver, elsewhere: HostileReceiver, status: int
) -> None:
    receiver.redirect("/alerts", status, elsewhere.url("/alerts"))
    with pytest.raises(AlertPostError, match=f"redirects to {elsewhere.url('/alerts')}"):
        post_json(receiver.url("/alerts"), {"title": "run failed"}, {"X-Api-Key": API_KEY})
    (post,) = receiver.requests_to("/alerts")
    assert post.method == "POST"
    assert elsewhere.seen == []
