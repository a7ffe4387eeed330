"""Fixtures of the integration tests: a loopback receiver, a workspace kit, the REST API
over it (`api`, from api_kit) and the web UI (`ui`, from ui_kit)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ebbtide.demo.receiver import Receiver
from tests.integration.api_kit import api  # noqa: F401 - a fixture, found by its name
from tests.integration.ui_kit import ui  # noqa: F401 - a fixture, found by its name
from tests.integration.workspace_kit import Kit


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kit]:
    made = Kit(tmp_path, monkeypatch)
    yield made
    made.close()
