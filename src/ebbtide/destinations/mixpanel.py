"""Mixpanel: events through `POST /import` (strict), user profiles through `POST /engage`.

`/import` answers a batch with some invalid events with a 400 listing `failed_records`
(`index`, `insert_id`, `field`, `message`): Mixpanel imported the others, so that 400 is a
partial success, not a refusal. Every event carries a `$insert_id` derived from the record's key,
its version (the row hash) and the batch's epoch: a resend after a crash is deduplicated by
Mixpanel, a replay or the syncs after a reset are not.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

from pydantic import Field, HttpUrl, model_validator

from ebbtide.config.models import DestinationConfig, FieldType, RateLimitSpec, SyncMode
from ebbtide.destinations.http import HttpAnswer, HttpClient, http_error, malformed
from ebbtide.destinations.records import epoch_ms, insert_id, key_id, records_of, versions
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

EVENTS_PER_REQUEST = 2000  # /import, and profile updates per /engage request
_IMPORT = "a Mixpanel /import answer"
_ENGAGE = "a Mixpanel /engage answer"


class MixpanelConfig(DestinationConfig):
    secret_settings = ("project_token", "service_account_secret")

    # Events: a service account (username, secret and project_id; Mixpanel's recommended way)
    # or the project token. Profiles (/engage) always need the project token.
    project_token: str | None = Field(default=None, min_length=1, repr=False)
    service_account_username: str | None = Field(default=None, min_length=1)
    service_account_secret: str | None = Field(default=None, min_length=1, repr=False)
    project_id: str | None = Field(default=None, min_length=1)
    base_url: HttpUrl = HttpUrl("https://api.mixpanel.com")  # EU: https://api-eu.mixpanel.com
    timeout_s: float = Field(default=60.0, gt=0)
    gzip: bool = False  # Content-Encoding: gzip for /import (limits count uncompressed bytes)
    batch_size: int = Field(default=EVENTS_PER_REQUEST, ge=1, le=EVENTS_PER_REQUEST)
    # 1 MB per event and 10 MB per request, uncompressed; room left for $insert_id and time.
    max_record_bytes: int | None = Field(default=999_000, ge=1, le=999_000)
    max_request_bytes: int | None = Field(default=9_500_000, ge=1, le=9_500_000)
    # Ingestion: 2 GB of JSON a minute or about 30,000 events a second per project, that is
    # 15 full requests a second.
    rate_limit: RateLimitSpec | None = RateLimitSpec(requests=15, per="1s")

    @model_validator(mode="after")
    def _credentials(self) -> MixpanelConfig:
        account = (self.service_account_username, self.service_account_secret, self.project_id)
        if any(account) and not all(account):
            raise ValueError(
                "a service account needs service_account_username, service_account_secret"
                " and project_id"
            )
        if self.project_token is None and not all(account):
            raise ValueError(
                "set project_token, or a service account (service_account_username,"
                " service_account_secret, project_id)"
            )
        return self


class MixpanelDestination:
    """`import_events`: one /import request per batch; `set_profiles`: one /engage request."""

    def __init__(self, config: MixpanelConfig) -> None:
        self.config = config
        self._client = _client(config)

    async def open(self) -> None:
        await self._client.open()

    async def close(self) -> None:
        await self._client.close()

    async def send(self, batch: OutboundBatch) -> BatchResult:
        if batch.action == "set_profiles":
            return await self._engage(batch)
        return await self._import(batch)

    async def _import(self, batch: OutboundBatch) -> BatchResult:
        rejected: list[RecordRejection] = []
        keys: list[str] = []
        events: list[dict[str, Any]] = []
        for (key_text, record), version in zip(records_of(batch), versions(batch), strict=True):
            built = _event(record, insert_id(key_text, version, batch.epoch))
            if isinstance(built, str):
                rejected.append(RecordRejection(key_text, ErrorClass.MAPPING, built))
            else:
                keys.append(key_text)
                events.append(built)
        if events:
            rejected += await self._post_import(keys, events)
        return BatchResult(tuple(rejected))

    async def _post_import(
        self, keys: list[str], events: list[dict[str, Any]]
    ) -> list[RecordRejection]:
        body = json.dumps(events, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if self.config.gzip:
            body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
        params = {"strict": "1"}
        if self.config.project_id is not None and self.config.service_account_username:
            params["project_id"] = self.config.project_id
        answer = await self._client.request(
            "POST", "/import", body=body, headers=headers, params=params
        )
        if answer.ok:
            return []
        failed = _failed_records(answer, keys) if answer.status == 400 else None
        if failed is None:
            raise http_error(answer, message=_message(answer))
        return failed

    async def _engage(self, batch: OutboundBatch) -> BatchResult:
        token = self.config.project_token
        if token is None:
            raise DestinationError(
                ErrorClass.AUTH,
                "set_profiles updates profiles through /engage, which takes the project's token:"
                " set project_token",
            )
        rejected: list[RecordRejection] = []
        updates: list[dict[str, Any]] = []
        for key_text, record in records_of(batch):
            built = _update(record, token, batch.mode)
            if isinstance(built, str):
                rejected.append(RecordRejection(key_text, ErrorClass.MAPPING, built))
            else:
                updates.append(built)
        if updates:
            answer = await self._client.request(
                "POST", "/engage", json_body=updates, params={"verbose": "1"}
            )
            _engage_outcome(answer)
        return BatchResult(tuple(rejected))


def _client(config: MixpanelConfig) -> HttpClient:
    import aiohttp  # with the client, not when a workspace naming Mixpanel is loaded

    if config.service_account_username and config.service_account_secret:
        login = (config.service_account_username, config.service_account_secret)
    else:
        login = (config.project_token or "", "")
    return HttpClient(
        str(config.base_url),
        headers={"Authorization": aiohttp.encode_basic_auth(*login)},
        timeout_s=config.timeout_s,
        concurrency=config.concurrency,
    )


def _event(record: dict[str, Any], event_id: str) -> dict[str, Any] | str:
    data = record.get("data") or {}
    if record["op"] == "deleted":
        return "Mixpanel events cannot be deleted"
    missing = [name for name in ("event", "distinct_id", "time") if data.get(name) in (None, "")]
    if missing:
        return (
            f"{', '.join(missing)} missing: Mixpanel needs every event's name, distinct_id and time"
        )
    time_ms = epoch_ms(data["time"])
    if time_ms is None:
        return f"time {data['time']!r} is not a date and time"
    properties = data.get("properties") or {}
    if not isinstance(properties, dict):
        return "properties is not an object"
    return {
        "event": str(data["event"]),
        "properties": {
            **properties,
            "time": time_ms,
            "distinct_id": str(data["distinct_id"]),
            "$insert_id": event_id,
        },
    }


_PROFILE_FIELDS = ("$email", "$name", "$first_name", "$last_name", "$phone", "$avatar", "$created")


def _update(record: dict[str, Any], token: str, mode: SyncMode) -> dict[str, Any] | str:
    if record["op"] == "deleted":
        distinct_id = key_id(record["key"])
        if distinct_id is None:
            return "a deleted profile is found by its key, which must be a single column"
        return {"$token": token, "$distinct_id": distinct_id, "$delete": ""}
    data = record.get("data") or {}
    distinct_id = data.get("distinct_id")
    if distinct_id in (None, ""):
        return "distinct_id is missing: Mixpanel finds the profile by it"
    if mode is SyncMode.MIRROR and str(distinct_id) != key_id(record["key"]):
        return (
            f"distinct_id {distinct_id!r} is not the record's key: in mirror mode deletes carry"
            " only the key, so map distinct_id from the model's primary key"
        )
    properties = data.get("properties") or {}
    if not isinstance(properties, dict):
        return "properties is not an object"
    chosen = {name: data[name] for name in _PROFILE_FIELDS if name in data}
    return {"$token": token, "$distinct_id": str(distinct_id), "$set": {**properties, **chosen}}


def _failed_records(answer: HttpAnswer, keys: list[str]) -> list[RecordRejection] | None:
    """A strict 400's `failed_records`, each the event at its index; None when the 400 names no
    event (the request was refused whole)."""
    try:
        reply = json.loads(answer.text)
    except ValueError:
        return None
    failed = reply.get("failed_records") if isinstance(reply, dict) else None
    if not isinstance(failed, list) or not failed:
        return None
    rejected: dict[int, RecordRejection] = {}
    for item in failed:
        index = item.get("index") if isinstance(item, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(keys):
            raise malformed(_IMPORT, f"failed record index {index!r} is not one sent", answer.text)
        rejected[index] = RecordRejection(
            keys[index],
            ErrorClass.VALIDATION,
            str(item.get("message") or "refused by Mixpanel"),
            code=str(item["field"]) if item.get("field") else None,
            http_status=400,
        )
    return list(rejected.values())


def _engage_outcome(answer: HttpAnswer) -> None:
    """/engage answers 200 even when it refused the batch: its body says (verbose=1)."""
    if not answer.ok:
        raise http_error(answer, message=_message(answer))
    reply = answer.json(_ENGAGE)
    if not isinstance(reply, dict) or reply.get("status") not in (0, 1):
        raise malformed(_ENGAGE, 'no "status" of 1 or 0', answer.text)
    if reply["status"] == 0:
        error = str(reply.get("error") or "refused")[:300]
        refused_as = ErrorClass.AUTH if "token" in error.lower() else ErrorClass.VALIDATION
        raise DestinationError(refused_as, f"Mixpanel refused the profile updates: {error}")


def _message(answer: HttpAnswer) -> str | None:
    try:
        reply = json.loads(answer.text)
    except ValueError:
        return None
    if isinstance(reply, dict) and reply.get("error"):
        return str(reply["error"])[:300]
    return None


async def _check(config: MixpanelConfig, context: AdapterContext) -> str:
    """An empty strict /import: Mixpanel checks the credentials and imports nothing."""
    params = {"strict": "1"}
    if config.service_account_username and config.project_id:
        params["project_id"] = config.project_id
    async with _client(config) as client:
        answer = await client.request(
            "POST",
            "/import",
            body=b"[]",
            headers={"Content-Type": "application/json"},
            params=params,
        )
    if not answer.ok:
        raise http_error(answer, message=_message(answer))
    who = (
        f"service account {config.service_account_username}, project {config.project_id}"
        if config.service_account_username
        else "project token"
    )
    return f"{who} accepted by {config.base_url.host}"


_EVENT = (
    FieldSpec("event", FieldType.STRING, required=True),
    FieldSpec("distinct_id", FieldType.STRING, required=True),
    FieldSpec("time", FieldType.DATETIME, required=True),
    FieldSpec("properties", FieldType.OBJECT),
)
_PROFILE = (
    FieldSpec("distinct_id", FieldType.STRING, required=True),
    *(FieldSpec(name, FieldType.STRING) for name in _PROFILE_FIELDS[:-1]),
    FieldSpec("$created", FieldType.DATETIME),
    FieldSpec("properties", FieldType.OBJECT),
)
ACTIONS = {
    "import_events": ActionSpec(
        "import_events",
        "Import an event per row (/import, strict); an updated row is imported as a new event.",
        fields=_EVENT,
        modes=frozenset({SyncMode.INSERT, SyncMode.UPSERT, SyncMode.UPDATE}),
        field_columns=False,
    ),
    "set_profiles": ActionSpec(
        "set_profiles",
        "Set user profile properties by distinct_id (/engage $set); in mirror mode a deleted"
        " row deletes the profile ($delete).",
        fields=_PROFILE,
        field_columns=False,
    ),
}


def _build(config: MixpanelConfig, context: AdapterContext) -> MixpanelDestination:
    return MixpanelDestination(config)


PLUGIN = DestinationPlugin(config=MixpanelConfig, actions=ACTIONS, build=_build, check=_check)
