"""An invalid edit of ebbtide.yml, refused by the running serve, is a banner on every page
until a valid edit replaces it."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.browse import log_in
from tests.browser.site import ADMIN, Site

pytestmark = pytest.mark.xdist_group("browser")


def edit(file: Path, text: str) -> None:
    """Saved in one step, as editors do: serve never reads half a file."""
    draft = file.with_name(f".{file.name}.swp")
    draft.write_text(text)
    draft.replace(file)


def test_an_invalid_edit_is_a_banner_on_every_page_until_fixed(page: Page, site: Site) -> None:
    log_in(page, site.url, ADMIN)
    page.goto(f"{site.url}/mappings")
    banner = page.locator(".banner.error")
    expect(page.get_by_test_id("mappings")).to_be_visible()
    expect(banner).to_have_count(0)

    config = site.workspace.root / "ebbtide.yml"
    valid = config.read_text()
    edit(config, valid.replace("destination: hook", "destination: hoook"))
    seen = site.serve.wait_line("changed but is invalid")
    for path in ("/mappings", "/destinations", "/mappings/users", "/settings/notifications"):
        page.goto(f"{site.url}{path}")
        expect(banner).to_contain_text("Workspace error")
        expect(banner).to_contain_text("hoook")
    expect(banner).to_have_attribute("role", "alert")

    edit(config, valid)
    site.serve.wait_line("reloaded ebbtide.yml", after=seen)
    page.reload()
    expect(page.get_by_role("heading", name="Reverse ETL alerts")).to_be_visible()
    expect(banner).to_have_count(0)
