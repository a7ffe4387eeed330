"""Logging in through the form, and requests the server must refuse whatever the page shows."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.browse import log_in
from tests.browser.site import ADMIN, Site

pytestmark = pytest.mark.xdist_group("browser")


def test_a_user_made_with_the_cli_logs_in_and_sees_the_mappings(page: Page, site: Site) -> None:
    page.goto(f"{site.url}/mappings")
    expect(page).to_have_url(f"{site.url}/login?next=/mappings")
    page.get_by_label("Email").fill(ADMIN)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")

    log_in(page, site.url, ADMIN)
    page.goto(f"{site.url}/mappings")
    mappings = page.get_by_test_id("mappings")
    expect(mappings.get_by_role("link", name="users", exact=True)).to_be_visible()
    expect(mappings).to_contain_text("Never synced")
    expect(page.locator("header")).to_contain_text(ADMIN)
