"""Customer.io Journeys Track API v2: people identified and deleted, events tracked, in batches.

`POST /api/v2/batch` with `{"batch": [entity, …]}`, each entity a person operation:
`identify` (attributes), `delete`, or `event` (name, attributes, timestamp). Authentication is
HTTP Basic with the workspace's Track API site id and API key. A request stays under 500 KB
and each entity under 32 KB. Customer.io answers 207 with `errors: [{batch_index, reason,
field, message}]` for the entities it refused; each is matched back to its record by position.

A person is identified by the record's key: `identifier: id` (the default) or `email` says which
identifier the key is. Deletes need it, and the snapshot keeps only keys, so it must be the key.
Attributes may be objects and arrays: Customer.io keeps them as JSON.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, cast

from pydantic import Field

from ebbtide.config.models import DestinationConfig, FieldType, RateLimitSpec, SyncMode
from ebbtide.destinations.http import HttpAnswer, HttpClient, http_error, json_text, malformed
from ebbtide.errors import ErrorClass
from ebbtide.ports import (
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

MAX_REQUEST_BYTES = 500 * 1024  # Customer.io: a batch request is smaller than 500 KB
MAX_ENTITY_BYTES = 32 * 1024  # and each entity in it smaller than 32 KB

# A 207's `reason` per refused entity as the taxonomy's class; anything else is `validation`.
REASON_CLASSES = {
    "invalid": ErrorClass.VALIDATION,
    "required": ErrorClass.VALIDATION,
    "not_found": ErrorClass.NOT_FOUND,
    "conflict": ErrorClass.CONFLICT,
    "too_large": ErrorClass.PAYLOAD_TOO_LARGE,
}


class CustomerIOConfig(DestinationConfig):
    secret_settings = ("site_id", "api_key")

    site_id: str = Field(min_length=1, repr=False)
    api_key: str = Field(min_length=1, repr=False)
    # https://track-eu.customer.io for an account in the EU region.
    base_url: str = "https://track.customer.io"
    timeout_s: float = Field(default=30.0, gt=0)
    # Which person identifier the record's key is.
    identifier: Literal["id", "email"] = "id"
    batch_size: int = Field(default=200, ge=1, le=1000)
    # The records' JSON, summed, leaves 50 KB of the 500 KB for the entities' envelopes.
    max_request_bytes: int | None = Field(default=450_000, ge=1, le=450_000)
    # A record's JSON a little under 32 KB, so its entity stays under Customer.io's 32 KB.
    max_record_bytes: int | None = Field(default=32_000, ge=1, le=32_000)
    # Customer.io's fair-use limit for the Track API.
    rate_limit: RateLimitSpec | None = Field(
        default_factory=lambda: RateLimitSpec(requests=100, per="1s")
    )


class CustomerIODestination:
    """Sends each batch as one v2 batch request."""

    def __init__(self, config: CustomerIOConfig) -> None:
        self.config = config
        self._client = HttpClient(
            config.base_url,
            timeout_s=config.timeout_s,
            concurrency=config.concurrency,
            headers=_basic_auth(config),
        )

    async def open(self) -> None:
        await self._client.open()

    async def close(self) -> None:
        await self._client.close()

    async def send(self, batch: OutboundBatch) -> BatchResult:
        keys = cast(list[str], batch.records.column(KEY_COLUMN).to_pylist())
        records = cast(list[str], batch.records.column(RECORD_COLUMN).to_pylist())
        entities: list[dict[str, Any]] = []
        sent_keys: list[str] = []
        rejected: list[RecordRejection] = []
        for key, text in zip(keys, records, strict=True):
            record = json.loads(text, parse_float=Decimal)
            try:
                entities.append(self._entity(batch.action, record))
                sent_keys.append(key)
            except _Unfit as unfit:
                rejected.append(RecordRejection(key, ErrorClass.MAPPING, str(unfit)))
        if entities:
            body = '{"batch":[' + ",".join(map(json_text, entities)) + "]}"
            answer = await self._client.request(
                "POST",
                "api/v2/batch",
                body=body.encode(),
                headers={"Content-Type": "application/json"},
            )
            if not answer.ok:
                raise http_error(answer, message=_error_text(answer))
            rejected += _entity_errors(answer, sent_keys)
        return BatchResult(rejected=tuple(rejected))

    def _entity(self, action: str, record: dict[str, Any]) -> dict[str, Any]:
        data = record.get("data") or {}
        if action == "track_events":
            return _event(data)
        identifiers = {self.config.identifier: _identifier(record.get("key"), self.config)}
        if record.get("op") == "deleted":
            return {"type": "person", "action": "delete", "identifiers": identifiers}
        return {
            "type": "person",
            "action": "identify",
            "identifiers": identifiers,
            "attributes": data,
        }


def _basic_auth(config: CustomerIOConfig) -> dict[str, str]:
    """The Track API's HTTP Basic authorization: site id as user, API key as password."""
    pair = f"{config.site_id}:{config.api_key}".encode()
    return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}


class _Unfit(Exception):
    """A record no entity can be made of: rejected as `mapping`, not sent."""


def _identifier(key: Any, config: CustomerIOConfig) -> str:
    if isinstance(key, dict | list) or key is None:
        raise _Unfit(
            f"the model's primary key must be one column holding the person's"
            f" {config.identifier} (the destination's `identifier`), not a composite key"
        )
    text = str(key) if not isinstance(key, bool) else str(key).lower()
    if not text:
        raise _Unfit(f"the person's {config.identifier} (the record's key) is empty")
    return text


def _event(data: dict[str, Any]) -> dict[str, Any]:
    """A `track_events` record as an event entity of the person its `id` or `email` names."""
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _Unfit("field name (the event's name) is missing or empty")
    identifiers = {k: str(data[k]) for k in ("id", "email") if data.get(k) not in (None, "")}
    if not identifiers:
        raise _Unfit("fields id and email are both empty: the event names no person")
    entity: dict[str, Any] = {
        "type": "person",
        "action": "event",
        "identifiers": dict([next(iter(identifiers.items()))]),  # id first, else email
        "name": name,
        "attributes": data.get("attributes") or {},
    }
    if data.get("timestamp") is not None:
        entity["timestamp"] = _unix_seconds(data["timestamp"])
    return entity


def _unix_seconds(value: Any) -> int:
    """Customer.io takes event times as Unix seconds; ebbtide sends ISO 8601."""
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return int(value)
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise _Unfit(f"field timestamp ({value!r}) is not a date and time") from None
    if moment.tzinfo is None:  # a warehouse's plain TIMESTAMP: read as UTC
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _error_text(answer: HttpAnswer) -> str | None:
    """Customer.io's words for a refused request: `meta.error`, or its errors' messages."""
    try:
        body = json.loads(answer.text)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    meta = body.get("meta")
    if isinstance(meta, dict) and meta.get("error"):
        return str(meta["error"])
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        return "; ".join(_message(e) for e in errors if isinstance(e, dict)) or None
    return None


def _message(error: dict[str, Any]) -> str:
    if error.get("message"):
        return str(error["message"])
    return f"{error.get('reason') or 'error'}: {error.get('field') or 'unknown field'}"


def _entity_errors(answer: HttpAnswer, keys: list[str]) -> list[RecordRejection]:
    """The 2xx answer's `errors`, by batch_index, as rejections of the records sent there."""
    if not answer.text.strip():
        return []
    body = answer.json("Customer.io's batch answer")
    if not isinstance(body, dict):
        raise malformed("Customer.io's batch answer", "it is not a JSON object", answer.text)
    errors = body.get("errors")
    if errors is None and answer.status != 207:
        return []
    if not isinstance(errors, list):
        raise malformed("Customer.io's batch answer", '"errors" is not a list', answer.text)
    by_index: dict[int, list[dict[str, Any]]] = {}
    for error in errors:
        index = error.get("batch_index") if isinstance(error, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(keys):
            raise malformed(
                "Customer.io's batch answer",
                f"an error has no batch_index of the {len(keys)} entities sent",
                answer.text,
            )
        by_index.setdefault(index, []).append(error)
    return [
        RecordRejection(
            keys[index],
            REASON_CLASSES.get(str(found[0].get("reason") or ""), ErrorClass.VALIDATION),
            "; ".join(_message(e) for e in found),
            code=str(found[0].get("reason") or "") or None,
            http_status=answer.status,
        )
        for index, found in sorted(by_index.items())
    ]


ACTIONS = {
    "identify_people": ActionSpec(
        "identify_people",
        "Create or update people (the record's key is their id or email, per `identifier`)"
        " with the mapped fields as attributes; mirror deletes the people of deleted rows.",
        field_columns=False,
    ),
    "track_events": ActionSpec(
        "track_events",
        "Send each new row as an event of the person its `id` or `email` names.",
        fields=(
            FieldSpec("name", FieldType.STRING, required=True),
            FieldSpec("id", FieldType.STRING),
            FieldSpec("email", FieldType.STRING),
            FieldSpec("timestamp", FieldType.DATETIME),
            FieldSpec("attributes", FieldType.OBJECT),
        ),
        modes=frozenset({SyncMode.INSERT}),
        field_columns=False,
    ),
}


def _build(config: CustomerIOConfig, context: AdapterContext) -> CustomerIODestination:
    return CustomerIODestination(config)


async def check(config: CustomerIOConfig, context: AdapterContext) -> str:
    """The region and workspace the Track API credentials belong to:
    `GET /api/v1/accounts/region`."""
    async with HttpClient(
        config.base_url,
        timeout_s=config.timeout_s,
        headers=_basic_auth(config),
    ) as client:
        answer = await client.request("GET", "api/v1/accounts/region")
    if not answer.ok:
        raise http_error(answer, message=_error_text(answer))
    found = answer.json("Customer.io's account region")
    if not isinstance(found, dict) or not found.get("region"):
        raise malformed("Customer.io's account region", "it has no region", answer.text)
    workspace = found.get("environment_id")
    return f"region {found['region']}" + (f", workspace {workspace}" if workspace else "")


PLUGIN = DestinationPlugin(config=CustomerIOConfig, actions=ACTIONS, build=_build, check=check)
