"""Fixtures of the browser tests: Debian's Chromium driven by Playwright, and a real serve.

Browsers cannot be downloaded here: Playwright drives /usr/bin/chromium (`apt-get install
chromium`). Outside CI a machine without it skips these tests, naming that command; in CI
(`CI` set, where .ci/run installs it) its absence is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from ebbtide.demo.receiver import Receiver
from tests.browser.browse import CHROMIUM, CHROMIUM_ARGS, DESKTOP
from tests.browser.site import Site, open_site
from tests.e2e.harness import Processes
from tests.integration.alert_servers import SmtpServer

INSTALL = "apt-get install chromium"
# How long an auto-waiting action or assertion waits for its event (5 s by default): generous,
# as these tests share two cores with the rest of the suite, and run under busy loops.
WAIT_MS = 60_000
expect.set_options(timeout=WAIT_MS)


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing: the browser tests need Debian's Chromium ({INSTALL})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _needs_chromium() -> None:
    """Skipped (or failed in CI) before any serve is started for nothing."""
    _require_chromium()


# Per test, not per session: the sync API keeps an event loop running in the worker's main
# thread while it is open, and every later test of that worker calling asyncio.run() would fail.
# xdist may put any test between two browser tests on one worker.
@pytest.fixture
def playwright() -> Iterator[Playwright]:
    _require_chromium()
    with sync_playwright() as running:
        yield running


@pytest.fixture
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Pages in fresh contexts (no cookies shared: each is another person's browser)."""
    contexts: list[BrowserContext] = []

    def make(viewport: dict[str, int] = DESKTOP) -> Page:
        context = browser.new_context(viewport=viewport, accept_downloads=True)  # type: ignore[arg-type]
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: Callable[..., Page]) -> Page:
    return new_page()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(log_path=tmp_path / "received.jsonl") as running:
        yield running
        running.release()  # a held sync lets go, so serve can stop


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture
def processes() -> Iterator[Processes]:
    running = Processes()
    yield running
    running.close()


@pytest.fixture
def open_serve(
    tmp_path: Path, processes: Processes, receiver: Receiver, smtp: SmtpServer
) -> Iterator[Callable[..., Site]]:
    """`open_serve(rows=…)`: a workspace of that many users, an admin and a viewer, serve."""
    opened: list[Site] = []

    def make(rows: int = 30) -> Site:
        site = open_site(tmp_path, processes, receiver, smtp, rows)
        opened.append(site)
        return site

    yield make
    for site in opened:
        site.close()


@pytest.fixture
def site(open_serve: Callable[..., Site]) -> Site:
    return open_serve()
