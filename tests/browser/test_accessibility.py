"""Every main page, at 1280 px and at a phone's 390 px, checked by axe-core (pinned in
vendor/): no violation of impact serious or critical, no sideways scrolling (wide tables
scroll in their own box), and no secret in the HTML. Each page is kept as a screenshot in
.artifacts/screenshots/ (gitignored), and two of them are the README's (docs/screenshots/)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from playwright.sync_api import Page, expect

from tests.browser.browse import (
    AXE,
    DESKTOP,
    PHONE,
    describe,
    log_in,
    screenshot,
    serious_violations,
    sideways_overflow,
)
from tests.browser.site import ADMIN, Site

pytestmark = pytest.mark.xdist_group("browser")

REFUSED = 7
# vendor/VENDORED.md: the published build of axe-core@4.14.1, unchanged.
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"


@dataclass(frozen=True)
class Runs:
    partial: int  # a partial success with a group of failed records


def history(site: Site) -> Runs:
    """Four syncs a page can show: everything added; changes one of which is refused (and
    alerted, in-app and by email); new and deleted users with the refusal retried; all fixed."""
    answer = site.api.post(
        "/api/v1/alerts/subscriptions",
        json={"email": ADMIN, "statuses": ["partial_success"], "channels": ["email", "in_app"]},
    )
    assert answer.status_code == 201, answer.text
    assert site.sync()[1] == "success"
    site.warehouse("UPDATE users SET plan = 'team' WHERE id IN (5, 6, 7)")
    site.receiver.reject(REFUSED, message="field 'plan' is not one of free, pro")
    partial, status = site.sync()
    assert status == "partial_success"
    site.warehouse(
        "INSERT INTO users SELECT i, 'user' || i || '@example.com', 'free' FROM range(31, 41) t(i)",
        "DELETE FROM users WHERE id IN (1, 2)",
    )
    assert site.sync()[1] == "partial_success"
    site.receiver.clear_behaviours()
    site.warehouse("UPDATE users SET plan = 'pro' WHERE id BETWEEN 10 AND 14")
    assert site.sync()[1] == "success"
    return Runs(partial)


def open_group(page: Page) -> None:
    page.get_by_test_id("failure-groups").get_by_role("link").first.click()
    expect(page.get_by_test_id("failure-group")).to_be_visible()


def open_reset(page: Page) -> None:
    page.get_by_label("More actions").click()
    page.get_by_role("link", name="Reset sync").click()
    expect(page.get_by_role("dialog")).to_be_visible()


def open_replay(page: Page) -> None:
    page.get_by_role("button", name="Replay").click()
    expect(page.get_by_role("dialog")).to_be_visible()


def show_emails(page: Page) -> None:
    page.get_by_role("button", name="View active email addresses").click()
    expect(page.get_by_test_id("active-emails")).to_contain_text(ADMIN)


@dataclass(frozen=True)
class Screen:
    """A page, and what to do on it before it is checked (open a dialog, a group…)."""

    name: str
    path: str
    ready: Callable[[Page], None]
    readme: str | None = None  # its name in docs/screenshots/, for the README


def screens(runs: Runs) -> list[Screen]:
    def shows(test_id: str) -> Callable[[Page], None]:
        return lambda page: expect(page.get_by_test_id(test_id).first).to_be_visible()

    return [
        Screen(
            "destinations", "/destinations", lambda p: expect(p.locator("table")).to_be_visible()
        ),
        Screen("mappings", "/mappings", shows("mappings")),
        Screen("mapping", "/mappings/users", shows("runs"), readme="mapping"),
        Screen("mapping-reset-dialog", "/mappings/users", open_reset),
        Screen("sync", f"/runs/{runs.partial}", open_group, readme="sync"),
        Screen("sync-replay-dialog", f"/runs/{runs.partial}", open_replay),
        Screen("timeline", f"/mappings/users/timeline?key={REFUSED}", shows("timeline")),
        Screen("settings-notifications", "/settings/notifications", show_emails),
        Screen("notifications", "/notifications", shows("notifications")),
    ]


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_every_main_page_is_accessible_fits_the_screen_and_shows_no_secret(
    width: str, site: Site, new_page: Callable[..., Page]
) -> None:
    runs = history(site)
    viewport = DESKTOP if width == "desktop" else PHONE
    page = new_page(viewport)
    found: dict[str, str] = {}
    # Never on a page: the webhook's URL (a destination's URL may hold its token) and the
    # API token the scene was set with.
    secrets = {site.receiver.url: "the destination's webhook URL", site.token: "an API token"}

    def check(name: str, readme: str | None = None) -> None:
        problems = []
        if violations := serious_violations(page):
            problems.append(describe(violations))
        if overflow := sideways_overflow(page):
            problems.append(f"- it scrolls sideways: {overflow}")
        html = page.content()
        for secret, what in secrets.items():
            if secret in html:
                problems.append(f"- it shows {what}")
        if problems:
            found[name] = "\n".join(problems)
        readme = readme if width == "desktop" else None
        screenshot(page, f"{name}-{viewport['width']}", readme=readme)

    page.goto(f"{site.url}/login")
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    check("login")
    log_in(page, site.url, ADMIN)
    for screen in screens(runs):
        page.goto(f"{site.url}{screen.path}")
        screen.ready(page)
        check(screen.name, screen.readme)

    report = "\n\n".join(
        f"{name} at {viewport['width']} px:\n{text}" for name, text in found.items()
    )
    assert not found, f"pages with serious or critical problems:\n\n{report}"


def test_the_check_finds_what_it_looks_for(new_page: Callable[..., Page]) -> None:
    """axe-core runs, and finds a field without a label (critical) and text too faint to read
    (serious); a page too wide for a phone is found too."""
    page = new_page(PHONE)
    page.set_content(
        '<html lang="en"><head><title>t</title></head><body><main>'
        '<input type="text"><p style="color:#bbb;background:#fff">faint</p>'
        '<div style="width:800px">wide</div></main></body></html>'
    )
    found = {v["id"]: v["impact"] for v in serious_violations(page)}
    assert found == {"label": "critical", "color-contrast": "serious"}, describe(
        serious_violations(page)
    )
    overflow = sideways_overflow(page)
    assert overflow is not None and "width:800px" in overflow, overflow


def test_axe_core_is_the_pinned_build() -> None:
    text = AXE.read_bytes()
    assert hashlib.sha256(text).hexdigest() == AXE_SHA256
    assert text.startswith(b"/*! axe v4.14.1") and b"Mozilla Public" in text[:400]
