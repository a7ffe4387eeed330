"""What the server refuses, whatever a page shows: a viewer's reset, and any change made
without the session's CSRF token."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from tests.browser.browse import log_in
from tests.browser.site import ADMIN, VIEWER, Site

pytestmark = pytest.mark.xdist_group("browser")


def csrf_on(page: Page) -> str:
    """The session's CSRF token, as every page carries it (the Log out form)."""
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert token
    return token


def resets(site: Site) -> list[object]:
    answer = site.api.get("/api/v1/mappings/users/actions")
    assert answer.status_code == 200, answer.text
    return [a for a in answer.json() if a["action"] == "reset"]


def test_a_viewer_sees_no_reset_and_a_forged_one_is_refused(page: Page, site: Site) -> None:
    site.sync()
    log_in(page, site.url, VIEWER)
    page.goto(f"{site.url}/mappings/users")
    expect(page.get_by_role("heading", name="users", exact=True)).to_be_visible()
    expect(page.get_by_test_id("runs").locator("tbody tr")).to_have_count(1)
    for name in ("Sync now", "Reset sync", "Pause"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    expect(page.get_by_text("Reset sync")).to_have_count(0)
    expect(page.get_by_label("More actions")).to_have_count(0)

    # The forged form: the viewer's own session cookie and CSRF token, sent as the form would.
    forged = page.request.post(
        f"{site.url}/mappings/users/reset",
        form={"csrf_token": csrf_on(page), "confirm": "on"},
        max_redirects=0,
    )
    assert forged.status == 403, forged.text()
    assert "viewer" in forged.text()
    asked = page.request.post(
        f"{site.url}/mappings/users/sync", form={"csrf_token": csrf_on(page)}, max_redirects=0
    )
    assert asked.status == 403
    assert resets(site) == []


def test_a_change_without_the_csrf_token_is_refused(
    page: Page, site: Site, new_page: Callable[..., Page]
) -> None:
    log_in(page, site.url, ADMIN)
    page.goto(f"{site.url}/mappings/users")
    without = page.request.post(
        f"{site.url}/mappings/users/reset", form={"confirm": "on"}, max_redirects=0
    )
    assert without.status == 403, without.text()
    assert "security token" in without.text()
    wrong = page.request.post(
        f"{site.url}/mappings/users/reset",
        form={"confirm": "on"},
        headers={"X-CSRF-Token": "not-the-token"},
        max_redirects=0,
    )
    assert wrong.status == 403
    # Another person's token does not fit this session either.
    other = new_page()
    log_in(other, site.url, ADMIN)
    borrowed = page.request.post(
        f"{site.url}/mappings/users/reset",
        form={"csrf_token": csrf_on(other), "confirm": "on"},
        max_redirects=0,
    )
    assert borrowed.status == 403
    assert resets(site) == []
    # The same request with this session's token goes through: the refusals were the token's.
    accepted = page.request.post(
        f"{site.url}/mappings/users/reset",
        form={"csrf_token": csrf_on(page), "confirm": "on"},
        max_redirects=0,
    )
    assert accepted.status == 303, accepted.text()
    assert len(resets(site)) == 1
