"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.harness import Processes


@pytest.fixture
def processes() -> Iterator[Processes]:
    running = Processes()
    yield running
    running.close()
