"""Reset sync from the mapping page: the dialog's button waits for the checkbox, and the next
sync, asked with Sync now, sends the whole model again (as the receiver saw it). Pause and
Resume, the menu's other actions."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.browse import log_in
from tests.browser.site import ADMIN, Site

pytestmark = pytest.mark.xdist_group("browser")

ROWS = 30


def test_reset_sync_then_sync_now_sends_the_whole_model(page: Page, site: Site) -> None:
    first, status = site.sync()
    assert status == "success" and len(site.sent_by(first)) == ROWS
    # Nothing changes in the warehouse: without the reset the next sync would send nothing.

    log_in(page, site.url, ADMIN)
    page.goto(f"{site.url}/mappings/users")
    page.get_by_label("More actions").click()
    page.get_by_role("link", name="Reset sync").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_test_id("reset-records")).to_have_text(str(ROWS))
    confirm = dialog.get_by_role("button", name="Reset sync")
    understood = dialog.get_by_label("I understand what happens when a sync is reset")
    expect(confirm).to_be_disabled()
    understood.check()
    expect(confirm).to_be_enabled()
    understood.uncheck()
    expect(confirm).to_be_disabled()
    understood.check()
    confirm.click()

    expect(page).to_have_url(f"{site.url}/mappings/users")
    expect(page.get_by_role("status")).to_contain_text("Sync reset")
    assert site.sent_by(first) and len(site.receiver.records) == ROWS  # a reset sends nothing

    page.get_by_role("button", name="Sync now").click()
    expect(page.get_by_role("status")).to_contain_text("Sync requested")
    second, status = site.wait_finished(2)
    assert status == "success"
    sent = site.sent_by(second)
    assert sorted(r["key"] for r in sent) == list(range(1, ROWS + 1))

    # The history says who asked for it and that it followed a reset.
    page.reload()
    row = page.get_by_test_id("runs").locator(f"tr[data-run='{second}']")
    expect(row).to_contain_text("(after a reset)")
    expect(row).to_contain_text(ADMIN)
    expect(page.get_by_test_id("actions")).to_contain_text(re.compile("reset", re.I))


def test_pause_and_resume_from_the_menu(page: Page, site: Site) -> None:
    log_in(page, site.url, ADMIN)
    page.goto(f"{site.url}/mappings/users")
    heading = page.get_by_role("heading", level=1)
    expect(heading).not_to_contain_text("Paused")
    page.get_by_label("More actions").click()
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_contain_text("users is paused")
    expect(heading).to_contain_text("Paused")
    expect(page.get_by_test_id("actions").locator("tbody tr").first).to_contain_text(ADMIN)

    page.goto(f"{site.url}/mappings")
    row = page.get_by_test_id("mappings").locator("tbody tr", has_text="users")
    expect(row).to_contain_text("Paused")

    page.goto(f"{site.url}/mappings/users")
    page.get_by_label("More actions").click()
    page.get_by_role("button", name="Resume").click()
    expect(page.get_by_role("status")).to_contain_text("users is resumed")
    expect(heading).not_to_contain_text("Paused")
