"""What vendor destinations share about a batch's records: each record parsed with its key
text, a single-column key as the vendor's id, and ids that deduplicate a resend of the same
record version (a crash's) but not an intended one (a replay, a reset: `OutboundBatch.epoch`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from ebbtide.ports import HASH_COLUMN, KEY_COLUMN, RECORD_COLUMN, OutboundBatch


def records_of(batch: OutboundBatch) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each record's key text (as the engine wrote it) and its parsed record."""
    keys = batch.records.column(KEY_COLUMN).to_pylist()
    records = batch.records.column(RECORD_COLUMN).to_pylist()
    for key, record in zip(keys, records, strict=True):
        yield str(key), json.loads(str(record))


def key_id(key: Any) -> str | None:
    """A single-column key as the text id a vendor holds; None for a composite key."""
    if isinstance(key, list):
        key = key[0] if len(key) == 1 else None
    if isinstance(key, dict):
        key = next(iter(key.values())) if len(key) == 1 else None
    if key is None or isinstance(key, (dict, list, bool)):
        return None
    return str(key)


def insert_id(key_text: str, version: str, epoch: str) -> str:
    """The same record version in the same epoch: the same id (a resend is deduplicated); a new
    version, a replay or a reset: a new one. 32 hex digits (Mixpanel: at most 36, [A-Za-z0-9-])."""
    seed = "\x1f".join((key_text, version, epoch))
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


def versions(batch: OutboundBatch) -> list[str]:
    """Each record's version: the row hash the engine computed (empty without one)."""
    if HASH_COLUMN not in batch.records.schema.names:
        return [""] * len(batch)
    return ["" if h is None else str(h) for h in batch.records.column(HASH_COLUMN).to_pylist()]


def epoch_ms(value: Any) -> int | None:
    """An event's time as milliseconds since the epoch (naive ISO text is UTC)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value * 1000) if value < 1e11 else int(value)  # seconds or milliseconds
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)
