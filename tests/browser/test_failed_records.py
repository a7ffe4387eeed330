"""A partially successful sync, read as its operator would: from the mappings list to the
sync, its failed records grouped by reason, one reason's sample payload and recommended
action, and every failed record downloaded as CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.browse import log_in
from tests.browser.site import ADMIN, Site

pytestmark = pytest.mark.xdist_group("browser")

REFUSED = [4, 9, 17]
CODE = "INVALID_EMAIL"
MESSAGE = "field 'email' is not a valid address"


def test_a_partial_success_read_from_the_mappings_list_to_its_csv(page: Page, site: Site) -> None:
    for key in REFUSED:
        site.receiver.reject(key, code=CODE, message=MESSAGE)
    run_id, status = site.sync()
    assert status == "partial_success"

    log_in(page, site.url, ADMIN)
    page.goto(f"{site.url}/mappings")
    page.get_by_test_id("mappings").get_by_role("link", name="Partial success").click()
    expect(page).to_have_url(f"{site.url}/runs/{run_id}")
    expect(page.get_by_test_id("run-status")).to_have_text("Partial success")
    expect(page.get_by_test_id("failed-count")).to_have_text("3")

    groups = page.get_by_test_id("failure-groups")
    [row] = groups.locator("tbody tr").all()
    expect(row).to_contain_text(MESSAGE)
    expect(row.locator("td").last).to_have_text("3")
    row.get_by_role("link", name="validation").click()

    group = page.get_by_test_id("failure-group")
    expect(group.get_by_test_id("group-count")).to_have_text("3")
    expect(group.get_by_test_id("recommended-action")).to_contain_text(
        "The destination refused field 'email'"
    )
    samples = group.get_by_test_id("sample-payload")
    expect(samples.first).to_be_visible()
    payload = json.loads(samples.first.inner_text())
    key = payload["key"]
    assert key in REFUSED
    plan = "pro" if key % 3 == 0 else "free"
    assert payload == {
        "op": "added",
        "key": key,
        "data": {"email": f"user{key}@example.com", "plan": plan},
    }
    expect(page).to_have_url(f"{site.url}/runs/{run_id}")  # the group opened in place

    with page.expect_download() as downloading:
        page.get_by_role("link", name="Download CSV").click()
    download = downloading.value
    assert download.suggested_filename == f"sync-{run_id}-failed-records.csv"
    with open(download.path(), newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert sorted(int(r["key"]) for r in rows) == REFUSED, rows
    for r in rows:
        assert (r["operation"], r["error_class"], r["code"]) == ("added", "validation", CODE)
        assert r["message"] == MESSAGE
        sent = json.loads(r["payload"])
        assert sent["data"]["email"] == f"user{r['key']}@example.com"

    with page.expect_download() as downloading:
        page.get_by_role("link", name="Download JSONL").click()
    lines = Path(downloading.value.path()).read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(line)["key"] for line in lines) == REFUSED

    # Searched by key, as one types: only the matching failed record is listed.
    page.get_by_label("Search by key").fill("17")
    table = page.get_by_test_id("failed-records")
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(table.locator("tbody tr td").first).to_have_text("17")
    expect(page).to_have_url(f"{site.url}/runs/{run_id}")
