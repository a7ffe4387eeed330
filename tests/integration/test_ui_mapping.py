"""The mapping page over a real workspace and receiver: the sync history (charts, table,
filters, pages), Sync now, Reset sync with its confirmation, Pause and Resume, who may do
them, the fields as configured, and the pending failed records."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient

from ebbtide.demo.receiver import Receiver
from ebbtide.server.api.app import create_app
from ebbtide.server.api.context import services_over
from ebbtide.state.schedules import ScheduleBook
from ebbtide.state.tokens import TokenBook, TokenScope
from ebbtide.state.users import Role
from ebbtide.values import RunStatus
from tests.e2e.harness import wait_until
from tests.integration.ui_kit import Ui, csrf_of
from tests.integration.workspace_kit import TOKEN, Kit, hook, users_table, write_workspace

MIRROR = "users_mirror"
PAGE = f"/mappings/{MIRROR}"
RUN_ROW = re.compile(r'<tr data-run="(\d+)">')


def shown_runs(html: str) -> list[int]:
    return [int(found) for found in RUN_ROW.findall(html)]


def table(html: str, testid: str) -> str:
    start = html.index(f'data-testid="{testid}"')
    return html[start : html.index("</table>", start)]


def post(browser: TestClient, path: str, **form: str) -> httpx.Response:
    token = csrf_of(browser.get(PAGE).text)
    return browser.post(path, data={"csrf_token": token, **form})


def test_the_page_shows_each_sync_with_its_counts_as_a_table_and_charts(
    ui: Ui, receiver: Receiver
) -> None:
    first = ui.service.run(MIRROR)
    users_table(ui.service.workspace.root, 14)  # two more users: one loads, one is refused
    receiver.reject(14, message="bad email")
    second = ui.service.run(MIRROR)
    assert second.status is RunStatus.PARTIAL_SUCCESS

    page = ui.logged_in(Role.VIEWER).get(PAGE)
    assert page.status_code == 200
    html = page.text
    assert shown_runs(html) == [second.id, first.id]  # newest first
    row = html[html.index(f'<tr data-run="{first.id}">') :]
    row = row[: row.index("</tr>")]
    assert f'href="/runs/{first.id}"' in row
    assert "12 / 0 / 0" in row  # loaded new / updated / deleted
    assert "Success" in row
    assert 'role="img"' in html and "<title" in html and "<desc" in html
    assert f"Sync #{second.id} (partial_success)" in html  # the bar's tooltip
    assert "failed 1" in html
    summary = re.search(r'data-testid="chart-summary">([^<]*)<', html)
    assert summary and "2 sync(s)" in summary.group(1)
    failed = table(html, "failed-records")
    assert "bad email" in failed and "1 of 25" in failed
    assert f"{PAGE}/timeline?key=14" in failed
    expires = second.started_at + timedelta(days=14)
    assert expires.strftime("%Y-%m-%d") in failed


def test_status_and_date_filters_and_older_pages_change_the_rows(
    ui: Ui, receiver: Receiver
) -> None:
    ids = [ui.service.run(MIRROR).id]
    receiver.reject(14)
    users_table(ui.service.workspace.root, 14)
    partial = ui.service.run(MIRROR)
    assert partial.status is RunStatus.PARTIAL_SUCCESS
    receiver.clear_behaviours()  # the next sync's retry loads it
    ids.append(partial.id)
    ids += [ui.service.run(MIRROR).id for _ in range(20)]
    browser = ui.logged_in(Role.VIEWER)

    newest = browser.get(PAGE).text
    assert shown_runs(newest) == sorted(ids, reverse=True)[:20]
    older = re.search(r'href="([^"]*before=\d+[^"]*)" rel="next">Older syncs', newest)
    assert older, "no link to older syncs"
    second = browser.get(PAGE + older.group(1).replace("&amp;", "&")).text
    assert shown_runs(second) == sorted(ids, reverse=True)[20:]
    assert "Older syncs" not in second and "Newest syncs" in second

    only = browser.get(f"{PAGE}?status=partial_success").text
    assert shown_runs(only) == [partial.id]
    assert '<option value="partial_success" selected>' in only

    today = datetime.now(UTC).date()
    assert len(shown_runs(browser.get(f"{PAGE}?since={today}&until={today}").text)) == 20
    tomorrow, yesterday = today + timedelta(days=1), today - timedelta(days=1)
    assert shown_runs(browser.get(f"{PAGE}?since={tomorrow}").text) == []
    assert shown_runs(browser.get(f"{PAGE}?until={yesterday}").text) == []
    kept = browser.get(f"{PAGE}?status=success&since={today}").text
    assert partial.id not in shown_runs(kept) and len(shown_runs(kept)) == 20
    assert f'value="{today}"' in kept  # the date stays in the form


def test_a_viewer_sees_no_action_and_is_refused_each_one(ui: Ui) -> None:
    viewer = ui.logged_in(Role.VIEWER)
    html = viewer.get(PAGE).text
    for button in ("Sync now", "Reset sync", ">Pause<", "More actions"):
        assert button not in html
    token = csrf_of(html)  # the logout form's: a valid token, the wrong role
    for action in ("sync", "pause", "resume", "reset"):
        refused = viewer.post(f"{PAGE}/{action}", data={"csrf_token": token, "confirm": "on"})
        assert refused.status_code == 403, action
    assert viewer.get(f"{PAGE}/reset").status_code == 403
    assert ScheduleBook(ui.service.state.engine).waiting(MIRROR) is None
    assert ui.service.state.list_runs(MIRROR, 5) == []  # no reset recorded either


def test_an_editors_sync_now_is_queued_and_recorded_with_their_email(ui: Ui) -> None:
    editor = ui.logged_in(Role.EDITOR)
    html = editor.get(PAGE).text
    assert "Sync now" in html and 'aria-label="More actions"' in html and "Reset sync" in html
    done = post(editor, f"{PAGE}/sync")
    assert done.status_code == 303 and done.headers["location"] == PAGE
    waiting = ScheduleBook(ui.service.state.engine).waiting(MIRROR)
    assert waiting is not None and waiting.requested_by == "editor@example.com"
    after = editor.get(PAGE).text
    assert "Sync requested" in after
    assert "editor@example.com" in table(after, "actions") and "Sync now" in after

    again = post(editor, f"{PAGE}/sync")
    assert again.status_code == 303
    assert "merged" in editor.get(PAGE).text


def test_reset_needs_the_box_ticked_then_the_next_sync_sends_the_whole_model(
    ui: Ui, receiver: Receiver
) -> None:
    ui.service.run(MIRROR)
    editor = ui.logged_in(Role.EDITOR)
    dialog = editor.get(f"{PAGE}/reset", headers={"HX-Request": "true"})
    assert dialog.status_code == 200
    assert dialog.text.lstrip().startswith("<dialog")  # a fragment for htmx, not a page
    assert "data-open-on-load" in dialog.text
    assert '<label for="reset-confirm">I understand what happens when a sync is reset</label>' in (
        dialog.text
    )
    assert 'data-enables="reset-submit"' in dialog.text
    assert re.search(
        r'<button type="submit" id="reset-submit"[^>]* disabled>Reset sync', dialog.text
    )
    assert re.search(r'data-testid="reset-records">12<', dialog.text)
    assert "Deletes made meanwhile cannot be detected" in dialog.text
    whole = editor.get(f"{PAGE}/reset")  # without JavaScript: a page of its own
    assert whole.status_code == 200 and "<h1>Reset sync</h1>" in whole.text

    refused = post(editor, f"{PAGE}/reset")
    assert refused.status_code == 422 and "Nothing was changed" in refused.text
    receiver.reset()
    assert ui.service.run(MIRROR).added == 0  # the snapshot was kept
    assert receiver.records == []

    done = post(editor, f"{PAGE}/reset", confirm="on")
    assert done.status_code == 303
    html = editor.get(PAGE).text
    assert "Sync reset" in html
    actions = table(html, "actions")
    assert "Reset" in actions and "editor@example.com" in actions
    after = ui.service.run(MIRROR)
    assert after.added == 12 and after.after_reset
    assert len({r["key"] for r in receiver.records}) == 12  # the whole model, again


def test_a_reset_while_the_mapping_syncs_is_a_message_not_a_crash(
    ui: Ui, receiver: Receiver
) -> None:
    editor = ui.logged_in(Role.EDITOR)
    with receiver.holding():
        thread = threading.Thread(target=lambda: ui.service.run(MIRROR), daemon=True)
        thread.start()
        wait_until(lambda: receiver.requests > 0, 30, "the sync's first request")
        done = post(editor, f"{PAGE}/reset", confirm="on")
        assert done.status_code == 303
        html = editor.get(PAGE).text
        assert 'class="flash error"' in html and "The sync was not reset" in html
    thread.join(timeout=60)
    assert not thread.is_alive()


def test_pause_and_resume_flip_the_mapping(ui: Ui) -> None:
    editor = ui.logged_in(Role.EDITOR)

    def paused() -> bool:
        history = services_over(lambda: ui.service.workspace, ui.service.state).history()
        return history.mapping(MIRROR).paused

    assert not paused()
    assert post(editor, f"{PAGE}/pause").status_code == 303
    assert paused()
    html = editor.get(PAGE).text
    assert '<span class="badge paused">Paused</span>' in html and ">Resume</button>" in html
    assert post(editor, f"{PAGE}/resume").status_code == 303
    assert not paused()
    assert ">Pause</button>" in editor.get(PAGE).text


def test_an_unknown_mapping_is_a_404_page(ui: Ui) -> None:
    answer = ui.logged_in(Role.VIEWER).get("/mappings/nope")
    assert answer.status_code == 404 and "nope" in answer.text


NESTED_SQL = (
    "select id, email,"
    " {'name': 'hat', 'brand': {'country': 'SE'}} as product,"
    " [{'productName': 'hat', 'sku': 'H-1'}] as products"
    " from users"
)
NESTED_FIELDS = {
    "email": "email",
    "item": {
        "object": "product",
        "properties": {"title": "name", "country": "brand.country", "buyer": {"column": "email"}},
    },
    "product": {"object": "product"},
    "lines": {"array": "products", "properties": {"name": "productName"}},
    "tier": {"value": "pro"},
    "secret_tier": {"value": "s3cr3t-value"},
}


@pytest.fixture
def nested(kit: Kit, receiver: Receiver) -> Ui:
    kit.monkeypatch.setenv("HOOK_URL", receiver.url)
    kit.monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    write_workspace(
        kit.root,
        destinations={"hook": hook()},
        mappings={
            "orders": {
                "model": "users",
                "destination": "hook",
                "action": "upsert",
                "fields": NESTED_FIELDS,
                "sensitive": ["secret_tier"],
            }
        },
        sql=NESTED_SQL,
    )
    users_table(kit.root, 3)
    service = kit.service()
    services = services_over(lambda: service.workspace, service.state)
    assert services.users is not None
    return Ui(service, services.users, create_app(services))


def test_the_fields_show_objects_and_arrays_as_trees_and_the_api_returns_the_same(
    nested: Ui,
) -> None:
    html = nested.logged_in(Role.VIEWER).get("/mappings/orders").text
    fields = table_free(html)
    item = fields[fields.index('data-field="item"') :]
    item = item[: item.index('data-field="product"')]
    assert '<ul class="tree">' in item  # its properties are its children
    for child in ('data-field="title"', 'data-field="country"', 'data-field="buyer"'):
        assert child in item
    assert "<code>brand.country</code>" in item and "column <code>email</code>" in item
    lines = fields[fields.index('data-field="lines"') :]
    assert 'data-field="name"' in lines.split('data-field="tier"')[0]
    assert "(sent whole)" in fields  # product: the object as it is
    assert "s3cr3t-value" not in html  # a sensitive field's static value is never shown

    token, _ = TokenBook(nested.service.state.engine).create(TokenScope.READ, "ops")
    api = nested.client().get(
        "/api/v1/mappings/orders/fields", headers={"Authorization": f"Bearer {token}"}
    )
    assert api.status_code == 200, api.text
    tree = {f["name"]: f for f in api.json()}
    assert [p["name"] for p in tree["item"]["properties"]] == ["title", "country", "buyer"]
    assert tree["item"]["properties"][1] == {
        "name": "country",
        "kind": "path",
        "source": "brand.country",
        "value": None,
        "sensitive": False,
        "skip_nulls": False,
        "properties": [],
    }
    assert tree["lines"]["kind"] == "array" and tree["lines"]["properties"][0]["source"] == (
        "productName"
    )
    assert tree["tier"]["value"] == "pro" and tree["secret_tier"]["value"] is None
    assert nested.service.run("orders").status is RunStatus.SUCCESS  # the workspace is real


def table_free(html: str) -> str:
    start = html.index('data-testid="fields"')
    return html[start : html.index("</div>", start)]
