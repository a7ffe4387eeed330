"""The REST API over a real workspace (FastAPI's TestClient), with a read and a write token."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from ebbtide.demo.receiver import Receiver
from ebbtide.server.api.app import create_app
from ebbtide.server.api.context import services_over
from ebbtide.services.sync import SyncService
from ebbtide.state.tokens import TokenBook, TokenScope
from tests.integration.workspace_kit import Kit


@dataclass
class Api:
    client: TestClient
    service: SyncService
    read: dict[str, str]
    write: dict[str, str]
    write_token: str


@pytest.fixture
def api(kit: Kit, receiver: Receiver) -> Iterator[Api]:
    service = kit.build(receiver.url, rows=12)
    book = TokenBook(service.state.engine)
    read, _ = book.create(TokenScope.READ, "dashboards")
    write, _ = book.create(TokenScope.WRITE, "ops")
    services = services_over(lambda: service.workspace, service.state)
    with TestClient(create_app(services)) as client:
        yield Api(
            client,
            service,
            {"Authorization": f"Bearer {read}"},
            {"Authorization": f"Bearer {write}"},
            write,
        )
