"""Replay only the failed records of a sync; then sign up for partial-success alerts by email
and in-app, make a sync partly fail, and see the bell's count go up and the email arrive at the
local SMTP server."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.browse import log_in
from tests.browser.site import ADMIN, TIMEOUT_S, Site, wait_until

pytestmark = pytest.mark.xdist_group("browser")

ROWS = 30


def test_replay_only_the_failed_records_of_a_sync(page: Page, site: Site) -> None:
    for key in (5, 6):
        site.receiver.reject(key, message="field 'email' is not a valid address")
    first, status = site.sync()
    assert status == "partial_success"
    site.receiver.clear_behaviours()  # the destination was fixed: the replay goes through

    log_in(page, site.url, ADMIN)
    page.goto(f"{site.url}/runs/{first}")
    page.get_by_role("button", name="Replay").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_test_id("replay-as_sent")).to_have_text(str(ROWS))
    expect(dialog.get_by_test_id("replay-only_failed")).to_have_text("2")
    dialog.get_by_label("Replay only its failed records").check()
    dialog.get_by_role("button", name="Replay").click()

    expect(page).to_have_url(f"{site.url}/mappings/users")
    expect(page.get_by_role("status")).to_contain_text(f"Replay of sync #{first} queued: 2 records")
    replayed, status = site.wait_finished(2)
    assert status == "success"
    assert sorted(r["key"] for r in site.sent_by(replayed)) == [5, 6]
    page.reload()
    row = page.get_by_test_id("runs").locator(f"tr[data-run='{replayed}']")
    expect(row).to_contain_text(f"#{first}")
    expect(row).to_contain_text(ADMIN)


def test_partial_success_alerts_reach_the_bell_and_the_inbox(page: Page, site: Site) -> None:
    assert site.sync()[1] == "success"
    log_in(page, site.url, ADMIN)
    page.goto(f"{site.url}/settings/notifications")
    page.get_by_label("Sync partial success").check()
    page.get_by_label("Enable email notifications").check()
    expect(page.get_by_label("Email address or alias")).to_have_value(ADMIN)
    page.get_by_label("Enable in-app notifications").check()
    page.get_by_role("button", name="Create alert").click()
    expect(page.get_by_role("status")).to_contain_text("Alert created")
    subscriptions = page.get_by_test_id("subscriptions")
    expect(subscriptions).to_contain_text(ADMIN)
    expect(subscriptions).to_contain_text("email, in-app")
    page.get_by_role("button", name="View active email addresses").click()
    expect(page.get_by_test_id("active-emails").get_by_role("listitem")).to_have_text([ADMIN])
    bell = page.get_by_test_id("unread-count")
    expect(bell).to_have_text("0")

    # Two users change; the destination refuses one of them.
    site.warehouse("UPDATE users SET plan = 'team' WHERE id IN (7, 8)")
    site.receiver.reject(7, message="field 'plan' is not one of free, pro")
    page.goto(f"{site.url}/mappings/users")
    page.get_by_role("button", name="Sync now").click()
    partial, status = site.wait_finished(2)
    assert status == "partial_success"
    assert sorted(r["key"] for r in site.sent_by(partial)) == [7, 8]

    [mail] = wait_until(lambda: site.smtp.to(ADMIN), TIMEOUT_S, "the alert email")
    assert "users" in mail.subject and "partial" in mail.subject.lower(), mail.subject
    assert "field 'plan' is not one of free, pro" in mail.body
    page.reload()
    expect(bell).to_have_text("1")
    page.get_by_role("link", name="Notifications: 1 unread").click()
    notification = page.get_by_test_id("notifications").get_by_role("listitem").first
    expect(notification).to_contain_text("Unread")
    expect(notification.get_by_role("link", name=f"sync {partial}")).to_be_visible()
