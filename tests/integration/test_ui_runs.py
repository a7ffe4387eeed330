"""The sync page over a real workspace and receiver: counts and phases, failed records grouped
by reason with masked sample payloads and the recommended action, the key search, the CSV and
JSONL downloads, Replay with its preview and who may do it, Cancel sync, and the live progress
stream of a running sync."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from ebbtide.demo.receiver import Receiver
from ebbtide.server.api.app import create_app
from ebbtide.server.api.context import services_over
from ebbtide.state.schedules import ScheduleBook
from ebbtide.state.tokens import TokenBook, TokenScope
from ebbtide.state.users import Role
from ebbtide.values import RunRecord, RunStatus
from tests.e2e.harness import wait_until
from tests.integration.ui_kit import Ui, csrf_of
from tests.integration.workspace_kit import TOKEN, Kit, mapping, users_table
from tests.integration.workspace_kit import held_sync as held_mirror_sync

MIRROR = "users_mirror"
HTMX = {"HX-Request": "true"}
KEY_CELL = re.compile(r"<td><code>([^<]*)</code></td>")


@pytest.fixture
def masked(kit: Kit, receiver: Receiver) -> Ui:
    """The `ui` workspace, with `email` a sensitive field of users_mirror."""
    service = kit.build(
        receiver.url,
        rows=12,
        mappings={MIRROR: mapping("mirror", sensitive=["email"]), "users_upsert": mapping()},
    )
    services = services_over(lambda: service.workspace, service.state)
    assert services.users is not None
    return Ui(service, services.users, create_app(services))


def partly_failed(ui: Ui, receiver: Receiver) -> RunRecord:
    """Keys 3 and 6 refused for one reason, 8 for another: 9 of 12 loaded."""
    for key in (3, 6):
        receiver.reject(key, message="plan is not allowed", error_class="validation")
    receiver.reject(8, code="TAKEN", message="email already taken", error_class="conflict")
    run = ui.service.run(MIRROR)
    assert run.status is RunStatus.PARTIAL_SUCCESS and run.failed == 3
    return run


def table(html: str, testid: str) -> str:
    start = html.index(f'data-testid="{testid}"')
    return html[start : html.index("</table>", start)]


def rows_of(html: str) -> list[str]:
    return re.findall(r"<tr>(.*?)</tr>", html[html.index("<tbody>") :], re.S)


def post(browser: TestClient, path: str, page: str, **form: str) -> object:
    token = csrf_of(browser.get(page).text)
    return browser.post(path, data={"csrf_token": token, **form})


# -- the page and its failed records ------------------------------------------------------------


def test_a_partly_failed_sync_shows_its_counts_and_reasons_with_no_secret(
    masked: Ui, receiver: Receiver
) -> None:
    run = partly_failed(masked, receiver)
    answer = masked.logged_in(Role.VIEWER).get(f"/runs/{run.id}")
    assert answer.status_code == 200, answer.text
    html = answer.text
    assert f'<a href="/mappings/{MIRROR}">{MIRROR}</a> › Sync #{run.id}' in html
    assert "Partial success" in html
    assert 'data-testid="failed-count">3<' in html
    assert 'Successful new</div><div class="value">9<' in html
    groups = [
        re.sub(r"<[^>]+>|\s+", " ", r).split() for r in rows_of(table(html, "failure-groups"))
    ]
    assert [(g[0], g[-1]) for g in groups] == [("validation", "2"), ("conflict", "1")]
    assert "plan is not allowed" in html and "email already taken" in html
    assert sorted(KEY_CELL.findall(table(html, "failed-records"))) == ["3", "6", "8"]
    assert "user3@example.com" not in html and TOKEN not in html
    assert ">Replay</button>" not in html  # a viewer cannot replay


def test_a_reason_shows_its_error_masked_samples_and_recommended_action(
    masked: Ui, receiver: Receiver
) -> None:
    run = partly_failed(masked, receiver)
    browser = masked.logged_in(Role.VIEWER)
    fragment = browser.get(f"/runs/{run.id}/groups/0", headers=HTMX)
    assert fragment.status_code == 200
    assert "<html" not in fragment.text  # a fragment for the page's group slot
    assert "validation: plan is not allowed" in fragment.text
    assert 'data-testid="group-count">2<' in fragment.text
    assert "Recommended action:" in fragment.text
    samples = re.findall(r'<pre data-testid="sample-payload">(.*?)</pre>', fragment.text, re.S)
    assert len(samples) == 2
    assert all("&#34;email&#34;: &#34;***&#34;" in s for s in samples)  # escaped JSON
    for secret in ("user3@example.com", "user6@example.com", TOKEN):
        assert secret not in fragment.text
    page = browser.get(f"/runs/{run.id}/groups/1")  # without htmx: a page of its own
    assert "<html" in page.text and "email already taken" in page.text
    assert browser.get(f"/runs/{run.id}/groups/2").status_code == 404


def test_failed_records_are_searched_by_key_with_or_without_javascript(
    ui: Ui, receiver: Receiver
) -> None:
    run = partly_failed(ui, receiver)
    browser = ui.logged_in(Role.VIEWER)
    fragment = browser.get(f"/runs/{run.id}/failed-records?key=6", headers=HTMX)
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert KEY_CELL.findall(fragment.text) == ["6"]
    plain = browser.get(f"/runs/{run.id}/failed-records?key=6")
    assert plain.status_code == 303 and plain.headers["location"] == f"/runs/{run.id}?key=6"
    page = browser.get(plain.headers["location"])
    assert KEY_CELL.findall(table(page.text, "failed-records")) == ["6"]
    assert '<label for="key-search">Search by key</label>' in page.text
    assert 'value="6"' in page.text
    none = browser.get(f"/runs/{run.id}/failed-records?key=11", headers=HTMX)
    assert KEY_CELL.findall(none.text) == [] and "No failed record has a key" in none.text


def test_failed_records_download_as_csv_and_jsonl(masked: Ui, receiver: Receiver) -> None:
    run = partly_failed(masked, receiver)
    browser = masked.logged_in(Role.VIEWER)
    answer = browser.get(f"/runs/{run.id}/failed-records.csv")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert sorted(r["key"] for r in rows) == ["3", "6", "8"]
    assert {r["error_class"] for r in rows} == {"validation", "conflict"}
    assert "user3@example.com" not in answer.text and TOKEN not in answer.text
    lines = browser.get(f"/runs/{run.id}/failed-records.jsonl").text.splitlines()
    assert sorted(json.loads(line)["key"] for line in lines) == [3, 6, 8]
    assert browser.get(f"/runs/{run.id}/failed-records.xml").status_code == 422
    assert ui_logged_out_is_sent_to_login(masked, f"/runs/{run.id}/failed-records.csv")


def ui_logged_out_is_sent_to_login(ui: Ui, path: str) -> bool:
    answer = ui.client().get(path)
    return answer.status_code == 303 and answer.headers["location"].startswith("/login")


# -- replay -------------------------------------------------------------------------------------


def test_the_replay_dialog_previews_each_mode(ui: Ui, receiver: Receiver) -> None:
    run = partly_failed(ui, receiver)
    browser = ui.logged_in(Role.EDITOR)
    page = browser.get(f"/runs/{run.id}").text
    assert ">Replay</button>" in page
    dialog = browser.get(f"/runs/{run.id}/replay", headers=HTMX)
    assert dialog.status_code == 200
    assert "<dialog" in dialog.text and "data-open-on-load" in dialog.text
    counts = dict(re.findall(r'data-testid="replay-(\w+)">(\d+)<', dialog.text))
    assert counts == {"as_sent": "12", "latest": "12", "only_failed": "3"}
    for label in ("replay-as-sent", "replay-latest", "replay-only-failed"):
        assert f'<label for="{label}">' in dialog.text
    page_form = browser.get(f"/runs/{run.id}/replay")  # without htmx: a page
    assert "<html" in page_form.text and "<dialog" not in page_form.text
    assert ScheduleBook(ui.service.state.engine).replays() == []  # a preview queues nothing
    token, _ = TokenBook(ui.service.state.engine).create(TokenScope.READ, "ops")
    twin = ui.client().get(
        f"/api/v1/runs/{run.id}/replay", headers={"Authorization": f"Bearer {token}"}
    )
    assert twin.status_code == 200, twin.text
    assert (twin.json()["as_sent"], twin.json()["latest"], twin.json()["only_failed"]) == (
        12,
        12,
        3,
    )


def test_a_viewer_sees_no_replay_and_is_refused(ui: Ui, receiver: Receiver) -> None:
    run = partly_failed(ui, receiver)
    browser = ui.logged_in(Role.VIEWER)
    assert ">Replay</button>" not in browser.get(f"/runs/{run.id}").text
    assert browser.get(f"/runs/{run.id}/replay", headers=HTMX).status_code == 403
    refused = post(browser, f"/runs/{run.id}/replay", f"/runs/{run.id}", mode="only_failed")
    assert refused.status_code == 403  # type: ignore[attr-defined]
    assert ScheduleBook(ui.service.state.engine).replays() == []


def test_an_editor_replays_only_the_failed_records(ui: Ui, receiver: Receiver) -> None:
    run = partly_failed(ui, receiver)
    browser = ui.logged_in(Role.EDITOR)
    done = post(browser, f"/runs/{run.id}/replay", f"/runs/{run.id}", mode="only_failed")
    assert done.status_code == 303  # type: ignore[attr-defined]
    assert done.headers["location"] == f"/mappings/{MIRROR}"  # type: ignore[attr-defined]
    [queued] = ScheduleBook(ui.service.state.engine).replays()
    assert (queued.run_id, queued.only_failed, queued.latest) == (run.id, True, False)
    assert queued.requested_by == "editor@example.com"
    shown = browser.get(f"/runs/{run.id}").text  # the flash waits for the next page
    assert f"Replay of sync #{run.id} queued: 3 records" in shown


def test_a_sync_that_sent_nothing_cannot_be_replayed_and_says_why(ui: Ui) -> None:
    ui.service.run(MIRROR)
    idle = ui.service.run(MIRROR)  # nothing changed: nothing sent
    browser = ui.logged_in(Role.EDITOR)
    dialog = browser.get(f"/runs/{idle.id}/replay", headers=HTMX)
    assert "sent no records" in dialog.text and 'name="mode"' not in dialog.text
    refused = post(browser, f"/runs/{idle.id}/replay", f"/runs/{idle.id}", mode="as_sent")
    assert refused.headers["location"] == f"/runs/{idle.id}"  # type: ignore[attr-defined]
    assert "cannot be replayed" in browser.get(f"/runs/{idle.id}").text
    assert ScheduleBook(ui.service.state.engine).replays() == []


# -- a running sync ----------------------------------------------------------------------------


@contextmanager
def held_sync(ui: Ui, receiver: Receiver) -> Iterator[tuple[int, list[RunRecord]]]:
    """A sync of MIRROR held in its load until the block ends; yields its id and the list its
    record lands in."""
    with held_mirror_sync(ui.service, receiver, MIRROR) as finished:
        [running] = ui.service.state.list_runs(MIRROR, 1)
        yield running.id, finished


def events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    kind, data = "", []
    for line in lines:
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))
        elif not line and kind:
            yield kind, "\n".join(data)
            kind, data = "", []


def test_a_running_sync_streams_its_progress_bar_then_finished(ui: Ui, receiver: Receiver) -> None:
    browser = ui.logged_in(Role.VIEWER)
    with held_sync(ui, receiver) as (run_id, _):
        wait_until(
            lambda: ui.service.state.progress.get(run_id), 30, "the run's first progress report"
        )
        page = browser.get(f"/runs/{run_id}").text
        assert f'sse-connect="/runs/{run_id}/progress/stream"' in page
        assert 'sse-swap="progress"' in page and "<progress" in page
        with browser.stream("GET", f"/runs/{run_id}/progress/stream") as sse:
            assert sse.headers["content-type"].startswith("text/event-stream")
            stream = events(sse.iter_lines())
            kind, first = next(stream)
            assert kind == "progress" and "<progress" in first and "records</label>" in first
            receiver.release()
            while (event := next(stream))[0] == "progress":
                pass
            assert event[0] == "finished"
            assert f'hx-get="/runs/{run_id}/body"' in event[1] and 'hx-trigger="load"' in event[1]
            assert next(stream, None) is None  # the stream ends with the run
    body = browser.get(f"/runs/{run_id}/body")
    assert body.status_code == 200 and "<html" not in body.text
    assert "Success" in body.text and "sse-connect" not in body.text


def test_an_editor_cancels_a_running_sync_and_a_viewer_cannot(
    ui: Ui, receiver: Receiver, kit: Kit
) -> None:
    users_table(kit.root, 100)  # ten batches: the cancel lands before the last
    viewer, editor = ui.logged_in(Role.VIEWER), ui.logged_in(Role.EDITOR)
    with held_sync(ui, receiver) as (run_id, finished):
        assert "Cancel sync" not in viewer.get(f"/runs/{run_id}").text
        page = f"/runs/{run_id}"
        assert post(viewer, f"{page}/cancel", page).status_code == 403  # type: ignore[attr-defined]
        assert "Cancel sync" in editor.get(page).text
        done = post(editor, f"{page}/cancel", page)
        assert done.headers["location"] == page  # type: ignore[attr-defined]
        assert "will stop at its next batch" in editor.get(page).text
    [record] = finished
    assert record.status is RunStatus.CANCELLED
    assert record.error is not None and "editor@example.com" in record.error


def test_a_sync_page_says_how_the_changes_were_found(kit: Kit, receiver: Receiver) -> None:
    service = kit.build(
        receiver.url,
        rows=5,
        mappings={MIRROR: mapping("mirror", change_detection={"cursor": "id"})},
    )
    services = services_over(lambda: service.workspace, service.state)
    assert services.users is not None
    ui = Ui(service, services.users, create_app(services))
    first, second = ui.service.run(MIRROR), ui.service.run(MIRROR)
    browser = ui.logged_in(Role.VIEWER)
    shown = {
        run.id: re.sub(r"\s+", " ", browser.get(f"/runs/{run.id}").text) for run in (first, second)
    }
    assert 'data-testid="detection">full: no snapshot yet<' in shown[first.id]
    assert (
        'data-testid="detection">cursor: every key, and the rows past the cursor<'
        in (shown[second.id])
    )
