"""Reading the receiver's log as it grows, without re-reading what was already read."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from tests.e2e.harness import run_of


class LogTail:
    """Every record the receiver logged, in arrival order, and how many each run sent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self.per_run: Counter[int] = Counter()
        self.view: dict[int, dict[str, Any]] = {}  # what the destination holds, applied as read
        self._offset = 0

    def read(self) -> int:
        """Takes in the complete lines written since the last read; returns the total."""
        if self.path.exists():
            with self.path.open("rb") as log:
                log.seek(self._offset)
                data = log.read()
            complete = data[: data.rfind(b"\n") + 1]
            self._offset += len(complete)
            for line in complete.splitlines():
                record = json.loads(line)
                self.records.append(record)
                self.per_run[run_of(record)] += 1
                apply(self.view, record)
        return len(self.records)

    def sent_by(self, run_id: int) -> int:
        self.read()
        return self.per_run[run_id]


def apply(view: dict[int, dict[str, Any]], record: dict[str, Any]) -> None:
    """A destination that upserts by key and deletes on `deleted`, as the protocol asks."""
    if record["op"] == "deleted":
        view.pop(record["key"], None)
    else:
        view[record["key"]] = record["data"]
