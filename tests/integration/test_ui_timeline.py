"""A record's timeline over a real workspace and receiver: every sync that sent one key, its
operation, outcome and error, the open failure, and whether the destination holds it now."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from ebbtide.demo.receiver import Receiver
from ebbtide.state.tokens import TokenBook, TokenScope
from ebbtide.state.users import Role
from tests.integration.ui_kit import Ui
from tests.integration.workspace_kit import TOKEN, Kit

MIRROR = "users_mirror"
UPSERT = "users_upsert"
ROW = re.compile(
    r'<td><a href="/runs/(\d+)">.*?<td data-testid="operation">(\w+)</td>.*?'
    r'data-testid="outcome">(\w+)</span>',
    re.S,
)
NOW = re.compile(r'data-testid="in-destination">In the destination now:\s*<strong>(\w+)</strong>')


def timeline(browser: TestClient, mapping: str, key: str) -> tuple[list[tuple[int, str, str]], str]:
    """The rows (sync, operation, outcome) and the in-destination answer of a key."""
    answer = browser.get(f"/mappings/{mapping}/timeline", params={"key": key})
    assert answer.status_code == 200, answer.text
    now = NOW.search(answer.text)
    assert now, "the timeline does not say whether the record is in the destination"
    return [(int(r), op, out) for r, op, out in ROW.findall(answer.text)], now.group(1)


def test_a_record_inserted_updated_then_refused_has_three_rows(
    ui: Ui, receiver: Receiver, kit: Kit
) -> None:
    inserted = ui.service.run(MIRROR)
    kit.sql("UPDATE users SET plan = 'gold' WHERE id = 3")
    updated = ui.service.run(MIRROR)
    kit.sql("UPDATE users SET plan = 'platinum' WHERE id = 3")
    receiver.reject(3, message="plan is not allowed", error_class="validation")
    refused = ui.service.run(MIRROR)
    assert refused.failed == 1

    browser = ui.logged_in(Role.VIEWER)
    rows, now = timeline(browser, MIRROR, "3")
    assert rows == [
        (refused.id, "updated", "Failed"),
        (updated.id, "updated", "Loaded"),
        (inserted.id, "added", "Loaded"),
    ]
    assert now == "Yes"  # the refused update left the earlier version there
    html = browser.get(f"/mappings/{MIRROR}/timeline?key=3").text
    assert "validation: plan is not allowed" in html
    assert "&#34;plan&#34;: &#34;platinum&#34;" in html  # the payload it sent, indented
    assert 'data-testid="open-failure"' in html and "Pending" in html
    assert TOKEN not in html


def test_a_deleted_record_and_a_refused_insert_are_not_in_the_destination(
    ui: Ui, receiver: Receiver, kit: Kit
) -> None:
    receiver.reject(7, message="plan is not allowed", error_class="validation")
    first = ui.service.run(MIRROR)
    kit.sql("DELETE FROM users WHERE id = 5")
    second = ui.service.run(MIRROR)
    assert second.loaded_deleted == 1

    browser = ui.logged_in(Role.VIEWER)
    assert timeline(browser, MIRROR, "5") == (
        [(second.id, "deleted", "Loaded"), (first.id, "added", "Loaded")],
        "No",
    )
    refused_rows, refused_now = timeline(browser, MIRROR, "7")
    assert refused_rows[-1] == (first.id, "added", "Failed") and refused_now == "No"


def test_a_mode_that_never_deletes_leaves_the_record_in_the_destination(ui: Ui, kit: Kit) -> None:
    ui.service.run(UPSERT)
    kit.sql("DELETE FROM users WHERE id = 5")
    ui.service.run(UPSERT)  # upsert sends no delete: the destination keeps the record
    rows, now = timeline(ui.logged_in(Role.VIEWER), UPSERT, "5")
    assert [op for _, op, _ in rows] == ["added"] and now == "Yes"


def test_the_form_a_key_never_sent_and_an_unknown_mapping(ui: Ui) -> None:
    browser = ui.logged_in(Role.VIEWER)
    empty = browser.get(f"/mappings/{MIRROR}/timeline")
    assert empty.status_code == 200
    assert '<label for="record-key">Record key</label>' in empty.text
    assert 'data-testid="timeline"' not in empty.text
    rows, now = timeline(browser, MIRROR, "3")
    assert rows == [] and now == "Unknown"  # never synced: no snapshot to ask
    ui.service.run(MIRROR)
    rows, now = timeline(browser, MIRROR, "99")
    assert rows == [] and now == "No"
    assert "No sync sent this record" in browser.get(f"/mappings/{MIRROR}/timeline?key=99").text
    assert browser.get("/mappings/nope/timeline?key=3").status_code == 404


def test_the_api_twin_says_whether_the_record_is_in_the_destination(ui: Ui, kit: Kit) -> None:
    ui.service.run(MIRROR)
    kit.sql("DELETE FROM users WHERE id = 5")
    ui.service.run(MIRROR)
    token, _ = TokenBook(ui.service.state.engine).create(TokenScope.READ, "ops")
    headers = {"Authorization": f"Bearer {token}"}
    here = ui.client().get(f"/api/v1/mappings/{MIRROR}/records/3/history", headers=headers)
    gone = ui.client().get(f"/api/v1/mappings/{MIRROR}/records/5/history", headers=headers)
    assert here.json()["in_destination"] is True and gone.json()["in_destination"] is False
