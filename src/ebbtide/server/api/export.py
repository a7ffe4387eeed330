"""Failed records as files: CSV for a spreadsheet, JSON Lines for a script."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from enum import StrEnum

from fastapi.responses import StreamingResponse

from ebbtide.services.views import View


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


MEDIA = {ExportFormat.CSV: "text/csv; charset=utf-8", ExportFormat.JSONL: "application/x-ndjson"}


def export(rows: Sequence[View], fmt: ExportFormat, filename: str) -> StreamingResponse:
    """The rows, one per line, as a download named `filename`.<fmt>."""
    lines = _csv(rows) if fmt is ExportFormat.CSV else _jsonl(rows)
    return StreamingResponse(
        lines,
        media_type=MEDIA[fmt],
        headers={"Content-Disposition": f'attachment; filename="{filename}.{fmt.value}"'},
    )


def _jsonl(rows: Sequence[View]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row.model_dump(mode="json"), ensure_ascii=False) + "\n"


def _csv(rows: Sequence[View]) -> Iterator[str]:
    buffer = io.StringIO()
    writer: csv.DictWriter[str] | None = None
    for row in rows:
        record = {k: _cell(v) for k, v in row.model_dump(mode="json").items()}
        if writer is None:
            writer = csv.DictWriter(buffer, fieldnames=list(record))
            writer.writeheader()
        writer.writerow(record)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def _cell(value: object) -> object:
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and value[:1] in _FORMULA_STARTS:
        # A spreadsheet would run it as a formula: a payload is data, never code.
        return "'" + value
    return value


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
