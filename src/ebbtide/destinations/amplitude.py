"""Amplitude: events through the HTTP V2 API (`POST /2/httpapi`), user properties through the
Identify API (`POST /identify`). The API key travels in the body.

A 400 that names invalid events (`events_with_invalid_fields`, `events_with_missing_fields`:
field → event indexes) means Amplitude ingested none of the request. Those events fail alone;
the others are sent again at once, in a second request of the same `send`, and count as loaded
only when a 2xx answers that request. (The engine knows one answer per batch: returning the
valid events as neither accepted nor refused is not possible, and refusing them would leave
them unsent until the next sync.) Each event's `insert_id` comes from the record's key, its
version and the batch's epoch, so a resend after a lost answer is deduplicated by Amplitude and
a replay is not.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from pydantic import Field, HttpUrl

from ebbtide.config.models import DestinationConfig, FieldType, RateLimitSpec, SyncMode
from ebbtide.destinations.http import HttpAnswer, HttpClient, http_error, malformed
from ebbtide.destinations.records import epoch_ms, insert_id, records_of, versions
from ebbtide.errors import DestinationError, ErrorClass
from ebbtide.ports import (
    ActionSpec,
    AdapterContext,
    BatchResult,
    DestinationPlugin,
    FieldSpec,
    OutboundBatch,
    RecordRejection,
)

EVENTS = 2000  # events per /2/httpapi request
IDENTIFY_MIN_ID = 5  # the Identify API takes no min_id_length option
_HTTPAPI = "an Amplitude /2/httpapi answer"


class AmplitudeConfig(DestinationConfig):
    secret_settings = ("api_key",)

    api_key: str = Field(min_length=1, repr=False)
    base_url: HttpUrl = HttpUrl("https://api2.amplitude.com")  # EU: https://api.eu.amplitude.com
    timeout_s: float = Field(default=30.0, gt=0)
    # options.min_id_length: user_id and device_id are at least 5 characters unless this says
    # less (a warehouse's numeric ids often are shorter).
    min_id_length: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=EVENTS, ge=1, le=EVENTS)
    # 1 MB per request: the records' JSON stays under 900 kB, leaving room for each event's
    # insert_id and the envelope; a record larger than that could not go in any request.
    max_record_bytes: int | None = Field(default=900_000, ge=1, le=900_000)
    max_request_bytes: int | None = Field(default=900_000, ge=1, le=900_000)
    # Starter plans: 100 batches a second (and 1,000 events a second).
    rate_limit: RateLimitSpec | None = RateLimitSpec(requests=100, per="1s")


class AmplitudeDestination:
    """`track_events`: /2/httpapi (again without the events a 400 named); `identify`: /identify."""

    def __init__(self, config: AmplitudeConfig) -> None:
        self.config = config
        self._client = HttpClient(
            str(config.base_url), timeout_s=config.timeout_s, concurrency=config.concurrency
        )

    async def open(self) -> None:
        await self._client.open()

    async def close(self) -> None:
        await self._client.close()

    async def send(self, batch: OutboundBatch) -> BatchResult:
        if batch.action == "identify":
            return await self._identify(batch)
        rejected: list[RecordRejection] = []
        pending: list[tuple[str, dict[str, Any]]] = []
        for (key_text, record), version in zip(records_of(batch), versions(batch), strict=True):
            event_id = insert_id(key_text, version, batch.epoch)
            built = _event(record, event_id, self.config.min_id_length or IDENTIFY_MIN_ID)
            if isinstance(built, str):
                rejected.append(RecordRejection(key_text, ErrorClass.MAPPING, built))
            else:
                pending.append((key_text, built))
        while pending:  # each round sends fewer events: a 400 names at least one
            named = await self._post_events([event for _, event in pending])
            if not named:
                break
            rejected += [
                RecordRejection(pending[i][0], ErrorClass.VALIDATION, why, http_status=400)
                for i, why in named.items()
            ]
            pending = [item for i, item in enumerate(pending) if i not in named]
        return BatchResult(tuple(rejected))

    async def _post_events(self, events: list[dict[str, Any]]) -> dict[int, str]:
        """Send; {} when Amplitude took them all, else the events a 400 named, with why."""
        body: dict[str, Any] = {"api_key": self.config.api_key, "events": events}
        if self.config.min_id_length is not None:
            body["options"] = {"min_id_length": self.config.min_id_length}
        answer = await self._client.request("POST", "/2/httpapi", json_body=body)
        if answer.ok:
            reply = answer.json(_HTTPAPI)
            if not isinstance(reply, dict):
                raise malformed(_HTTPAPI, "it is not an object", answer.text)
            return {}
        named = _named_events(answer, len(events)) if answer.status == 400 else None
        if not named:
            raise _refusal(answer)
        return named

    async def _identify(self, batch: OutboundBatch) -> BatchResult:
        rejected: list[RecordRejection] = []
        identifications: list[dict[str, Any]] = []
        for key_text, record in records_of(batch):
            built = _identification(record)
            if isinstance(built, str):
                rejected.append(RecordRejection(key_text, ErrorClass.MAPPING, built))
            else:
                identifications.append(built)
        if identifications:
            form = {"api_key": self.config.api_key, "identification": json.dumps(identifications)}
            answer = await self._client.request(
                "POST",
                "/identify",
                body=urlencode(form).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            if not answer.ok:
                raise _refusal(answer)
        return BatchResult(tuple(rejected))


def _ids(data: dict[str, Any], min_length: int) -> str | None:
    """Why the record's user_id and device_id cannot identify it, or None."""
    ids = [str(data[name]) for name in ("user_id", "device_id") if data.get(name) not in (None, "")]
    if not ids:
        return "user_id and device_id are both missing: Amplitude needs one of them"
    if all(len(i) < min_length for i in ids):
        return (
            f"user_id and device_id are shorter than {min_length} characters, which Amplitude"
            " drops; set the destination's min_id_length (track_events) or use longer ids"
        )
    return None


def _event(record: dict[str, Any], event_id: str, min_id: int) -> dict[str, Any] | str:
    if record["op"] == "deleted":
        return "Amplitude events cannot be deleted"
    data = dict(record.get("data") or {})
    if (problem := _ids(data, min_id)) is not None:
        return problem
    if data.get("event_type") in (None, ""):
        return "event_type is missing: Amplitude needs every event's type"
    if data.get("time") is not None:
        time_ms = epoch_ms(data["time"])
        if time_ms is None:
            return f"time {data['time']!r} is not a date and time"
        data["time"] = time_ms
    for name in ("user_id", "device_id", "event_type"):
        if data.get(name) is not None:
            data[name] = str(data[name])
    return {**{k: v for k, v in data.items() if v is not None}, "insert_id": event_id}


def _identification(record: dict[str, Any]) -> dict[str, Any] | str:
    if record["op"] == "deleted":
        return "Amplitude's Identify API cannot delete users"
    data = {k: v for k, v in (record.get("data") or {}).items() if v is not None}
    if (problem := _ids(data, IDENTIFY_MIN_ID)) is not None:
        return problem
    for name in ("user_id", "device_id"):
        if name in data:
            data[name] = str(data[name])
    return data


def _named_events(answer: HttpAnswer, sent: int) -> dict[int, str] | None:
    """Event index → why, from a 400's `events_with_invalid_fields` and
    `events_with_missing_fields`; None when the 400 names no event."""
    try:
        reply = json.loads(answer.text)
    except ValueError:
        return None
    if not isinstance(reply, dict):
        return None
    named: dict[int, list[str]] = {}
    for section, word in (
        ("events_with_invalid_fields", "invalid"),
        ("events_with_missing_fields", "missing"),
    ):
        fields = reply.get(section) or {}
        if not isinstance(fields, dict):
            return None
        for field, indexes in fields.items():
            for index in indexes if isinstance(indexes, list) else [indexes]:
                if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < sent:
                    raise malformed(_HTTPAPI, f"event index {index!r} is not one sent", answer.text)
                named.setdefault(index, []).append(f"{field} is {word}")
    return {i: f"Amplitude refused the event: {', '.join(why)}" for i, why in named.items()}


def _refusal(answer: HttpAnswer) -> DestinationError:
    """A request refused whole; Amplitude answers a wrong API key with a 400."""
    try:
        reply = json.loads(answer.text)
    except ValueError:
        reply = None
    error = str(reply.get("error") or "") if isinstance(reply, dict) else ""
    if answer.status == 400 and "invalid api key" in error.lower():
        return http_error(
            answer, message="Invalid API key: check api_key", error_class=ErrorClass.AUTH
        )
    if answer.status == 429 and isinstance(reply, dict):
        return http_error(answer, message=_throttled(reply))
    if error:
        missing = reply.get("missing_field") if isinstance(reply, dict) else None
        return http_error(answer, message=error + (f" ({missing})" if missing else ""))
    return http_error(answer)


def _throttled(reply: dict[str, Any]) -> str:
    parts = [str(reply.get("error") or "throttled")]
    if isinstance(reply.get("throttled_events"), list):
        parts.append(f"{len(reply['throttled_events'])} events throttled")
    over = [
        k for k in ("exceeded_daily_quota_users", "exceeded_daily_quota_devices") if reply.get(k)
    ]
    if over:
        parts.append("some users or devices are over their daily quota")
    return "; ".join(parts)


_IDS = (FieldSpec("user_id", FieldType.STRING), FieldSpec("device_id", FieldType.STRING))
_CONTEXT = tuple(
    FieldSpec(name, FieldType.STRING)
    for name in ("app_version", "platform", "os_name", "country", "region", "city", "language")
)
_EVENT = (
    *_IDS,
    FieldSpec("event_type", FieldType.STRING, required=True),
    FieldSpec("time", FieldType.DATETIME),
    FieldSpec("event_properties", FieldType.OBJECT),
    FieldSpec("user_properties", FieldType.OBJECT),
    *_CONTEXT,
    FieldSpec("session_id", FieldType.INTEGER),
    FieldSpec("price", FieldType.NUMBER),
    FieldSpec("quantity", FieldType.INTEGER),
    FieldSpec("revenue", FieldType.NUMBER),
    FieldSpec("productId", FieldType.STRING),
    FieldSpec("revenueType", FieldType.STRING),
    FieldSpec("ip", FieldType.STRING),
)
_NO_DELETES = frozenset({SyncMode.INSERT, SyncMode.UPSERT, SyncMode.UPDATE})
ACTIONS = {
    "track_events": ActionSpec(
        "track_events",
        "Send an event per row (HTTP V2 API); an updated row is sent as a new event.",
        fields=_EVENT,
        modes=_NO_DELETES,
        field_columns=False,
    ),
    "identify": ActionSpec(
        "identify",
        "Set user properties by user_id or device_id without an event (Identify API).",
        fields=(*_IDS, FieldSpec("user_properties", FieldType.OBJECT), *_CONTEXT),
        modes=_NO_DELETES,
        field_columns=False,
    ),
}


def _build(config: AmplitudeConfig, context: AdapterContext) -> AmplitudeDestination:
    return AmplitudeDestination(config)


# No `check`: the ingestion APIs have no call that only checks the API key (Amplitude's
# account APIs take another credential, the secret key).
PLUGIN = DestinationPlugin(config=AmplitudeConfig, actions=ACTIONS, build=_build)
