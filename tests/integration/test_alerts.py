"""Alerts after a sync, through real channels on 127.0.0.1 (DESIGN invariant 10).

Each test builds a workspace with the kit (DuckDB warehouse, webhook destination pointed at
the loopback receiver), adds an `alerts:` section, and runs `SyncService.run`. The receiver
makes runs fail (401 for everything) or partly fail (refused keys); alerts go to aiosmtpd,
to HTTP endpoints playing Slack and a generic webhook, and to the state store (in-app).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
import yaml

from ebbtide.config.alerts import SubscriptionSpec
from ebbtide.demo.receiver import Receiver
from ebbtide.services.sync import SyncService
from ebbtide.state.alerts import Delivery
from ebbtide.state.store import utcnow
from ebbtide.values import RunStatus
from tests.integration.alert_servers import HttpEndpoints, SilentServer, SmtpServer, closed_port
from tests.integration.workspace_kit import TOKEN, Kit, hook, mapping

ROWS = 20
SENDER = "ebbtide@example.com"
ANN, BOB, CAROL = "ann@example.com", "bob@example.com", "carol@example.com"
BASE_URL = "https://ebbtide.example.com/"
SLACK_PATH = "/services/T0001/B0002/slack-secret-path-9f8e7d"
HOOK_PATH = "/alerts/hook"
ALERT_TOKEN = "alert-hook-token-not-real-5150"

# SmtpServer(login=…) requires AUTH without TLS on loopback, which aiosmtpd warns about.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture
def endpoints() -> Iterator[HttpEndpoints]:
    with HttpEndpoints() as server:
        yield server


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    with SilentServer() as server:
        yield server


def smtp_spec(port: int, **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "from": SENDER, "tls": "none", **extra}


def alerting(
    kit: Kit,
    receiver_url: str,
    alerts: dict[str, Any],
    *,
    mappings: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> SyncService:
    """The kit's workspace (mappings users_mirror and users_upsert) with `alerts:` added.

    One batch holds every row, so a 401 fails them all (with several batches in flight, how
    many were sent before the run stopped depends on timing).
    """
    destinations = {"hook": hook(batch_size=ROWS)}
    kit.build(receiver_url, rows=ROWS, destinations=destinations, mappings=mappings, env=env)
    config = kit.root / "ebbtide.yml"
    doc = yaml.safe_load(config.read_text())
    doc["alerts"] = alerts
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    service = kit.service()
    service.alerts.retry_delay_s = 0.01
    return service


def emailing(port: int, *subscriptions: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"email": smtp_spec(port), "subscriptions": list(subscriptions), **extra}


def deliveries(service: SyncService) -> list[Delivery]:
    """Oldest first."""
    return list(reversed(service.alerts.book.deliveries(1000)))


def reject(receiver: Receiver, keys: range, message: str = "email: not a valid address") -> None:
    for key in keys:
        receiver.reject(key, code="INVALID_EMAIL", message=message)


def rewind_last_alert(service: SyncService, name: str, by: timedelta) -> None:
    state = service.alerts.book.state(name)
    assert state is not None and state.last_alert_at is not None
    service.alerts.book.set_state(name, replace(state, last_alert_at=state.last_alert_at - by))


class Clock:
    """The alert service's clock, moved by the test instead of waited for."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


# -- email ---------------------------------------------------------------------------------


def test_failed_sync_emails_every_subscribed_address_with_counts_error_action_and_link(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    alerts = emailing(smtp.port, {"email": [ANN, BOB]}, {"email": CAROL}, base_url=BASE_URL)
    service = alerting(kit, receiver.url, alerts)
    receiver.status_for_all = 401
    run = service.run("users_mirror")
    assert run.status is RunStatus.FAILED

    assert sorted(sorted(m.rcpt_tos) for m in smtp.mails) == [[ANN, BOB], [CAROL]]
    for mail in smtp.mails:
        assert mail.mail_from == SENDER and mail.message["From"] == SENDER
        assert mail.subject == f"[ebbtide] users_mirror failed (run {run.id})"
    body = smtp.to(ANN)[0].body
    assert "Status: failed" in body
    assert f"extracted {ROWS}; changes +{ROWS} ~0 -0; loaded 0; failed {ROWS}" in body
    assert f"Most failed records: auth · {ROWS} record(s) · HTTP 401" in body
    assert "Recommended action: The destination rejected the credentials" in body
    assert "`destinations.hook.headers` of ebbtide.yml" in body
    assert f"Run: https://ebbtide.example.com/runs/{run.id}" in body


def test_email_has_no_run_link_without_base_url(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    service = alerting(kit, receiver.url, emailing(smtp.port, {"email": ANN}))
    receiver.status_for_all = 401
    service.run("users_mirror")
    [mail] = smtp.mails
    assert "Status: failed" in mail.body
    assert "Run:" not in mail.body and "/runs/" not in mail.body


def test_partial_success_email_names_the_largest_error_group_and_its_field(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    service = alerting(kit, receiver.url, emailing(smtp.port, {"email": ANN}))
    reject(receiver, range(1, 4))
    receiver.reject(4, code="CONFLICT", message="already exists", error_class="conflict")
    run = service.run("users_mirror")
    assert run.status is RunStatus.PARTIAL_SUCCESS

    [mail] = smtp.mails
    assert mail.subject == f"[ebbtide] users_mirror partially succeeded (run {run.id})"
    assert f"loaded {ROWS - 4}; failed 4" in mail.body
    assert "Most failed records: validation · 3 record(s) · email: not a valid address" in mail.body
    assert "mappings.users_mirror.fields.email" in mail.body


def test_smtp_login_uses_the_password_from_the_environment(receiver: Receiver, kit: Kit) -> None:
    password = "smtp-password-not-real-2718"
    with SmtpServer(login=("alerts", password)) as server:
        smtp = smtp_spec(server.port, user="alerts", password="${SMTP_PASSWORD}")
        alerts = {"email": smtp, "subscriptions": [{"email": ANN}]}
        service = alerting(kit, receiver.url, alerts, env={"SMTP_PASSWORD": password})
        receiver.status_for_all = 401
        service.run("users_mirror")
    assert server.logins == [("alerts", password)]
    [mail] = server.mails
    assert password not in mail.body


def test_smtp_login_refused_is_recorded_without_the_password(receiver: Receiver, kit: Kit) -> None:
    wrong = "wrong-smtp-password-1414"
    with SmtpServer(login=("alerts", "the-right-one")) as server:
        smtp = smtp_spec(server.port, user="alerts", password="${SMTP_PASSWORD}")
        alerts = {"email": smtp, "subscriptions": [{"email": ANN}]}
        service = alerting(kit, receiver.url, alerts, env={"SMTP_PASSWORD": wrong})
        receiver.status_for_all = 401
        run = service.run("users_mirror")
    assert run.status is RunStatus.FAILED
    assert server.mails == [] and set(server.logins) == {("alerts", wrong)}
    [delivery] = deliveries(service)
    assert (delivery.delivered, delivery.attempts) == (False, 3)
    assert delivery.error is not None and "SMTPAuthenticationError" in delivery.error
    assert wrong not in delivery.error


# -- secrets -------------------------------------------------------------------------------


def test_secrets_from_the_environment_never_appear_in_any_alert(
    kit: Kit, smtp: SmtpServer, endpoints: HttpEndpoints
) -> None:
    url_secret = "url-path-secret-3141592"
    with Receiver(path=f"/ingest/{url_secret}") as receiver:
        # A destination that repeats the credentials and its own URL in every refusal.
        echo = f"token {TOKEN} is not allowed at {receiver.url}"
        reject(receiver, range(1, ROWS + 1), message=echo)
        alerts = {
            "email": smtp_spec(smtp.port),
            "base_url": BASE_URL,
            "subscriptions": [
                {"email": ANN, "channels": ["email", "in_app"]},
                {"slack": {"webhook_url": "${SLACK_URL}", "channel": "#data"}},
                {
                    "webhook": {
                        "url": "${ALERT_HOOK_URL}",
                        "headers": {"Authorization": "Bearer ${ALERT_TOKEN}"},
                    }
                },
            ],
        }
        env = {
            "SLACK_URL": endpoints.url(SLACK_PATH),
            "ALERT_HOOK_URL": endpoints.url(HOOK_PATH),
            "ALERT_TOKEN": ALERT_TOKEN,
        }
        service = alerting(kit, receiver.url, alerts, env=env)
        run = service.run("users_mirror")
    assert run.status is RunStatus.FAILED

    [mail] = smtp.mails
    [slack] = endpoints.to(SLACK_PATH)
    [webhook] = endpoints.to(HOOK_PATH)
    [note] = service.alerts.book.notifications(ANN)
    shown = {
        "email": mail.subject + mail.body,
        "slack": slack.text,
        "webhook": webhook.text,
        "in_app": note.title + note.body,
        "log": json.dumps([d.to_json() for d in deliveries(service)]),
    }
    for where, text in shown.items():
        for secret in (TOKEN, url_secret, SLACK_PATH, ALERT_TOKEN):
            assert secret not in text, f"{secret!r} shown in the {where} alert"
    # The refusal itself is told, masked: the test would pass vacuously without it.
    assert "token *** is not allowed" in mail.body
    assert "token *** is not allowed" in webhook.json["top_error"]
    assert webhook.headers["Authorization"] == f"Bearer {ALERT_TOKEN}"


# -- Slack and webhook ---------------------------------------------------------------------


def test_slack_gets_channel_and_blocks_with_title_status_counts_error_action_and_link(
    receiver: Receiver, kit: Kit, endpoints: HttpEndpoints
) -> None:
    alerts = {
        "base_url": BASE_URL,
        "subscriptions": [{"slack": {"webhook_url": "${SLACK_URL}", "channel": "#data-alerts"}}],
    }
    service = alerting(kit, receiver.url, alerts, env={"SLACK_URL": endpoints.url(SLACK_PATH)})
    receiver.status_for_all = 401
    run = service.run("users_mirror")

    [post] = endpoints.to(SLACK_PATH)
    assert post.headers["Content-Type"].startswith("application/json")
    body = post.json
    assert body["channel"] == "#data-alerts"
    title = f"[ebbtide] users_mirror failed (run {run.id})"
    header, fields, counts, *rest = body["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": title}}
    field_texts = [f["text"] for f in fields["fields"]]
    assert field_texts[0] == "*Mapping*\nusers_mirror"
    assert field_texts[1].startswith("*Status*\n") and field_texts[1].endswith("failed")
    assert f"failed {ROWS}" in counts["text"]["text"]
    texts = [b["text"]["text"] for b in rest if b["type"] == "section"]
    top = next(t for t in texts if t.startswith("*Most failed records*"))
    assert f"auth · {ROWS} record(s)" in top
    assert "*Recommended action*" in top and "destinations.hook.headers" in top
    [context] = [b for b in rest if b["type"] == "context"]
    assert context["elements"][0]["text"] == f"<https://ebbtide.example.com/runs/{run.id}|Run>"


def test_webhook_gets_the_alert_as_json_with_its_headers(
    receiver: Receiver, kit: Kit, endpoints: HttpEndpoints
) -> None:
    alerts = {
        "subscriptions": [
            {
                "webhook": {"url": "${ALERT_HOOK_URL}", "headers": {"X-Token": "${ALERT_TOKEN}"}},
                "statuses": ["partial_success"],
            }
        ]
    }
    env = {"ALERT_HOOK_URL": endpoints.url(HOOK_PATH), "ALERT_TOKEN": ALERT_TOKEN}
    service = alerting(kit, receiver.url, alerts, env=env)
    reject(receiver, range(1, 3))
    run = service.run("users_upsert")

    [post] = endpoints.to(HOOK_PATH)
    assert post.headers["X-Token"] == ALERT_TOKEN
    body = post.json
    assert {k: body[k] for k in ("event", "mapping", "run_id", "status", "reminder")} == {
        "event": "partial_success",
        "mapping": "users_upsert",
        "run_id": run.id,
        "status": "partial_success",
        "reminder": False,
    }
    assert body["counts"] == {
        "extracted": ROWS,
        "added": ROWS,
        "updated": 0,
        "deleted": 0,
        "loaded": ROWS - 2,
        "failed": 2,
    }
    assert body["top_error"].startswith("validation · 2 record(s)")
    assert "mappings.users_upsert.fields.email" in body["recommended_action"]
    assert body["url"] is None


# -- in-app --------------------------------------------------------------------------------


def test_in_app_subscription_keeps_one_unread_notification_per_person_and_sends_no_email(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    # No alerts.email at all: an in-app subscription needs no SMTP server.
    alerts = {"subscriptions": [{"email": [ANN, BOB], "channels": ["in_app"]}]}
    service = alerting(kit, receiver.url, alerts)
    receiver.status_for_all = 401
    run = service.run("users_mirror")

    book = service.alerts.book
    for person in (ANN, BOB):
        [note] = book.notifications(person, unread_only=True)
        assert (note.run_id, note.mapping, note.event) == (run.id, "users_mirror", "failed")
        assert note.title == f"[ebbtide] users_mirror failed (run {run.id})"
        assert f"failed {ROWS}" in note.body and note.read_at is None
    assert book.notifications(CAROL) == []
    assert smtp.mails == []
    assert {(d.channel, d.target, d.delivered) for d in deliveries(service)} == {
        ("in_app", ANN, True),
        ("in_app", BOB, True),
    }


# -- who hears about what ------------------------------------------------------------------


def test_subscriber_to_failed_only_does_not_hear_about_a_partial_success(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    alerts = emailing(
        smtp.port, {"email": ANN, "statuses": ["failed"]}, {"email": BOB}
    )  # BOB: the default statuses, failed and partial_success
    service = alerting(kit, receiver.url, alerts)
    reject(receiver, range(1, 3))
    assert service.run("users_mirror").status is RunStatus.PARTIAL_SUCCESS
    assert [m.rcpt_tos for m in smtp.mails] == [[BOB]]

    receiver.status_for_all = 401
    assert service.run("users_upsert").status is RunStatus.FAILED
    assert sorted(tuple(m.rcpt_tos) for m in smtp.mails[1:]) == [(ANN,), (BOB,)]


def test_subscription_limited_to_another_mapping_hears_nothing(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    alerts = emailing(smtp.port, {"email": ANN, "mappings": ["users_upsert"]})
    service = alerting(kit, receiver.url, alerts)
    receiver.status_for_all = 401
    assert service.run("users_mirror").status is RunStatus.FAILED
    assert smtp.mails == []
    assert deliveries(service) == []

    run = service.run("users_upsert")
    [mail] = smtp.mails
    assert mail.subject == f"[ebbtide] users_upsert failed (run {run.id})"


def test_subscription_kept_in_the_state_store_is_told_like_one_in_the_workspace(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    service = alerting(kit, receiver.url, {"email": smtp_spec(smtp.port)})
    book = service.alerts.book
    book.subscribe(SubscriptionSpec(email=[ANN], mappings=["users_upsert"]), utcnow())
    book.subscribe(SubscriptionSpec(email=[BOB], channels=["email", "in_app"]), utcnow())
    receiver.status_for_all = 401
    run = service.run("users_mirror")
    [mail] = smtp.mails
    assert mail.rcpt_tos == [BOB]
    assert [n.run_id for n in book.notifications(BOB)] == [run.id]
    assert book.notifications(ANN) == []


def test_failed_after_a_partial_success_is_told_to_subscribers_of_failed(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    alerts = emailing(smtp.port, {"email": ANN, "statuses": ["failed"]}, remind_every="6h")
    service = alerting(kit, receiver.url, alerts)
    reject(receiver, range(1, 3))
    assert service.run("users_mirror").status is RunStatus.PARTIAL_SUCCESS
    assert smtp.mails == []  # ANN does not follow partial successes

    receiver.status_for_all = 401
    kit.sql("UPDATE users SET plan = 'team'")
    failed = service.run("users_mirror")
    assert failed.status is RunStatus.FAILED
    assert [m.subject for m in smtp.mails] == [f"[ebbtide] users_mirror failed (run {failed.id})"]


# -- once per state change -----------------------------------------------------------------


def test_mapping_failing_again_is_not_told_again_until_remind_every_passes(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    alerts = emailing(smtp.port, {"email": ANN}, remind_every="1h")
    service = alerting(kit, receiver.url, alerts)
    receiver.status_for_all = 401
    first = service.run("users_mirror")
    service.run("users_mirror")
    service.run("users_mirror")
    assert [m.subject for m in smtp.mails] == [f"[ebbtide] users_mirror failed (run {first.id})"]

    rewind_last_alert(service, "users_mirror", timedelta(minutes=59))
    service.run("users_mirror")
    assert len(smtp.mails) == 1, "reminded before remind_every passed"

    rewind_last_alert(service, "users_mirror", timedelta(hours=1))
    reminded = service.run("users_mirror")
    assert len(smtp.mails) == 2
    assert smtp.mails[1].subject == f"[ebbtide] users_mirror still failing (run {reminded.id})"
    assert [d.run_id for d in deliveries(service)] == [first.id, reminded.id]

    service.run("users_mirror")  # the reminder restarted the clock
    assert len(smtp.mails) == 2


def test_reminder_comes_once_remind_every_has_passed_on_the_service_clock(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    service = alerting(kit, receiver.url, emailing(smtp.port, {"email": ANN}, remind_every="1m"))
    clock = Clock()
    service.alerts.clock = clock
    receiver.status_for_all = 401
    service.run("users_mirror")
    clock.advance(timedelta(seconds=59))
    service.run("users_mirror")
    assert len(smtp.mails) == 1
    clock.advance(timedelta(seconds=1))
    service.run("users_mirror")
    assert [m.subject.split(" (")[0] for m in smtp.mails] == [
        "[ebbtide] users_mirror failed",
        "[ebbtide] users_mirror still failing",
    ]


def test_first_success_after_failure_is_told_as_recovered_to_its_subscribers_only(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    alerts = emailing(
        smtp.port,
        {"email": ANN, "statuses": ["failed"]},
        {"email": BOB, "statuses": ["failed", "recovered"]},
    )
    service = alerting(kit, receiver.url, alerts)
    receiver.status_for_all = 401
    service.run("users_mirror")
    assert sorted(m.rcpt_tos[0] for m in smtp.mails) == [ANN, BOB]

    receiver.clear_behaviours()
    recovered = service.run("users_mirror")
    assert recovered.status is RunStatus.SUCCESS
    [mail] = smtp.mails[2:]
    assert mail.rcpt_tos == [BOB]
    assert mail.subject == f"[ebbtide] users_mirror recovered (run {recovered.id})"
    assert "Status: success" in mail.body and "Most failed records" not in mail.body

    service.run("users_mirror")  # still fine: nothing to tell
    assert len(smtp.mails) == 3


def test_success_when_nothing_was_failing_sends_nothing(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    alerts = emailing(smtp.port, {"email": ANN, "statuses": ["failed", "recovered"]})
    service = alerting(kit, receiver.url, alerts)
    assert service.run("users_mirror").status is RunStatus.SUCCESS
    kit.sql("UPDATE users SET plan = 'team' WHERE id <= 3")
    assert service.run("users_mirror").status is RunStatus.SUCCESS
    assert smtp.mails == []
    assert deliveries(service) == []


def test_failing_again_after_recovery_is_a_new_failure_not_a_reminder(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    alerts = emailing(smtp.port, {"email": ANN, "statuses": ["failed", "recovered"]})
    service = alerting(kit, receiver.url, alerts)
    receiver.status_for_all = 401
    service.run("users_mirror")
    receiver.clear_behaviours()
    service.run("users_mirror")
    receiver.status_for_all = 401
    kit.sql("UPDATE users SET plan = 'team' WHERE id <= 3")
    again = service.run("users_mirror")
    assert [m.subject.split(" (")[0] for m in smtp.mails] == [
        "[ebbtide] users_mirror failed",
        "[ebbtide] users_mirror recovered",
        "[ebbtide] users_mirror failed",
    ]
    assert smtp.mails[2].subject.endswith(f"(run {again.id})")


def test_each_mapping_is_told_about_once_on_its_own(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    service = alerting(kit, receiver.url, emailing(smtp.port, {"email": ANN}))
    receiver.status_for_all = 401
    service.run("users_mirror")
    service.run("users_upsert")
    service.run("users_mirror")
    service.run("users_upsert")
    assert sorted(m.subject.split(" (")[0] for m in smtp.mails) == [
        "[ebbtide] users_mirror failed",
        "[ebbtide] users_upsert failed",
    ]


# -- per incident, not per status flip ------------------------------------------------------

BAD_KEY, OTHER_BAD_KEY = 1, 2


def with_other_changes(service: SyncService, kit: Kit, turn: int) -> RunStatus:
    """A run that loads fresh changes and retries the bad record: a partial success."""
    kit.sql(f"UPDATE users SET plan = 'turn-{turn}' WHERE id IN (10, 11)")
    return service.run("users_mirror").status


def retry_only(service: SyncService) -> RunStatus:
    """A run with nothing to send but the bad record's retry: it fails."""
    return service.run("users_mirror").status


def cadence(service: SyncService, kit: Kit, turns: range) -> None:
    """Runs alternating as a scheduler brings them, while the same record keeps failing."""
    for turn in turns:
        assert with_other_changes(service, kit, turn) is RunStatus.PARTIAL_SUCCESS
        assert retry_only(service) is RunStatus.FAILED


def told(smtp: SmtpServer) -> list[str]:
    return [m.subject.split(" (")[0] for m in smtp.mails]


def incident(
    receiver: Receiver, kit: Kit, smtp: SmtpServer, **alerts: Any
) -> tuple[SyncService, Clock]:
    """users_mirror with one record the destination always refuses, after its first run."""
    statuses = ["failed", "partial_success", "recovered"]
    service = alerting(
        kit, receiver.url, emailing(smtp.port, {"email": ANN, "statuses": statuses}, **alerts)
    )
    clock = Clock()
    service.alerts.clock = clock
    reject(receiver, range(BAD_KEY, BAD_KEY + 1))
    assert service.run("users_mirror").status is RunStatus.PARTIAL_SUCCESS
    return service, clock


def second_error_group(receiver: Receiver, kit: Kit) -> None:
    """Another record, refused for another reason, among the next run's changes."""
    reason = {"code": "CONFLICT", "message": "already exists", "error_class": "conflict"}
    receiver.reject(OTHER_BAD_KEY, **reason)
    kit.sql(f"UPDATE users SET plan = 'moved' WHERE id = {OTHER_BAD_KEY}")


def test_a_record_that_keeps_failing_is_one_alert_whatever_the_status_of_each_run(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    service, clock = incident(receiver, kit, smtp, remind_every="6h")
    cadence(service, kit, range(4))
    assert told(smtp) == ["[ebbtide] users_mirror partially succeeded"]
    assert "validation · 1 record(s) · email: not a valid address" in smtp.mails[0].body

    clock.advance(timedelta(hours=5, minutes=59))
    cadence(service, kit, range(4, 6))
    assert len(smtp.mails) == 1, "reminded before remind_every passed"

    clock.advance(timedelta(minutes=1))
    assert retry_only(service) is RunStatus.FAILED
    assert with_other_changes(service, kit, 6) is RunStatus.PARTIAL_SUCCESS
    assert told(smtp)[1:] == ["[ebbtide] users_mirror still failing"]


def test_a_new_error_group_a_run_level_failure_and_the_fix_are_each_told_once(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    service, _ = incident(receiver, kit, smtp)
    cadence(service, kit, range(2))
    second_error_group(receiver, kit)
    assert with_other_changes(service, kit, 2) is RunStatus.PARTIAL_SUCCESS
    cadence(service, kit, range(3, 5))
    assert told(smtp) == ["[ebbtide] users_mirror partially succeeded"] * 2
    assert "New error: conflict · already exists" in smtp.mails[1].body
    assert "New error: validation" not in smtp.mails[1].body

    receiver.status_for_all = 401
    outage = service.run("users_mirror")
    assert outage.status is RunStatus.FAILED and outage.error is not None
    service.run("users_mirror")  # the same outage again: nothing new
    receiver.status_for_all = None
    cadence(service, kit, range(5, 7))
    assert told(smtp)[2:] == ["[ebbtide] users_mirror failed"]
    assert "Error: auth (HTTP 401)" in smtp.mails[2].body

    receiver.clear_behaviours()
    fixed = service.run("users_mirror")
    assert fixed.status is RunStatus.SUCCESS
    with_other_changes(service, kit, 7)
    assert told(smtp)[3:] == ["[ebbtide] users_mirror recovered"]
    assert smtp.mails[3].subject.endswith(f"(run {fixed.id})")


def test_new_error_group_goes_to_subscribers_of_the_status_of_the_run_that_brought_it(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    alerts = emailing(smtp.port, {"email": ANN, "statuses": ["failed"]}, {"email": BOB})
    service = alerting(kit, receiver.url, alerts)
    reject(receiver, range(BAD_KEY, BAD_KEY + 1))
    assert service.run("users_mirror").status is RunStatus.PARTIAL_SUCCESS
    assert retry_only(service) is RunStatus.FAILED  # the same group: news to no one
    assert [m.rcpt_tos for m in smtp.mails] == [[BOB]]

    second_error_group(receiver, kit)
    assert retry_only(service) is RunStatus.FAILED
    assert sorted(m.rcpt_tos[0] for m in smtp.mails[1:]) == [ANN, BOB]


def test_partial_success_under_the_threshold_neither_tells_nor_ends_the_incident(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    # 1 refused of 20 or 19 sent is under 20%; 1 of 3 is over, and so is 1 of 1 (failed).
    mappings = {"users_mirror": mapping("mirror", alert_min_failed_pct=20)}
    statuses = ["failed", "partial_success", "recovered"]
    alerts = emailing(smtp.port, {"email": ANN, "statuses": statuses})
    service = alerting(kit, receiver.url, alerts, mappings=mappings)
    reject(receiver, range(BAD_KEY, BAD_KEY + 1))
    assert service.run("users_mirror").status is RunStatus.PARTIAL_SUCCESS  # 1 of 20: 5%
    assert smtp.mails == []
    assert retry_only(service) is RunStatus.FAILED
    assert with_other_changes(service, kit, 0) is RunStatus.PARTIAL_SUCCESS  # 1 of 3: 33%
    kit.sql("UPDATE users SET plan = 'wide' WHERE id > 2")
    assert service.run("users_mirror").status is RunStatus.PARTIAL_SUCCESS  # 1 of 19: 5%
    assert retry_only(service) is RunStatus.FAILED
    assert told(smtp) == ["[ebbtide] users_mirror failed"]


# -- threshold -----------------------------------------------------------------------------


@pytest.mark.parametrize(("refused", "told"), [(2, False), (9, False), (10, True), (15, True)])
def test_partial_success_is_told_only_at_or_above_alert_min_failed_pct(
    receiver: Receiver, kit: Kit, smtp: SmtpServer, refused: int, told: bool
) -> None:
    mappings = {"users_mirror": mapping("mirror", alert_min_failed_pct=50)}
    service = alerting(kit, receiver.url, emailing(smtp.port, {"email": ANN}), mappings=mappings)
    reject(receiver, range(1, refused + 1))
    run = service.run("users_mirror")
    assert run.status is RunStatus.PARTIAL_SUCCESS and run.failed == refused
    assert len(smtp.mails) == (1 if told else 0), f"{refused}/{ROWS} refused"


def test_threshold_does_not_silence_a_failed_run(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    mappings = {"users_mirror": mapping("mirror", alert_min_failed_pct=100)}
    service = alerting(kit, receiver.url, emailing(smtp.port, {"email": ANN}), mappings=mappings)
    receiver.status_for_all = 401
    assert service.run("users_mirror").status is RunStatus.FAILED
    assert len(smtp.mails) == 1


# -- reliability ---------------------------------------------------------------------------


def every_channel(smtp_port: int, endpoints: HttpEndpoints) -> dict[str, Any]:
    return {
        "email": smtp_spec(smtp_port),
        "subscriptions": [
            {"email": ANN, "channels": ["email", "in_app"]},
            {"slack": {"webhook_url": "${SLACK_URL}", "channel": "#data"}},
            {"webhook": {"url": "${ALERT_HOOK_URL}"}},
        ],
    }


def channel_env(endpoints: HttpEndpoints) -> dict[str, str]:
    return {"SLACK_URL": endpoints.url(SLACK_PATH), "ALERT_HOOK_URL": endpoints.url(HOOK_PATH)}


def test_smtp_down_and_slack_500_leave_the_run_as_it_was_and_other_channels_deliver(
    receiver: Receiver, kit: Kit, endpoints: HttpEndpoints
) -> None:
    endpoints.status[SLACK_PATH] = 500
    alerts = every_channel(closed_port(), endpoints)
    service = alerting(kit, receiver.url, alerts, env=channel_env(endpoints))
    reject(receiver, range(1, 3))
    run = service.run("users_mirror")

    assert run.status is RunStatus.PARTIAL_SUCCESS
    assert (run.loaded_new, run.failed) == (ROWS - 2, 2)
    assert service.state.get_run(run.id) == run
    by_channel = {d.channel: d for d in deliveries(service)}
    assert set(by_channel) == {"email", "in_app", "slack", "webhook"}
    email, slack = by_channel["email"], by_channel["slack"]
    assert (email.delivered, email.attempts) == (False, 3)
    assert email.error is not None and "ConnectionRefusedError" in email.error
    assert (slack.delivered, slack.attempts) == (False, 3)
    assert slack.error is not None and "HTTP 500" in slack.error
    assert "no service at ***" in slack.error  # the server repeated the secret URL: masked
    assert len(endpoints.to(SLACK_PATH)) == 3
    assert (by_channel["webhook"].delivered, by_channel["webhook"].attempts) == (True, 1)
    assert len(endpoints.to(HOOK_PATH)) == 1
    assert by_channel["in_app"].delivered
    assert len(service.alerts.book.notifications(ANN)) == 1


def test_smtp_refusing_the_message_is_tried_three_times_then_recorded(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    smtp.refuse = True
    service = alerting(kit, receiver.url, emailing(smtp.port, {"email": ANN}))
    receiver.status_for_all = 401
    run = service.run("users_mirror")
    assert run.status is RunStatus.FAILED
    assert smtp.data_commands == 3
    [delivery] = deliveries(service)
    assert (delivery.run_id, delivery.delivered, delivery.attempts) == (run.id, False, 3)
    assert delivery.error is not None and "554" in delivery.error

    smtp.refuse = False  # one failed delivery does not stop the next alert
    receiver.clear_behaviours()
    kit.sql("UPDATE users SET plan = 'team' WHERE id = 1")
    reject(receiver, range(1, 2))
    service.run("users_upsert")
    assert [m.subject.split(" (")[0] for m in smtp.mails] == [
        "[ebbtide] users_upsert partially succeeded"
    ]


def test_email_subscription_left_without_smtp_server_does_not_stop_other_channels(
    receiver: Receiver, kit: Kit, smtp: SmtpServer
) -> None:
    # People subscribed by email through the CLI; later alerts.email leaves ebbtide.yml.
    service = alerting(kit, receiver.url, {"email": smtp_spec(smtp.port)})
    book = service.alerts.book
    book.subscribe(SubscriptionSpec(email=[ANN]), utcnow())
    book.subscribe(SubscriptionSpec(email=[BOB], channels=["in_app"]), utcnow())
    config = kit.root / "ebbtide.yml"
    doc = yaml.safe_load(config.read_text())
    del doc["alerts"]
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    service = kit.service()
    receiver.status_for_all = 401
    run = service.run("users_mirror")

    assert run.status is RunStatus.FAILED
    assert [n.run_id for n in service.alerts.book.notifications(BOB)] == [run.id]
    by_channel = {d.channel: d for d in deliveries(service)}
    assert by_channel["email"].delivered is False and by_channel["email"].target == ANN


def test_alerts_wait_between_attempts_with_growing_delays(
    receiver: Receiver, kit: Kit, endpoints: HttpEndpoints
) -> None:
    endpoints.status[HOOK_PATH] = 503
    alerts = {"subscriptions": [{"webhook": {"url": "${ALERT_HOOK_URL}"}}]}
    service = alerting(kit, receiver.url, alerts, env=channel_env(endpoints))
    waits: list[float] = []
    service.alerts.sleep = waits.append
    service.alerts.retry_delay_s = 0.5
    receiver.status_for_all = 401
    service.run("users_mirror")
    assert waits == [0.5, 1.0]  # between attempts 1-2 and 2-3, none after the last
    assert len(endpoints.to(HOOK_PATH)) == 3


def test_slack_error_repeating_the_webhook_path_does_not_show_it_in_the_delivery_log(
    receiver: Receiver, kit: Kit, endpoints: HttpEndpoints
) -> None:
    endpoints.status[SLACK_PATH], endpoints.echo = 404, "path"
    alerts = {"subscriptions": [{"slack": {"webhook_url": "${SLACK_URL}", "channel": "#data"}}]}
    service = alerting(kit, receiver.url, alerts, env=channel_env(endpoints))
    receiver.status_for_all = 401
    service.run("users_mirror")
    [delivery] = deliveries(service)
    assert delivery.error is not None
    assert delivery.error.startswith("Slack: AlertPostError: HTTP 404")
    assert "slack-secret-path-9f8e7d" not in delivery.error


# -- channels that hang --------------------------------------------------------------------


def hanging(kit: Kit, receiver: Receiver, silent: SilentServer, **limits: float) -> SyncService:
    """Slack and email both at a server that takes the connection and never answers."""
    alerts = {
        "email": smtp_spec(silent.port),
        "subscriptions": [
            {"email": ANN},
            {"slack": {"webhook_url": "${SLACK_URL}", "channel": "#data"}},
        ],
        **limits,
    }
    return alerting(kit, receiver.url, alerts, env={"SLACK_URL": silent.url(SLACK_PATH)})


def test_a_channel_that_never_answers_is_given_up_per_attempt_with_a_clear_message(
    receiver: Receiver, kit: Kit, silent: SilentServer
) -> None:
    service = hanging(kit, receiver, silent, timeout_s=0.5, give_up_after_s=30)
    reject(receiver, range(1, 3))
    run = service.run("users_mirror")

    assert run.status is RunStatus.PARTIAL_SUCCESS and (run.loaded_new, run.failed) == (18, 2)
    assert service.state.get_run(run.id) == run
    assert silent.saw(6), "three attempts on each channel"
    by_channel = {d.channel: d for d in deliveries(service)}
    where = f"127.0.0.1:{silent.port}"
    assert by_channel["slack"].error == f"Slack: no answer from {where} within 0.5 s"
    assert by_channel["email"].error == f"Email: no answer from {where} within 0.5 s"
    assert {(d.delivered, d.attempts) for d in by_channel.values()} == {(False, 3)}


def test_all_attempts_of_a_delivery_end_within_give_up_after(
    receiver: Receiver, kit: Kit, silent: SilentServer
) -> None:
    # Each attempt waits out its full second, so a second attempt has at most 0.2 s left
    # and a third none: without the bound in total there would be three.
    service = hanging(kit, receiver, silent, timeout_s=1, give_up_after_s=1.2)
    receiver.status_for_all = 401
    assert service.run("users_mirror").status is RunStatus.FAILED
    for delivery in deliveries(service):
        assert not delivery.delivered and delivery.attempts <= 2, delivery
        assert delivery.error is not None
        assert delivery.error.endswith(" s")
        assert f"no answer from 127.0.0.1:{silent.port} within " in delivery.error
