"""What the scenarios do in the browser: log in, check accessibility, keep screenshots."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from tests.browser.site import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium in a container: no sandbox (no user namespaces), no GPU, and nothing that
# phones home or updates itself while a test runs.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

REPO = Path(__file__).resolve().parents[2]
AXE = Path(__file__).with_name("vendor") / "axe-core-4.14.1.min.js"
# Test artifacts (gitignored): every main page as the browser drew it, for a person to look at.
SCREENSHOTS = REPO / ".artifacts" / "screenshots"
# The two the README shows: written only when asked (`EBBTIDE_README_SCREENSHOTS=1`), so a
# test run leaves the checkout as it was.
README_SCREENSHOTS = REPO / "docs" / "screenshots"
# axe-core's impacts that fail a page; "minor" and "moderate" ones are printed, not failed.
FAILING_IMPACTS = {"serious", "critical"}


def log_in(page: Page, base_url: str, email: str, password: str = PASSWORD) -> None:
    """Through the login form, by its labels, as a person does."""
    page.goto(f"{base_url}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    expect(page).not_to_have_url(re.compile(r"/login"))


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = page.evaluate(
        """async () => {
            const results = await axe.run(document, {resultTypes: ["violations"]});
            return results.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help, url: v.helpUrl,
                nodes: v.nodes.map(n => ({target: n.target.join(" "), html: n.html,
                                          summary: n.failureSummary})),
            }));
        }"""
    )
    return found


def describe(violations: list[dict[str, Any]]) -> str:
    """Violations as a person reads them: rule, impact, what to fix and where."""
    lines = []
    for v in violations:
        lines.append(f"- [{v['impact']}] {v['id']}: {v['help']} ({v['url']})")
        for node in v["nodes"][:5]:
            lines.append(f"    at {node['target']}: {node['html'][:160]}")
            summary = " ".join(str(node["summary"] or "").split())
            lines.append(f"      {summary[:300]}")
        if len(v["nodes"]) > 5:
            lines.append(f"    … and {len(v['nodes']) - 5} more")
    return "\n".join(lines)


def serious_violations(page: Page) -> list[dict[str, Any]]:
    return [v for v in axe_violations(page) if v["impact"] in FAILING_IMPACTS]


def screenshot(page: Page, name: str, *, readme: str | None = None) -> Path:
    """The whole page as `.artifacts/screenshots/<name>.png`, and as
    `docs/screenshots/<readme>.png` for the README when EBBTIDE_README_SCREENSHOTS is set."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if readme is not None and os.environ.get("EBBTIDE_README_SCREENSHOTS"):
        README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, README_SCREENSHOTS / f"{readme}.png")
    return path


def sideways_overflow(page: Page) -> str | None:
    """What makes the page wider than the window (it then scrolls sideways), or None.
    Wide tables scroll inside their own box (.table-wrap) and do not count."""
    found: str | None = page.evaluate(
        """() => {
            const width = document.documentElement.clientWidth;
            if (document.documentElement.scrollWidth <= width) return null;
            const wide = [...document.body.querySelectorAll("*")].filter(e => {
                const box = e.getBoundingClientRect();
                return box.right > width + 1 && !e.closest(".table-wrap");
            });
            const names = wide.slice(0, 5).map(e => e.outerHTML.slice(0, 120));
            return `the page is ${document.documentElement.scrollWidth} px wide in a`
                + ` ${width} px window; outside scrolling tables: ${names.join(" | ") || "none"}`;
        }"""
    )
    return found
