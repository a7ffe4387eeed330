"""Braze: user attributes and custom events through `POST /users/track`, deletes through
`POST /users/delete` (REST API, `Authorization: Bearer <REST API key>`).

Braze answers a request with some invalid objects with `"errors": [{"type", "input_array",
"index"}]`: the object at that index of that array was refused, the others applied. A request
whose objects are all invalid is a 400 with the same list. Every answer carries
`X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (a Unix time, seconds).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pydantic import Field, HttpUrl

from ebbtide.config.models import DestinationConfig, FieldType, RateLimitSpec, SyncMode
from ebbtide.destinations.http import (
    HttpAnswer,
    HttpClient,
    RateLimitHeaders,
    http_error,
    malformed,
)
from ebbtide.destinations.records import key_id, records_of
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

log = logging.getLogger(__name__)

TRACK_OBJECTS = 75  # attributes, events and purchases together, per /users/track request
DELETE_IDS = 50  # external_ids per /users/delete request
RATE_HEADERS = RateLimitHeaders("X-RateLimit-Remaining", "X-RateLimit-Reset", reset_unit="epoch")
_NO_VALID_DATA = "Valid data must be provided"


class BrazeConfig(DestinationConfig):
    secret_settings = ("api_key",)

    api_key: str = Field(min_length=1, repr=False)
    # The workspace's REST endpoint (https://rest.iad-01.braze.com, https://rest.fra-01.braze.eu…)
    base_url: HttpUrl
    timeout_s: float = Field(default=30.0, gt=0)
    batch_size: int = Field(default=TRACK_OBJECTS, ge=1, le=TRACK_OBJECTS)
    # /users/track: 3,000 requests per three seconds per workspace.
    rate_limit: RateLimitSpec | None = RateLimitSpec(requests=3000, per="3s")


class BrazeDestination:
    """One /users/track request per batch (its deletes: /users/delete, 50 ids a request)."""

    def __init__(self, config: BrazeConfig) -> None:
        self.config = config
        self._client = _client(config)

    async def open(self) -> None:
        await self._client.open()

    async def close(self) -> None:
        await self._client.close()

    async def send(self, batch: OutboundBatch) -> BatchResult:
        array = "events" if batch.action == "track_events" else "attributes"
        rejected: list[RecordRejection] = []
        objects: list[tuple[str, dict[str, Any]]] = []
        deletes: list[tuple[str, str]] = []
        for key_text, record in records_of(batch):
            if record["op"] == "deleted":
                external_id = key_id(record["key"])
                if external_id is None:
                    rejected.append(_mapping(key_text, _COMPOSITE_KEY))
                else:
                    deletes.append((key_text, external_id))
                continue
            built = _object(array, record, batch.mode)
            if isinstance(built, str):
                rejected.append(_mapping(key_text, built))
            else:
                objects.append((key_text, built))
        pause = None
        if objects:
            refused, pause = await self._track(array, objects)
            rejected += refused
        for chunk in _chunks(deletes, DELETE_IDS):
            pause = await self._delete([external_id for _, external_id in chunk]) or pause
        return BatchResult(tuple(rejected), pause_s=pause)

    async def _track(
        self, array: str, objects: list[tuple[str, dict[str, Any]]]
    ) -> tuple[list[RecordRejection], float | None]:
        body = {array: [item for _, item in objects]}
        answer = await self._client.request("POST", "/users/track", json_body=body)
        keys = [key for key, _ in objects]
        if answer.ok:
            return _refused(answer, array, keys), RATE_HEADERS.wait_s(answer.headers)
        if answer.status == 400:
            # Every object invalid: Braze answers 400 with each one's error, nothing applied.
            refused = _all_refused(answer, array, keys)
            if refused is not None:
                return refused, RATE_HEADERS.wait_s(answer.headers)
        raise http_error(answer, message=_message(answer), rate_limit=RATE_HEADERS)

    async def _delete(self, external_ids: list[str]) -> float | None:
        body = {"external_ids": external_ids}
        answer = await self._client.request("POST", "/users/delete", json_body=body)
        if not answer.ok:
            raise http_error(answer, message=_message(answer), rate_limit=RATE_HEADERS)
        reply = answer.json("a Braze /users/delete answer")
        if not isinstance(reply, dict):
            raise malformed("a Braze /users/delete answer", "not an object", answer.text)
        return RATE_HEADERS.wait_s(answer.headers)


def _client(config: BrazeConfig) -> HttpClient:
    return HttpClient(
        str(config.base_url),
        headers={"Authorization": f"Bearer {config.api_key}"},
        timeout_s=config.timeout_s,
        concurrency=config.concurrency,
    )


_COMPOSITE_KEY = (
    "a deleted record is deleted by its key, which must be a single column holding the"
    " external_id; this model's key has several columns"
)


def _object(array: str, record: dict[str, Any], mode: SyncMode) -> dict[str, Any] | str:
    """The Braze object for an added or updated record, or why it cannot be sent."""
    data = dict(record.get("data") or {})
    external_id = data.get("external_id")
    if external_id is None or external_id == "":
        return "external_id is missing: Braze needs it to find the user"
    if mode is SyncMode.MIRROR and str(external_id) != key_id(record["key"]):
        return (
            f"external_id {external_id!r} is not the record's key: in mirror mode deletes"
            " carry only the key, so map external_id from the model's primary key"
        )
    data["external_id"] = str(external_id)
    if array == "events":
        missing = [name for name in ("name", "time") if data.get(name) in (None, "")]
        if missing:
            return f"{' and '.join(missing)} missing: Braze needs every event's name and time"
        when = _utc_iso(data["time"])
        if when is None:
            return f"time {data['time']!r} is not an ISO 8601 date and time"
        data["time"] = when
        return {name: value for name, value in data.items() if value is not None}
    # Attributes: a null is sent as null, which unsets the attribute (the model has no value).
    custom = data.pop("custom_attributes", None) or {}
    if not isinstance(custom, dict):
        return "custom_attributes is not an object"
    return {**custom, **data}


def _utc_iso(value: Any) -> str | None:
    """An event time as ISO 8601 with its offset; a warehouse timestamp without one is UTC."""
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()


def _refused(answer: HttpAnswer, array: str, keys: list[str]) -> list[RecordRejection]:
    reply = answer.json("a Braze /users/track answer")
    if not isinstance(reply, dict):
        raise malformed("a Braze /users/track answer", "it is not an object", answer.text)
    errors = reply.get("errors") or []
    if not isinstance(errors, list):
        raise malformed("a Braze /users/track answer", '"errors" is not a list', answer.text)
    refused: dict[int, RecordRejection] = {}
    for error in errors:
        if not isinstance(error, dict) or "index" not in error:
            # Braze lists minor errors that name no object; they refuse none of them.
            log.warning("Braze answered an error that names no object: %.200s", error)
            continue
        index = error["index"]
        if error.get("input_array", array) != array:
            continue  # an array this request did not send: nothing of ours
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(keys):
            raise malformed(
                "a Braze /users/track answer", f"error index {index!r} is not one sent", answer.text
            )
        refused[index] = RecordRejection(
            keys[index],
            ErrorClass.VALIDATION,
            str(error.get("type") or "refused by Braze"),
            code=f"{array}[{index}]",
            http_status=answer.status,
        )
    return list(refused.values())


def _all_refused(answer: HttpAnswer, array: str, keys: list[str]) -> list[RecordRejection] | None:
    """A 400 naming each object sent: every one refused by itself. Else None (refused whole)."""
    try:
        refused = _refused(answer, array, keys)
    except DestinationError:
        return None
    return refused if len(refused) == len(keys) else None


def _message(answer: HttpAnswer) -> str | None:
    try:
        reply = json.loads(answer.text)
    except ValueError:
        return None
    return str(reply["message"])[:300] if isinstance(reply, dict) and "message" in reply else None


def _mapping(key: str, message: str) -> RecordRejection:
    return RecordRejection(key, ErrorClass.MAPPING, message)


def _chunks(items: list[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def _check(config: BrazeConfig, context: AdapterContext) -> str:
    """Braze has no account-information endpoint: an empty /users/track is refused with a 400
    ("Valid data must be provided …") only once the key is known and may track users."""
    async with _client(config) as client:
        answer = await client.request("POST", "/users/track", json_body={"attributes": []})
    if answer.ok or (answer.status == 400 and _NO_VALID_DATA in answer.text):
        return f"REST API key accepted by {config.base_url.host} for /users/track"
    raise http_error(answer, message=_message(answer), rate_limit=RATE_HEADERS)


_PROFILE = (
    FieldSpec("external_id", FieldType.STRING, required=True),
    FieldSpec("email", FieldType.STRING),
    FieldSpec("first_name", FieldType.STRING),
    FieldSpec("last_name", FieldType.STRING),
    FieldSpec("phone", FieldType.STRING),
    FieldSpec("country", FieldType.STRING),
    FieldSpec("home_city", FieldType.STRING),
    FieldSpec("language", FieldType.STRING),
    FieldSpec("gender", FieldType.STRING),
    FieldSpec("dob", FieldType.DATE),
    FieldSpec("time_zone", FieldType.STRING),
    FieldSpec("email_subscribe", FieldType.STRING),
    FieldSpec("push_subscribe", FieldType.STRING),
    # Any other attribute, by name: each property becomes a custom attribute (values may be
    # objects or arrays of objects: Braze's nested custom attributes).
    FieldSpec("custom_attributes", FieldType.OBJECT),
)
_EVENT = (
    FieldSpec("external_id", FieldType.STRING, required=True),
    FieldSpec("name", FieldType.STRING, required=True),
    FieldSpec("time", FieldType.DATETIME, required=True),
    FieldSpec("app_id", FieldType.STRING),
    FieldSpec("properties", FieldType.OBJECT),
)
ACTIONS = {
    "track_attributes": ActionSpec(
        "track_attributes",
        "Set user attributes by external_id (/users/track); in mirror mode a deleted row"
        " deletes the user (/users/delete).",
        fields=_PROFILE,
        field_columns=False,
    ),
    "track_events": ActionSpec(
        "track_events",
        "Record a custom event per row (/users/track); an updated row is recorded again.",
        fields=_EVENT,
        modes=frozenset({SyncMode.INSERT, SyncMode.UPSERT, SyncMode.UPDATE}),
        field_columns=False,
    ),
}


def _build(config: BrazeConfig, context: AdapterContext) -> BrazeDestination:
    return BrazeDestination(config)


PLUGIN = DestinationPlugin(config=BrazeConfig, actions=ACTIONS, build=_build, check=_check)
