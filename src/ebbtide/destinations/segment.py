"""Segment: identify, track and group calls through the HTTP Tracking API's batch endpoint.

`POST {base_url}/v1/batch` with `{"batch": [event, …]}`, the write key as HTTP Basic auth
(the key as the user name, an empty password). Segment answers 200 `{"success": true}` for a
batch it took, and 400 for a request that is not JSON or is too large (500 KB a request,
32 KB an event): it never refuses one event of a batch by itself, it drops such an event
silently after answering 200. So everything Segment would drop (no userId nor anonymousId, a
track without `event`, a group without `groupId`, an event over 32 KB) is refused here,
record by record, before it is sent. docs/destinations/segment.md says more.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from decimal import Decimal
from importlib import metadata
from typing import Any, cast

from pydantic import Field, HttpUrl

from ebbtide.config.models import DestinationConfig, FieldType, RateLimitSpec, SyncMode
from ebbtide.destinations.http import (
    HttpAnswer,
    HttpClient,
    RateLimitHeaders,
    http_error,
    malformed,
)
from ebbtide.errors import ErrorClass
from ebbtide.ports import (
    HASH_COLUMN,
    KEY_COLUMN,
    RECORD_COLUMN,
    ActionSpec,
    AdapterContext,
    BatchResult,
    DestinationPlugin,
    FieldSpec,
    OutboundBatch,
    RecordRejection,
)

# Segment's documented limits, read as decimal kilobytes (the stricter reading).
EVENT_LIMIT = 32_000
REQUEST_LIMIT = 500_000
EVENTS_PER_REQUEST = 2_500
MESSAGE_ID_LIMIT = 100  # "fewer than 100 characters"
_ENVELOPE = len(b'{"batch":[]}')
_RATE_LIMIT = RateLimitHeaders(remaining="X-RateLimit-Remaining", reset="X-RateLimit-Reset")


def _library() -> dict[str, str]:
    try:
        version = metadata.version("ebbtide")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        version = "unknown"
    return {"name": "ebbtide", "version": version}


LIBRARY = _library()


class SegmentConfig(DestinationConfig):
    """A Segment source's HTTP Tracking API, written to with the source's write key."""

    secret_settings = ("write_key",)

    write_key: str = Field(min_length=1, repr=False)
    # The EU region's workspaces use https://events.eu1.segmentapis.com.
    base_url: HttpUrl = HttpUrl("https://api.segment.io")
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    # Up to 2,500 events a request (Segment drops the ones past it after answering 200).
    batch_size: int = Field(default=100, ge=1, le=EVENTS_PER_REQUEST)
    # The record's JSON; the event adds its type, messageId and context (well under 1,000
    # bytes), and an event still over 32 KB is refused before it is sent.
    max_record_bytes: int = Field(default=31_000, ge=1, le=31_000)
    # The records' JSON per request; the events' envelopes fill the rest of Segment's 500 KB
    # (a batch of small records whose events would pass it goes in more than one request).
    max_request_bytes: int = Field(default=450_000, ge=1, le=450_000)
    # Segment asks for at most 1,000 requests a second per workspace.
    rate_limit: RateLimitSpec | None = RateLimitSpec(requests=1000, per="1s")

    @property
    def authorization(self) -> str:
        """HTTP Basic auth: the write key as the user name, an empty password."""
        return "Basic " + base64.b64encode(f"{self.write_key}:".encode()).decode()

    def secret_values(self) -> list[str]:
        """The key, and the header that carries it (an answer may echo either)."""
        return [self.write_key, self.authorization, self.authorization.split()[1]]


class _Refused(Exception):
    """A record Segment would drop: refused by itself, never sent."""

    def __init__(self, error_class: ErrorClass, message: str, code: str) -> None:
        super().__init__(message)
        self.error_class, self.message, self.code = error_class, message, code


class SegmentDestination:
    """Sends each outbound batch as one `/v1/batch` request (more when its events need it)."""

    def __init__(self, config: SegmentConfig) -> None:
        self.config = config
        self._client = HttpClient(
            str(config.base_url),
            headers={"Content-Type": "application/json", "Authorization": config.authorization},
            timeout_s=config.timeout_s,
            concurrency=config.concurrency,
        )

    async def open(self) -> None:
        await self._client.open()

    async def close(self) -> None:
        await self._client.close()

    async def send(self, batch: OutboundBatch) -> BatchResult:
        events, rejected = events_of(batch)
        pause: float | None = None
        # Rarely more than one request: if a later one fails, the engine sends the batch again, and
        # Segment drops the first request's events by their messageIds.
        for body in _request_bodies(events):
            wait = acknowledged(await self.post(body))
            pause = max(pause or 0.0, wait) if wait is not None else pause
        return BatchResult(rejected=tuple(rejected), pause_s=pause)

    async def post(self, body: bytes) -> HttpAnswer:
        return await self._client.request("POST", "v1/batch", body=body)


def events_of(batch: OutboundBatch) -> tuple[list[bytes], list[RecordRejection]]:
    """Each record as its Segment event (compact UTF-8 JSON), or its refusal."""
    records = cast(list[str], batch.records.column(RECORD_COLUMN).to_pylist())
    keys = cast(list[str], batch.records.column(KEY_COLUMN).to_pylist())
    hashes: list[Any] = [None] * len(records)
    if HASH_COLUMN in batch.records.schema.names:
        hashes = batch.records.column(HASH_COLUMN).to_pylist()
    events: list[bytes] = []
    rejected: list[RecordRejection] = []
    for text, key, row_hash in zip(records, keys, hashes, strict=True):
        try:
            events.append(_event(batch, text, key, row_hash))
        except RecursionError:
            message = "the record is nested too deeply to send"
            rejected.append(RecordRejection(key, ErrorClass.MAPPING, message, code="too_deep"))
        except _Refused as refused:
            rejected.append(
                RecordRejection(key, refused.error_class, refused.message, code=refused.code)
            )
    return events, rejected


def _event(batch: OutboundBatch, text: str, key: str, row_hash: Any) -> bytes:
    record = json.loads(text, parse_float=Decimal)
    data = record.get("data")
    if record.get("op") == "deleted" or not isinstance(data, dict):
        raise _Refused(
            ErrorClass.MAPPING,
            "Segment's Tracking API cannot delete: a deleted row is not sent (use mode"
            " upsert, insert or update)",
            "cannot_delete",
        )
    _check_required(batch.action, data)
    version = f"{record['op']}:{row_hash if row_hash is not None else _sha(text)}"
    event: dict[str, Any] = {"type": batch.action}
    event.update((name, value) for name, value in data.items() if _given(value))
    event["context"] = {**(event.get("context") or {}), "library": LIBRARY}
    event["messageId"] = message_id(batch, key, version)
    encoded = _json(event).encode()
    if len(encoded) > EVENT_LIMIT:
        raise _Refused(
            ErrorClass.PAYLOAD_TOO_LARGE,
            f"the event is {len(encoded):,} bytes; Segment accepts at most {EVENT_LIMIT:,}"
            " bytes an event: map fewer or smaller traits or properties",
            "event_too_large",
        )
    return encoded


def _check_required(action: str, data: dict[str, Any]) -> None:
    """What Segment drops after answering 200: refused here instead, naming the field."""
    if not _given(data.get("userId")) and not _given(data.get("anonymousId")):
        raise _Refused(
            ErrorClass.MAPPING,
            "the event has neither userId nor anonymousId (both are null or empty for this"
            " row); Segment drops such events: map userId or anonymousId to a column that has"
            " a value",
            "no_user_anon_id",
        )
    required = {"track": "event", "group": "groupId"}.get(action)
    if required is not None and not _given(data.get(required)):
        raise _Refused(
            ErrorClass.MAPPING,
            f"the {action} event has no {required} (null or empty for this row); Segment drops"
            f" a {action} without one",
            f"missing_{required}",
        )


def _given(value: Any) -> bool:
    return value is not None and value != ""


def message_id(batch: OutboundBatch, key: str, version: str) -> str:
    """The same for the same version of a record, so that Segment drops a resend of a batch
    whose answer was lost (a crash, a timeout); new for a replay or after a reset (`epoch`),
    which are meant to reach Segment again."""
    parts = (batch.origin, batch.mapping, batch.action, key, version, batch.epoch)
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"ebbtide-{digest[:48]}"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _json(value: Any) -> str:
    """Compact JSON that keeps every digit of a decimal (json.dumps would make it a float)."""
    if isinstance(value, dict):
        items = (f"{_json(str(k))}:{_json(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_json(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _request_bodies(events: list[bytes]) -> Iterator[bytes]:
    """The events in as few bodies of at most REQUEST_LIMIT bytes as they fit in, in order."""
    start, size = 0, _ENVELOPE
    for i, event in enumerate(events):
        if i > start and size + len(event) + 1 > REQUEST_LIMIT:
            yield _body(events[start:i])
            start, size = i, _ENVELOPE
        size += len(event) + 1
    if start < len(events):
        yield _body(events[start:])


def _body(events: list[bytes]) -> bytes:
    return b'{"batch":[' + b",".join(events) + b"]}"


def acknowledged(answer: HttpAnswer) -> float | None:
    """A 2xx `{"success": true}`: the whole batch taken. Returns how long to pause, when the
    rate-limit headers say the allowance is spent; raises for anything else."""
    if not answer.ok:
        too_large = answer.status == 400 and "too large" in answer.text.lower()
        raise http_error(
            answer,
            error_class=ErrorClass.PAYLOAD_TOO_LARGE if too_large else None,
            rate_limit=_RATE_LIMIT,
        )
    body = answer.json('Segment\'s {"success": true}')
    if not isinstance(body, dict) or body.get("success") is not True:
        raise malformed('Segment\'s {"success": true}', "it does not say success", answer.text)
    return _RATE_LIMIT.wait_s(answer.headers)


def _ids(action: str) -> tuple[FieldSpec, ...]:
    """userId and anonymousId (one of them, per event), then the action's own id field."""
    ids = (FieldSpec("userId", FieldType.STRING), FieldSpec("anonymousId", FieldType.STRING))
    own = {"track": "event", "group": "groupId"}.get(action)
    return ids + ((FieldSpec(own, FieldType.STRING, required=True),) if own else ())


def _common() -> tuple[FieldSpec, ...]:
    return (
        FieldSpec("timestamp", FieldType.DATETIME),
        FieldSpec("context", FieldType.OBJECT),
        FieldSpec("integrations", FieldType.OBJECT),
    )


_MODES = frozenset({SyncMode.UPSERT, SyncMode.INSERT, SyncMode.UPDATE})
ACTIONS = {
    "identify": ActionSpec(
        "identify",
        "Identify users: userId (or anonymousId) and their traits.",
        fields=(*_ids("identify"), FieldSpec("traits", FieldType.OBJECT), *_common()),
        modes=_MODES,
        field_columns=False,
    ),
    "track": ActionSpec(
        "track",
        "Track an event per record: its name (event), who did it and its properties.",
        fields=(*_ids("track"), FieldSpec("properties", FieldType.OBJECT), *_common()),
        modes=_MODES,
        field_columns=False,
    ),
    "group": ActionSpec(
        "group",
        "Associate users with a group (groupId) and record the group's traits.",
        fields=(*_ids("group"), FieldSpec("traits", FieldType.OBJECT), *_common()),
        modes=_MODES,
        field_columns=False,
    ),
}


def _build(config: SegmentConfig, context: AdapterContext) -> SegmentDestination:
    return SegmentDestination(config)


async def check(config: SegmentConfig, context: AdapterContext) -> str:
    """An empty batch: Segment takes it and records nothing.

    Segment's Tracking API does not look write keys up as it takes events (a key it does not
    know gets 200 too, and its events are dropped), so this proves the endpoint answers and
    the key has a valid form; the source's Debugger shows whether events arrive.
    """
    destination = SegmentDestination(config)
    try:
        acknowledged(await destination.post(_body([])))
    finally:
        await destination.close()
    host = config.base_url.host or str(config.base_url)
    return f"write key accepted by {host} (Segment's Debugger shows whether events arrive)"


PLUGIN = DestinationPlugin(config=SegmentConfig, actions=ACTIONS, build=_build, check=check)
