"""The web UI over a real workspace (FastAPI's TestClient): users of each role, logged in
through the login form as a browser would be."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from ebbtide.demo.receiver import Receiver
from ebbtide.server.api.app import create_app
from ebbtide.server.api.context import services_over
from ebbtide.services.sync import SyncService
from ebbtide.state.users import Role, UserBook
from tests.integration.workspace_kit import Kit

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Ui:
    service: SyncService
    users: UserBook
    app: object

    def client(self) -> TestClient:
        """A browser with no session."""
        return TestClient(self.app, follow_redirects=False)  # type: ignore[arg-type]

    def logged_in(self, role: Role) -> TestClient:
        """A browser logged in as `<role>@example.com` (made on first use)."""
        email = f"{role.value}@example.com"
        if self.users.by_email(email) is None:
            self.users.create(email, role, PASSWORD)
        client = self.client()
        answer = log_in(client, email, PASSWORD)
        assert answer.status_code == 303, answer.text
        return client


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def log_in(client: TestClient, email: str, password: str, next_url: str = "/") -> object:
    form = client.get("/login")
    return client.post(
        "/login",
        data={
            "email": email,
            "password": password,
            "csrf_token": csrf_of(form.text),
            "next": next_url,
        },
    )


@pytest.fixture
def ui(kit: Kit, receiver: Receiver) -> Iterator[Ui]:
    service = kit.build(receiver.url, rows=12)
    services = services_over(lambda: service.workspace, service.state)
    assert services.users is not None
    yield Ui(service, services.users, create_app(services))
