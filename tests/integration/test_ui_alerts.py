"""Settings → User preferences → Activity notifications → Reverse ETL, the notifications page
and the bell, over a real workspace: alerts made through the form reach a real SMTP server
(aiosmtpd), a Slack-like HTTP endpoint and the state store when a sync partly fails."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import yaml
from fastapi.testclient import TestClient

from ebbtide.demo.receiver import Receiver
from ebbtide.server.api.app import create_app
from ebbtide.server.api.context import services_over
from ebbtide.state.actions import ActionLog
from ebbtide.state.tokens import TokenBook, TokenScope
from ebbtide.state.users import Role
from ebbtide.values import RunStatus
from tests.integration.alert_servers import HttpEndpoints, SmtpServer
from tests.integration.ui_kit import PASSWORD, Ui, csrf_of, log_in
from tests.integration.workspace_kit import Kit

SETTINGS = "/settings/notifications"
EDITOR = "editor@example.com"
OPS = "ops@example.com"  # subscribed in ebbtide.yml
SLACK_PATH = "/services/T0001/B0002/slack-secret-path-4a3b2c"
UNREAD = re.compile(r'data-testid="unread-count">(\d+)<')


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture
def slack() -> Iterator[HttpEndpoints]:
    with HttpEndpoints() as server:
        yield server


@pytest.fixture
def alerting(kit: Kit, receiver: Receiver, smtp: SmtpServer) -> Ui:
    """The UI over the kit's workspace with an SMTP server and one alert in ebbtide.yml."""
    kit.build(receiver.url, rows=12)
    config = kit.root / "ebbtide.yml"
    doc = yaml.safe_load(config.read_text())
    doc["alerts"] = {
        "email": {
            "host": "127.0.0.1",
            "port": smtp.port,
            "from": "ebbtide@example.com",
            "tls": "none",
        },
        "subscriptions": [{"email": OPS, "statuses": ["failed"]}],
    }
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    service = kit.service()
    service.alerts.retry_delay_s = 0.01
    services = services_over(lambda: service.workspace, service.state)
    assert services.users is not None
    return Ui(service, services.users, create_app(services))


def create_alert(browser: TestClient, **fields: object) -> object:
    form = browser.get(SETTINGS)
    return browser.post(SETTINGS, data={"csrf_token": csrf_of(form.text), **fields})


def unread(html: str) -> int:
    found = UNREAD.search(html)
    assert found, "the page has no bell"
    return int(found.group(1))


def test_an_email_and_in_app_alert_from_the_form_tells_of_a_partial_success(
    alerting: Ui, receiver: Receiver, smtp: SmtpServer
) -> None:
    browser = alerting.logged_in(Role.EDITOR)
    form = browser.get(SETTINGS)
    assert form.status_code == 200
    for crumb in ("Settings", "User preferences", "Activity notifications", "Reverse ETL"):
        assert f"<li>{crumb}</li>" in form.text or f">{crumb}</span>" in form.text
    assert f'value="{EDITOR}"' in form.text  # the email defaults to the person's own
    made = create_alert(
        browser, statuses=["partial_success"], channels=["email", "in_app"], email=EDITOR
    )
    assert made.status_code == 303 and made.headers["location"] == SETTINGS
    listed = browser.get(SETTINGS).text
    assert "Alert created" in listed and "email, in-app" in listed
    assert unread(listed) == 0
    [action] = [
        a for a in ActionLog(alerting.service.state.engine).listed() if a.action == "subscribe"
    ]
    assert action.actor == EDITOR and "partial_success" in (action.detail or "")

    receiver.reject(3, message="email: not a valid address")
    run = alerting.service.run("users_mirror")
    assert run.status is RunStatus.PARTIAL_SUCCESS

    [mail] = smtp.to(EDITOR)
    assert "users_mirror" in mail.subject
    assert smtp.to(OPS) == []  # ebbtide.yml's alert is for failed syncs only
    page = browser.get("/notifications")
    assert unread(page.text) == 1
    assert f'href="/runs/{run.id}"' in page.text and 'href="/mappings/users_mirror"' in page.text
    assert "Unread" in page.text and "Mark all as read" in page.text
    marked = browser.post("/notifications/read", data={"csrf_token": csrf_of(page.text)})
    assert marked.status_code == 303
    after = browser.get("/notifications")
    assert unread(after.text) == 0 and "Unread" not in after.text
    assert f'href="/runs/{run.id}"' in after.text  # read, still listed
    assert unread(browser.get("/mappings").text) == 0


def test_a_slack_alert_from_the_form_reaches_its_webhook_and_the_url_is_never_shown(
    alerting: Ui, receiver: Receiver, slack: HttpEndpoints
) -> None:
    browser = alerting.logged_in(Role.EDITOR)
    webhook = slack.url(SLACK_PATH)
    made = create_alert(
        browser,
        statuses=["failed", "partial_success"],
        channels=["slack"],
        slack_webhook_url=webhook,
        slack_channel="#data-alerts",
    )
    assert made.status_code == 303
    listed = browser.get(SETTINGS).text
    assert "slack #data-alerts" in listed and "•••• (set)" in listed
    assert SLACK_PATH not in listed and "slack-secret" not in listed
    [stored] = alerting.service.alerts.book.subscriptions()
    edit = browser.get(f"{SETTINGS}/{stored.id}/edit").text
    assert "slack-secret" not in edit and "•••• (set)" in edit
    details = [a.detail or "" for a in ActionLog(alerting.service.state.engine).listed()]
    assert details and not any("slack-secret" in d for d in details)

    receiver.reject(5)
    run = alerting.service.run("users_upsert")
    assert run.status is RunStatus.PARTIAL_SUCCESS
    [post] = slack.posts
    assert post.path == SLACK_PATH and post.json["channel"] == "#data-alerts"
    assert "users_upsert" in post.json["text"]

    # Saved without a new URL: the channel changes, the secret stays.
    changed = browser.post(
        f"{SETTINGS}/{stored.id}",
        data={
            "csrf_token": csrf_of(edit),
            "statuses": ["failed"],
            "slack_channel": "#oncall",
            "slack_webhook_url": "",
        },
    )
    assert changed.status_code == 303
    [kept] = alerting.service.alerts.book.subscriptions()
    assert kept.spec.slack is not None
    assert kept.spec.slack.webhook_url == webhook and kept.spec.slack.channel == "#oncall"
    assert [str(s) for s in kept.spec.statuses] == ["failed"]


def test_view_active_email_addresses_lists_everyone_signed_up(alerting: Ui) -> None:
    browser = alerting.logged_in(Role.EDITOR)
    create_alert(browser, statuses=["failed"], channels=["email"], email="team@example.com")
    create_alert(browser, statuses=["failed"], channels=["in_app"], email="")
    page = browser.get(SETTINGS).text
    assert "View active email addresses" in page
    fragment = browser.get(f"{SETTINGS}/emails", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert "team@example.com" in fragment.text and OPS in fragment.text
    assert EDITOR not in fragment.text  # in-app only: not by email
    whole = browser.get(f"{SETTINGS}/emails")  # without htmx: the page, with the list open
    assert "<html" in whole.text and "team@example.com" in whole.text


def test_a_form_with_mistakes_says_what_is_wrong_next_to_each_field_and_keeps_the_input(
    alerting: Ui,
) -> None:
    browser = alerting.logged_in(Role.EDITOR)
    empty = create_alert(browser, email=EDITOR)
    assert empty.status_code == 422
    assert "Choose at least one sync status" in empty.text
    assert "Choose at least one: email, Slack or in-app." in empty.text

    insecure = "http://hooks.slack.com/services/T1/B2/insecure-token-77"
    wrong = create_alert(
        browser,
        statuses=["partial_success"],
        channels=["email", "slack"],
        email="not-an-address",
        slack_webhook_url=insecure,
        slack_channel="#kept-channel",
    )
    assert wrong.status_code == 422
    assert 'id="email-error"' in wrong.text and "is not an email address" in wrong.text
    assert 'id="webhook-error"' in wrong.text and "must start with https://" in wrong.text
    assert 'value="not-an-address"' in wrong.text and 'value="#kept-channel"' in wrong.text
    assert "insecure-token-77" not in wrong.text
    assert re.search(r'value="partial_success"\s+checked', wrong.text)
    assert re.search(r'value="slack"\s+checked', wrong.text)
    assert alerting.service.alerts.book.subscriptions() == []


def test_a_viewer_sees_no_create_alert_button_and_cannot_post_one(alerting: Ui) -> None:
    browser = alerting.logged_in(Role.VIEWER)
    page = browser.get(SETTINGS)
    assert page.status_code == 200
    assert "Create alert" not in page.text and "View active email addresses" in page.text
    assert 'href="/settings/users"' not in page.text
    forged = browser.post(
        SETTINGS,
        data={
            "csrf_token": csrf_of(page.text),  # the logout form's: a valid token
            "statuses": ["failed"],
            "channels": ["in_app"],
        },
    )
    assert forged.status_code == 403
    assert alerting.service.alerts.book.subscriptions() == []


def test_an_alert_without_its_csrf_token_is_refused(alerting: Ui) -> None:
    browser = alerting.logged_in(Role.EDITOR)
    refused = browser.post(SETTINGS, data={"statuses": ["failed"], "channels": ["in_app"]})
    assert refused.status_code == 403 and "security token" in refused.text
    assert alerting.service.alerts.book.subscriptions() == []


def test_an_alert_is_removed_by_its_maker_or_an_admin_and_ebbtide_yml_ones_stay(
    alerting: Ui,
) -> None:
    maker = alerting.logged_in(Role.EDITOR)
    create_alert(maker, statuses=["failed"], channels=["in_app"])
    [stored] = alerting.service.alerts.book.subscriptions()
    page = maker.get(SETTINGS).text
    assert f'action="{SETTINGS}/{stored.id}/delete"' in page
    assert "ebbtide.yml" in page and page.count(">Remove</button>") == 1

    alerting.users.create("other@example.com", Role.EDITOR, PASSWORD)
    other = alerting.client()
    log_in(other, "other@example.com", PASSWORD)
    theirs = other.get(SETTINGS).text
    assert ">Remove</button>" not in theirs
    refused = other.post(f"{SETTINGS}/{stored.id}/delete", data={"csrf_token": csrf_of(theirs)})
    assert refused.status_code == 403

    admin = alerting.logged_in(Role.ADMIN)
    admin_page = admin.get(SETTINGS).text
    assert 'href="/settings/users"' in admin_page
    removed = admin.post(f"{SETTINGS}/{stored.id}/delete", data={"csrf_token": csrf_of(admin_page)})
    assert removed.status_code == 303
    assert alerting.service.alerts.book.subscriptions() == []
    assert any(a.action == "unsubscribe" for a in ActionLog(alerting.service.state.engine).listed())


def test_the_api_twin_makes_a_slack_alert_and_never_gives_its_url_back(
    alerting: Ui, receiver: Receiver, slack: HttpEndpoints
) -> None:
    write, _ = TokenBook(alerting.service.state.engine).create(TokenScope.WRITE, "ops")
    api = TestClient(alerting.app)  # type: ignore[arg-type]
    headers = {"Authorization": f"Bearer {write}"}
    body = {"slack": {"webhook_url": slack.url(SLACK_PATH), "channel": "#api"}}
    made = api.post("/api/v1/alerts/subscriptions", headers=headers, json=body)
    assert made.status_code == 201, made.text
    assert made.json()["to"] == "slack #api" and "slack-secret" not in made.text
    listed = api.get("/api/v1/alerts/subscriptions", headers=headers)
    assert "slack-secret" not in listed.text
    insecure = {"slack": {"webhook_url": "http://hooks.slack.com/x/y", "channel": "#api"}}
    refused = api.post("/api/v1/alerts/subscriptions", headers=headers, json=insecure)
    assert refused.status_code == 422 and "https://" in refused.json()["error"]
    both = api.post("/api/v1/alerts/subscriptions", headers=headers, json={**body, "email": EDITOR})
    assert both.status_code == 422

    receiver.reject(2)
    alerting.service.run("users_mirror")
    [post] = slack.posts
    assert post.json["channel"] == "#api"


# -- users (admins only) -------------------------------------------------------------------


def test_an_admin_changes_roles_and_disables_users_and_each_change_is_recorded(ui: Ui) -> None:
    admin = ui.logged_in(Role.ADMIN)
    viewer = ui.logged_in(Role.VIEWER)
    page = admin.get("/settings/users")
    assert page.status_code == 200
    assert "viewer@example.com" in page.text and "Change role" in page.text
    assert page.text.count(">Disable</button>") == 1  # not for the admin themselves
    token = csrf_of(page.text)

    promoted = admin.post(
        "/settings/users/role",
        data={"csrf_token": token, "email": "viewer@example.com", "role": "editor"},
    )
    assert promoted.status_code == 303
    user = ui.users.by_email("viewer@example.com")
    assert user is not None and user.role is Role.EDITOR
    assert viewer.get("/settings/notifications").status_code == 303  # logged out by the change

    disabled = admin.post(
        "/settings/users/disabled",
        data={"csrf_token": token, "email": "viewer@example.com", "disabled": "true"},
    )
    assert disabled.status_code == 303
    listed = admin.get("/settings/users").text
    assert "Disabled" in listed and ">Enable</button>" in listed
    assert log_in(ui.client(), "viewer@example.com", PASSWORD).status_code == 401
    admin.post(
        "/settings/users/disabled",
        data={"csrf_token": token, "email": "viewer@example.com", "disabled": "false"},
    )
    assert log_in(ui.client(), "viewer@example.com", PASSWORD).status_code == 303

    myself = admin.post(
        "/settings/users/role",
        data={"csrf_token": token, "email": "admin@example.com", "role": "viewer"},
    )
    assert myself.status_code == 403
    done = [(a.actor, a.action, a.detail) for a in ActionLog(ui.service.state.engine).listed()]
    assert done == [
        ("admin@example.com", "enable_user", "viewer@example.com"),
        ("admin@example.com", "disable_user", "viewer@example.com"),
        ("admin@example.com", "set_role", "viewer@example.com: editor"),
    ]


def test_only_admins_see_and_use_the_users_page(ui: Ui) -> None:
    editor = ui.logged_in(Role.EDITOR)
    page = editor.get("/settings/notifications")
    assert 'href="/settings/users"' not in page.text
    assert editor.get("/settings/users").status_code == 403
    forged = editor.post(
        "/settings/users/role",
        data={"csrf_token": csrf_of(page.text), "email": "editor@example.com", "role": "admin"},
    )
    assert forged.status_code == 403
    user = ui.users.by_email("editor@example.com")
    assert user is not None and user.role is Role.EDITOR
    admin = ui.logged_in(Role.ADMIN)
    no_token = admin.post(
        "/settings/users/role", data={"email": "editor@example.com", "role": "admin"}
    )
    assert no_token.status_code == 403


def test_an_alert_for_one_mapping_stays_quiet_about_others_and_edits_keep_in_app_personal(
    alerting: Ui, receiver: Receiver
) -> None:
    browser = alerting.logged_in(Role.EDITOR)
    create_alert(browser, statuses=["partial_success"], channels=["in_app"], mapping="users_upsert")
    [stored] = alerting.service.alerts.book.subscriptions()
    assert stored.spec.mappings == ["users_upsert"]
    receiver.reject(4)
    assert alerting.service.run("users_mirror").status is RunStatus.PARTIAL_SUCCESS
    assert unread(browser.get("/notifications").text) == 0
    upsert = alerting.service.run("users_upsert")
    page = browser.get("/notifications").text
    assert unread(page) == 1 and f'href="/runs/{upsert.id}"' in page

    edit = browser.get(f"{SETTINGS}/{stored.id}/edit").text
    assert 'name="email"' not in edit  # in-app notifications are the person's own
    browser.post(
        f"{SETTINGS}/{stored.id}",
        data={"csrf_token": csrf_of(edit), "statuses": ["failed"], "email": "x@example.com"},
    )
    changed = alerting.service.alerts.book.subscription(stored.id)
    assert changed is not None and changed.spec.email == [EDITOR]
    assert changed.spec.mappings is None and [str(s) for s in changed.spec.statuses] == ["failed"]
