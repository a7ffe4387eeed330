"""A record's timeline across three syncs: added, then a change the destination refused, then
the retry it accepted; and whether the destination holds it now."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.browse import log_in
from tests.browser.site import VIEWER, Site

pytestmark = pytest.mark.xdist_group("browser")

KEY = 7
REFUSAL = "field 'plan' is not one of free, pro"


def test_a_record_timeline_across_three_syncs(page: Page, site: Site) -> None:
    added, status = site.sync()
    assert status == "success"
    site.warehouse(f"UPDATE users SET plan = 'team' WHERE id = {KEY}")
    site.receiver.reject(KEY, message=REFUSAL)
    refused, status = site.sync()
    assert status == "failed" and [r["key"] for r in site.sent_by(refused)] == [KEY]
    site.receiver.clear_behaviours()
    retried, status = site.sync()
    assert status == "success" and [r["key"] for r in site.sent_by(retried)] == [KEY]

    # A viewer may read it all: from the failed sync to the record's timeline.
    log_in(page, site.url, VIEWER)
    page.goto(f"{site.url}/runs/{refused}")
    page.get_by_test_id("failed-records").get_by_role("link", name="Record timeline").click()
    expect(page).to_have_url(f"{site.url}/mappings/users/timeline?key={KEY}")
    expect(page.get_by_label("Record key")).to_have_value(str(KEY))

    rows = page.get_by_test_id("timeline").locator("tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.locator("td:first-child")).to_have_text([f"#{retried}", f"#{refused}", f"#{added}"])
    expect(rows.get_by_test_id("operation")).to_have_text(["updated", "updated", "added"])
    expect(rows.get_by_test_id("outcome")).to_have_text(["Loaded", "Failed", "Loaded"])
    expect(rows.nth(1)).to_contain_text(REFUSAL)
    expect(rows.nth(1).locator("pre")).to_contain_text('"team"')
    expect(page.get_by_test_id("in-destination")).to_contain_text("Yes")
    expect(page.get_by_test_id("open-failure")).to_have_count(0)

    # Typed into the form, another key: only the first sync sent it.
    page.get_by_label("Record key").fill("8")
    page.get_by_role("button", name="Show timeline").click()
    expect(page).to_have_url(f"{site.url}/mappings/users/timeline?key=8")
    expect(page.get_by_test_id("timeline").locator("tbody tr")).to_have_count(1)
    expect(page.get_by_test_id("operation")).to_have_text(["added"])
