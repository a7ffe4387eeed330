"""A running sync's progress bar moves on the open page, with no reload: the receiver holds its
answers so the sync stays mid-load exactly as long as the test needs, on a busy machine too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Frame, Page, expect

from tests.browser.browse import log_in
from tests.browser.site import ADMIN, TIMEOUT_S, Site, wait_until
from tests.e2e.harness import BATCH_SIZE, CONCURRENCY

pytestmark = pytest.mark.xdist_group("browser")

ROWS = 1000
IN_FLIGHT = BATCH_SIZE * CONCURRENCY
# Each round of answers comes this long after the last: longer than the run's progress reports
# are throttled to (services/progress.py, 0.5 s), so every round is reported.
ANSWER_DELAY_S = 0.6
# Every value the page's progress bar took, as the DOM changed (not sampled: none is missed).
WATCH_BAR = """() => {
    window.barValues = [];
    new MutationObserver(() => {
        const bar = document.querySelector("[data-testid=progress] progress");
        if (bar) window.barValues.push(bar.value);
    }).observe(document.body, {childList: true, subtree: true, attributes: true});
}"""


def progress_in_load(site: Site, run_id: int) -> dict[str, Any]:
    def look() -> dict[str, Any] | None:
        answer = site.api.get(f"/api/v1/runs/{run_id}/progress")
        assert answer.status_code == 200, answer.text
        progress: dict[str, Any] = answer.json()
        return progress if progress["phase"] == "load" and progress["total"] else None

    found: dict[str, Any] = wait_until(look, TIMEOUT_S, f"run {run_id} to report its load")
    return found


def test_the_progress_bar_of_a_running_sync_moves_without_a_reload(
    page: Page, open_serve: Callable[..., Site]
) -> None:
    site = open_serve(rows=ROWS)
    log_in(page, site.url, ADMIN)
    navigations: list[str] = []

    with site.receiver.holding():
        site.ask_sync()
        wait_until(lambda: site.receiver.record_count >= IN_FLIGHT, TIMEOUT_S, "the first batches")
        [running] = [r for r in site.runs() if r["status"] == "running"]
        run_id = running["id"]
        assert progress_in_load(site, run_id)["done"] == 0

        page.goto(f"{site.url}/runs/{run_id}")
        expect(page.get_by_test_id("run-status")).to_have_text("Running")
        bar = page.locator("[data-testid=progress] progress")
        expect(bar).to_have_attribute("max", str(ROWS))
        expect(bar).to_have_attribute("value", "0")
        expect(page.get_by_test_id("progress-done")).to_have_text("0")
        page.evaluate("() => { window.stillTheSamePage = true; }")
        page.evaluate(WATCH_BAR)

        def navigated(frame: Frame) -> None:
            if frame == page.main_frame:
                navigations.append(frame.url)

        page.on("framenavigated", navigated)
        site.receiver.delay_s = ANSWER_DELAY_S

    # The bar took a value between empty and full while the page stayed open.
    page.wait_for_function(f"() => window.barValues.some(v => v > 0 && v < {ROWS})")
    expect(page.get_by_test_id("run-status")).to_have_text("Success")
    expect(page.get_by_test_id("load-results")).to_contain_text(f"{ROWS:,}")
    assert site.wait_finished(1) == (run_id, "success")
    moved = page.evaluate("() => window.barValues")
    assert any(0 < v < ROWS for v in moved), moved
    assert page.evaluate("() => window.stillTheSamePage === true")
    assert navigations == []
