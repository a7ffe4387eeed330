"""Cursor-assisted change detection: which rows a sync reads whole, and when it reads them all.

A mapping with `change_detection: {cursor: updated_at}` reads every key of its model (so a
delete is found as exactly as by the full diff) but the whole rows only of those whose cursor
is at or past the last committed cursor less a lookback, or null. A key the snapshot does not
hold, or a record being retried, is read whatever its cursor: a sync that needs one outside the
cursor's reach reads the model whole instead, as the full diff does every `full_diff_every`
syncs and every `full_diff_interval`, to repair what an untrustworthy cursor missed.

The cursor advances, in the snapshot's meta, only with a commit of a run whose load ran to the
end: a run that stopped early may have left rows unsent that no failure names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pyarrow as pa

from ebbtide.errors import ModelError
from ebbtide.ports import iter_batches
from ebbtide.snapshots.sql_text import bare_query
from ebbtide.values import CursorSettings

META_KEY = "cursor"
PAST_COLUMN = "__past_cursor"  # whether a key's row was read whole (its cursor had moved)
FULL = "full"
CURSOR = "cursor"
_DEFAULT_TIME_LOOKBACK = timedelta(hours=1)
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

CursorValue = datetime | date | int | float | Decimal


@dataclass
class CursorState:
    """What the snapshot keeps between syncs about the cursor (its meta `cursor`)."""

    column: str
    last: str | None = None  # the greatest cursor the last complete sync read, as text
    kind: str | None = None  # timestamp, timestamptz, date or number
    syncs_since_full: int = 0
    full_at: str | None = None  # when the last full diff committed (ISO, UTC)

    @classmethod
    def load(cls, text: str | None, column: str) -> CursorState:
        """The kept state; a fresh one (so a full diff) when none is kept or the column
        changed."""
        if text:
            kept = cls(**json.loads(text))
            if kept.column == column:
                return kept
        return cls(column)

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def after(self, detection: str, greatest: CursorValue | None, now: datetime) -> CursorState:
        """The state once a complete run that found its changes by `detection` has committed.

        A cursor run keeps the greater of the committed cursor and the greatest it read (the
        row that held the cursor may be gone); a full run takes the greatest it read: the
        whole model is known again."""
        if detection == CURSOR:
            kind, last = self.kind, self.last
            if greatest is not None:
                read_kind, read = _as_text(greatest)
                if read_kind != kind or last is None or greatest > _parse(kind, last):  # type: ignore[operator]
                    kind, last = read_kind, read
            return CursorState(self.column, last, kind, self.syncs_since_full + 1, self.full_at)
        kind, last = _as_text(greatest) if greatest is not None else (None, None)
        return CursorState(self.column, last, kind, 0, now.astimezone(UTC).isoformat())


def why_full(settings: CursorSettings, state: CursorState, now: datetime) -> str | None:
    """Why this sync must read the whole model; None when the cursor may be trusted."""
    if state.last is None:
        return "full: no cursor committed yet"
    if state.syncs_since_full + 1 >= settings.full_diff_every:
        return f"full: every {settings.full_diff_every} syncs"
    if state.full_at is None:
        return "full: no full diff on record"
    since = now - datetime.fromisoformat(state.full_at)
    if since >= settings.full_diff_interval:
        return f"full: at least every {_human(settings.full_diff_interval)}"
    return None


def since_literal(settings: CursorSettings, state: CursorState) -> str:
    """The SQL literal rows are read from: the last committed cursor less the lookback."""
    assert state.last is not None and state.kind is not None
    lookback = settings.lookback
    column = settings.column
    if state.kind == "number":
        if isinstance(lookback, timedelta):
            raise ModelError(
                f"change_detection: cursor {column!r} is a number, so its lookback is a number"
                f" too (such as 1000), not a duration"
            )
        last = Decimal(state.last)
        return str(last - Decimal(str(lookback or 0)))
    if lookback is not None and not isinstance(lookback, timedelta):
        raise ModelError(
            f"change_detection: cursor {column!r} holds times, so its lookback is a duration"
            f" (such as 1h), not the number {lookback!r}"
        )
    back = lookback if lookback is not None else _DEFAULT_TIME_LOOKBACK
    if state.kind == "date":
        since: date = date.fromisoformat(state.last) - timedelta(days=-(-back // timedelta(days=1)))
        return f"'{since.isoformat()}'"
    moment = datetime.fromisoformat(state.last) - back
    return f"'{moment.isoformat(sep=' ')}'"


class Greatest:
    """The greatest cursor value a run has read so far."""

    def __init__(self, column: str) -> None:
        self.column = column
        self.value: CursorValue | None = None

    def add(self, value: object) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, CursorValue):
            raise ModelError(
                f"change_detection: cursor {self.column!r} holds {type(value).__name__} values;"
                " a cursor is a timestamp, a date or a number that grows when a row changes"
            )
        if self.value is None or value > self.value:  # type: ignore[operator]
            self.value = value


def tracking(rows: pa.RecordBatchReader, greatest: Greatest) -> pa.RecordBatchReader:
    """`rows` unchanged, the greatest value of the cursor column noted as they pass."""
    import pyarrow.compute as pc

    index = column_index(rows.schema.names, greatest.column)

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in iter_batches(rows):
            if batch.num_rows:
                greatest.add(pc.max(batch.column(index)).as_py())
            yield batch

    return pa.RecordBatchReader.from_batches(rows.schema, batches())


def column_index(names: list[str], column: str) -> int:
    """Where the cursor is among the model's columns (named as any case of it)."""
    lowered = [n.lower() for n in names]
    if column.lower() not in lowered:
        raise ModelError(
            f"change_detection: cursor {column!r} is not a column of the model"
            f" (its columns: {', '.join(names)})"
        )
    return lowered.index(column.lower())


def past_filter(column: str, since: str) -> str:
    """The rows a cursor sync reads whole: past the cursor, or without one."""
    return f"(m.{column} >= {since} OR m.{column} IS NULL)"


def key_query(query: str, keys: tuple[str, ...]) -> str:
    """The model's keys alone (the cursor's name rule applies: plain names stay unquoted)."""
    listed = ", ".join(f"m.{k}" if _PLAIN.fullmatch(k) else f'm."{k}"' for k in keys)
    return f"SELECT {listed} FROM ({bare_query(query)}\n) m"


def past_query(query: str, past: str) -> str:
    return f"SELECT * FROM ({bare_query(query)}\n) m WHERE {past}"


def _parse(kind: str | None, text: str) -> CursorValue:
    if kind in ("timestamp", "timestamptz"):
        return datetime.fromisoformat(text)
    if kind == "date":
        return date.fromisoformat(text)
    return Decimal(text)


def _as_text(value: CursorValue) -> tuple[str, str]:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return "timestamp", value.isoformat(sep=" ")
        return "timestamptz", value.astimezone(UTC).isoformat(sep=" ")
    if isinstance(value, date):
        return "date", value.isoformat()
    return "number", str(value)


def _human(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
