"""The web UI's login: sessions, CSRF tokens, roles and the lockout, over a real workspace."""

from __future__ import annotations

from fastapi.testclient import TestClient

from ebbtide.server.api.app import create_app
from ebbtide.server.api.context import services_over
from ebbtide.state.users import MAX_FAILED_LOGINS, Role
from tests.integration.ui_kit import PASSWORD, Ui, csrf_of, log_in


def test_every_page_asks_for_a_login_first_and_comes_back_after_it(ui: Ui) -> None:
    ui.users.create("ada@example.com", Role.VIEWER, PASSWORD)
    browser = ui.client()
    answer = browser.get("/mappings?status=failed")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=/mappings%3Fstatus%3Dfailed"
    page = browser.get(answer.headers["location"])
    assert '<label for="email">Email</label>' in page.text
    assert '<label for="password">Password</label>' in page.text
    done = log_in(browser, "Ada@Example.com ", PASSWORD, "/mappings?status=failed")
    assert done.status_code == 303 and done.headers["location"] == "/mappings?status=failed"
    cookie = done.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    listed = browser.get("/mappings")
    assert listed.status_code == 200 and "users" in listed.text
    assert "ada@example.com" in listed.text


def test_a_login_never_sends_anyone_to_another_site(ui: Ui) -> None:
    ui.users.create("ada@example.com", Role.VIEWER, PASSWORD)
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        done = log_in(ui.client(), "ada@example.com", PASSWORD, target)
        assert done.headers["location"] == "/"


def test_wrong_password_and_unknown_email_get_the_same_answer(ui: Ui) -> None:
    ui.users.create("ada@example.com", Role.VIEWER, PASSWORD)
    wrong = log_in(ui.client(), "ada@example.com", "not the password")
    unknown = log_in(ui.client(), "nobody@example.com", "not the password")
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong email or password." in wrong.text and "Wrong email or password." in unknown.text
    assert "set-cookie" not in wrong.headers or "uid" not in wrong.headers["set-cookie"]


def test_repeated_failed_logins_lock_the_account_even_against_the_right_password(ui: Ui) -> None:
    ui.users.create("ada@example.com", Role.VIEWER, PASSWORD)
    for _ in range(MAX_FAILED_LOGINS):
        assert log_in(ui.client(), "ada@example.com", "guess").status_code == 401
    locked = log_in(ui.client(), "ada@example.com", PASSWORD)
    assert locked.status_code == 401
    assert "Too many failed logins" in locked.text and "locked until" in locked.text
    ui.users.set_password("ada@example.com", "a brand new password")
    assert log_in(ui.client(), "ada@example.com", "a brand new password").status_code == 303


def test_a_form_without_its_csrf_token_is_refused(ui: Ui) -> None:
    browser = ui.logged_in(Role.ADMIN)
    refused = browser.post("/logout")
    assert refused.status_code == 403
    assert "security token" in refused.text
    forged = browser.post("/logout", data={"csrf_token": "forged"})
    assert forged.status_code == 403
    still = browser.get("/mappings")
    assert still.status_code == 200  # the refused logout changed nothing
    page = browser.get("/mappings")
    out = browser.post("/logout", data={"csrf_token": csrf_of(page.text)})
    assert out.status_code == 303
    assert browser.get("/mappings").status_code == 303  # logged out: back to the login page


def test_a_login_form_without_its_token_is_refused(ui: Ui) -> None:
    ui.users.create("ada@example.com", Role.VIEWER, PASSWORD)
    browser = TestClient(ui.app, follow_redirects=False)  # type: ignore[arg-type]
    answer = browser.post("/login", data={"email": "ada@example.com", "password": PASSWORD})
    assert answer.status_code == 403
    assert browser.get("/mappings").status_code == 303


def test_disabling_a_user_or_changing_their_role_ends_their_sessions(ui: Ui) -> None:
    browser = ui.logged_in(Role.EDITOR)
    assert browser.get("/mappings").status_code == 200
    ui.users.set_role("editor@example.com", Role.VIEWER)
    assert browser.get("/mappings").status_code == 303
    again = ui.logged_in(Role.EDITOR)  # logs in again, now as a viewer
    assert "viewer" in again.get("/mappings").text
    ui.users.set_disabled("editor@example.com", True)
    assert again.get("/mappings").status_code == 303
    assert log_in(ui.client(), "editor@example.com", PASSWORD).status_code == 401


def test_an_htmx_request_without_a_session_is_sent_to_the_login_page(ui: Ui) -> None:
    answer = ui.client().get(
        "/mappings",
        headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/mappings?model=users"},
    )
    assert answer.status_code == 204
    assert answer.headers["hx-redirect"] == "/login?next=/mappings%3Fmodel%3Dusers"


def test_the_api_still_answers_json_beside_the_ui(ui: Ui) -> None:
    browser = ui.client()
    assert browser.get("/api/v1/mappings").status_code == 401
    assert browser.get("/healthz").status_code == 200
    assert browser.get("/static/htmx-2.0.11.min.js").status_code == 200


def test_a_workspace_error_shows_on_every_page_until_fixed(ui: Ui) -> None:
    problem: list[str] = ["ebbtide.yml:7: mappings.users_mirror.schedule: not a schedule"]
    services = services_over(
        lambda: ui.service.workspace,
        ui.service.state,
        not_ready=lambda: f"the last edit was refused: {problem[0]}" if problem else None,
    )
    browser = TestClient(create_app(services), follow_redirects=False)
    ui.users.create("ada@example.com", Role.VIEWER, PASSWORD)
    assert log_in(browser, "ada@example.com", PASSWORD).status_code == 303
    for path in ("/mappings", "/destinations"):
        shown = browser.get(path).text
        assert 'role="alert"' in shown and "mappings.users_mirror.schedule" in shown
    problem.clear()
    assert "Workspace error" not in browser.get("/mappings").text
