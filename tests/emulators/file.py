"""The file destination's "emulator" is the JSONL file it appends to: what it holds is the
file's operations applied in order."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from tests.conformance.case import DestinationCase
from tests.emulators.base import Seen


class JsonlFile:
    """A folder for the file; a file accepts every record, so it refuses none."""

    name = "file"

    def __init__(self, *, credential: str, **_: Any) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="ebbtide-conformance-")
        self.path = Path(self._folder.name) / "out.jsonl"
        self.seen: list[Seen] = []

    @property
    def url(self) -> str:
        return str(self.path)

    def held(self) -> dict[str, Any]:
        held: dict[str, Any] = {}
        if not self.path.exists():
            return held
        for line in self.path.read_text().splitlines():
            record = json.loads(line)
            if record["op"] == "deleted":
                held.pop(str(record["key"]), None)
            else:
                held[str(record["key"])] = record["data"]["email"]
        return held

    def __enter__(self) -> JsonlFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._folder.cleanup()


CASE = DestinationCase(
    type="file",
    emulator=JsonlFile,
    settings=lambda path: {"path": path},
    action="append",
    fields={"email": "email", "name": "name", "plan": "plan"},
    held=lambda file: file.held(),
    records_in=lambda seen: 0,
    record_paths=frozenset(),
    max_batch_size=100_000,
    declares_fields=False,
    http=False,
    rejects=False,
)
