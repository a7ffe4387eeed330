"""HubSpot CRM v3: contacts and companies upserted by a unique property, archived on delete.

A record's key is the value of the unique property (`idProperty`): `email` for contacts and
`domain` for companies by default, or a custom property whose values are unique. Deletes need
that value too, and the snapshot only keeps keys, so the model's primary key must be it.

Requests: `POST /crm/v3/objects/{object}/batch/upsert` (100 inputs at most); a delete is a
`batch/read` by the unique property (archiving takes HubSpot's record ids) and a `batch/archive`.
A 207 lists per-input errors whose `context.ids` are the unique values sent: each is matched
back to its record. HubSpot property values are flat strings, so an object or an array mapped
into a property is sent as its JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from typing import Any, cast

from pydantic import Field, model_validator

from ebbtide.config.models import DestinationConfig
from ebbtide.destinations.http import (
    HttpAnswer,
    HttpClient,
    RateLimitHeaders,
    http_error,
    json_text,
    malformed,
    parse_retry_after,
)
from ebbtide.errors import DestinationError, ErrorClass
from ebbtide.ports import (
    KEY_COLUMN,
    RECORD_COLUMN,
    ActionSpec,
    AdapterContext,
    BatchResult,
    DestinationPlugin,
    OutboundBatch,
    RecordRejection,
)

RATE_LIMIT_HEADERS = RateLimitHeaders(
    remaining="X-HubSpot-RateLimit-Remaining",
    reset="X-HubSpot-RateLimit-Interval-Milliseconds",
    reset_unit="milliseconds",
)
DAILY_REMAINING = "X-HubSpot-RateLimit-Daily-Remaining"
MAX_INPUTS = 100


class Tier(StrEnum):
    """The account's subscription, which sets HubSpot's limits for a private app."""

    FREE = "free"
    STARTER = "starter"
    PROFESSIONAL = "professional"
    ENTERPRISE = "enterprise"


# HubSpot's usage guidelines for private apps: requests per 10 seconds, and per day.
BURST_LIMITS = {Tier.FREE: 100, Tier.STARTER: 100, Tier.PROFESSIONAL: 190, Tier.ENTERPRISE: 190}
DAILY_LIMITS = {
    Tier.FREE: 250_000,
    Tier.STARTER: 250_000,
    Tier.PROFESSIONAL: 625_000,
    Tier.ENTERPRISE: 1_000_000,
}

# HubSpot's error categories (of a 207's per-input errors) as the taxonomy's classes.
CATEGORY_CLASSES = {
    "VALIDATION_ERROR": ErrorClass.VALIDATION,
    "INVALID_EMAIL": ErrorClass.VALIDATION,
    "PROPERTY_DOESNT_EXIST": ErrorClass.VALIDATION,
    "BAD_REQUEST": ErrorClass.VALIDATION,
    "OBJECT_NOT_FOUND": ErrorClass.NOT_FOUND,
    "RESOURCE_NOT_FOUND": ErrorClass.NOT_FOUND,
    "CONFLICT": ErrorClass.CONFLICT,
    "OBJECT_ALREADY_EXISTS": ErrorClass.CONFLICT,
    "DUPLICATE_OBJECT": ErrorClass.CONFLICT,
    "INVALID_AUTHENTICATION": ErrorClass.AUTH,
    "EXPIRED_AUTHENTICATION": ErrorClass.AUTH,
    "MISSING_SCOPES": ErrorClass.PERMISSION,
    "FORBIDDEN": ErrorClass.PERMISSION,
    "RATE_LIMITS": ErrorClass.RATE_LIMITED,
    "RATE_LIMIT": ErrorClass.RATE_LIMITED,
    "TOO_MANY_REQUESTS": ErrorClass.RATE_LIMITED,
    "INTERNAL_ERROR": ErrorClass.SERVER_ERROR,
    "SERVICE_UNAVAILABLE": ErrorClass.SERVER_ERROR,
    "TIMEOUT": ErrorClass.TIMEOUT,
}


class HubSpotConfig(DestinationConfig):
    secret_settings = ("token",)

    token: str = Field(min_length=1, repr=False)  # a private app's access token
    base_url: str = "https://api.hubapi.com"
    timeout_s: float = Field(default=30.0, gt=0)
    # Sets the default rate_limit (requests per 10 seconds) and names the daily limit.
    tier: Tier = Tier.FREE
    # The unique property each object type is upserted and archived by.
    contacts_id_property: str = Field(default="email", min_length=1)
    companies_id_property: str = Field(default="domain", min_length=1)
    batch_size: int = Field(default=MAX_INPUTS, ge=1, le=MAX_INPUTS)

    @model_validator(mode="before")
    @classmethod
    def _tier_rate_limit(cls, data: Any) -> Any:
        """Without a rate_limit, the tier's 10-second burst limit is the destination's."""
        if isinstance(data, dict) and data.get("rate_limit") is None:
            tier = Tier(data.get("tier", Tier.FREE))
            data = {**data, "rate_limit": {"requests": BURST_LIMITS[tier], "per": "10s"}}
        return data

    def id_property(self, object_type: str) -> str:
        return (
            self.contacts_id_property if object_type == "contacts" else self.companies_id_property
        )


class HubSpotDestination:
    """Upserts and archives one object type's records per batch."""

    def __init__(self, config: HubSpotConfig) -> None:
        self.config = config
        self._client = HttpClient(
            config.base_url,
            headers={"Authorization": f"Bearer {config.token}"},
            timeout_s=config.timeout_s,
            concurrency=config.concurrency,
        )
        # Set once HubSpot says the day's allowance is spent: nothing is sent after that.
        self._daily_spent: str | None = None

    async def open(self) -> None:
        await self._client.open()

    async def close(self) -> None:
        await self._client.close()

    async def send(self, batch: OutboundBatch) -> BatchResult:
        if self._daily_spent is not None:
            raise self._daily_error()
        object_type = ACTION_OBJECTS[batch.action]
        plan = Plan(self.config.id_property(object_type))
        keys = cast(list[str], batch.records.column(KEY_COLUMN).to_pylist())
        records = cast(list[str], batch.records.column(RECORD_COLUMN).to_pylist())
        for key, text in zip(keys, records, strict=True):
            plan.add(key, json.loads(text, parse_float=Decimal))
        pauses: list[float | None] = []
        if plan.upserts:
            answer = await self._post(f"crm/v3/objects/{object_type}/batch/upsert", plan.body())
            pauses.append(self._pause(answer))
            refused, _ = _input_errors(answer, plan.upsert_keys(), "batch upsert")
            plan.rejected += refused
        if plan.deletes:
            pauses.append(await self._archive(object_type, plan))
        waits = [p for p in pauses if p is not None]
        return BatchResult(rejected=tuple(plan.rejected), pause_s=max(waits) if waits else None)

    async def _archive(self, object_type: str, plan: Plan) -> float | None:
        """Find the records' ids by the unique property, then archive those found; a record
        HubSpot does not have is already gone, which is what a delete asks."""
        read = {
            "idProperty": plan.id_property,
            "properties": [plan.id_property],
            "inputs": [{"id": value} for value in plan.deletes],
        }
        answer = await self._post(f"crm/v3/objects/{object_type}/batch/read", read)
        found = _found_ids(answer, plan.id_property)
        refused, named = _input_errors(answer, plan.deletes, "batch read", missing_is_gone=True)
        plan.rejected += refused
        ids = []
        for value in plan.deletes:
            record_id = _match(found, value)
            if record_id is not None:
                ids.append(record_id)
            elif value not in named:
                raise malformed(
                    "HubSpot's batch read answer", f"it says nothing of {value!r}", answer.text
                )
        if not ids:
            return self._pause(answer)
        archive = {"inputs": [{"id": record_id} for record_id in ids]}
        archived = await self._post(f"crm/v3/objects/{object_type}/batch/archive", archive)
        return self._pause(archived)

    async def _post(self, path: str, body: Any) -> HttpAnswer:
        answer = await self._client.request("POST", path, json_body=body)
        if answer.ok:
            if answer.headers.get(DAILY_REMAINING, "").strip() == "0":
                self._daily_spent = "X-HubSpot-RateLimit-Daily-Remaining: 0"
            return answer
        raise self._refusal(answer)

    def _refusal(self, answer: HttpAnswer) -> DestinationError:
        """A whole request refused: HubSpot's message and category, or the daily limit."""
        body = _json_or_none(answer.text)
        if answer.status == 429 and isinstance(body, dict) and body.get("policyName") == "DAILY":
            self._daily_spent = str(body.get("message") or "policyName DAILY")
            return self._daily_error()
        message = None
        if isinstance(body, dict) and body.get("message"):
            category = body.get("category") or body.get("errorType")
            message = f"{category}: {body['message']}" if category else str(body["message"])
        error = http_error(answer, message=message, rate_limit=RATE_LIMIT_HEADERS)
        if isinstance(body, dict) and body.get("policyName") == "SECONDLY":
            # The per-second limit: its window is a second, not the 10-second interval.
            error.retry_after = parse_retry_after(answer.headers.get("Retry-After")) or 1.0
        return error

    def _daily_error(self) -> DestinationError:
        tier = self.config.tier
        return DestinationError(
            ErrorClass.RATE_LIMITED,
            f"HubSpot's daily API limit is spent ({self._daily_spent}; a {tier} account allows"
            f" {DAILY_LIMITS[tier]:,} requests a day, reset at midnight in the account's time"
            " zone): nothing more is sent in this run, and the records not loaded are sent by"
            " the next sync",
            code="DAILY",
            http_status=429,
            retry_after=0.0,  # waiting within the run cannot help: fail at once
        )

    def _pause(self, answer: HttpAnswer) -> float | None:
        return RATE_LIMIT_HEADERS.wait_s(answer.headers)


class Plan:
    """One batch's records as HubSpot inputs, and the records refused before sending."""

    def __init__(self, id_property: str) -> None:
        self.id_property = id_property
        self.upserts: dict[str, tuple[str, dict[str, Any]]] = {}  # unique value → key, props
        self.deletes: dict[str, str] = {}  # unique value → key
        self.rejected: list[RecordRejection] = []

    def add(self, key: str, record: dict[str, Any]) -> None:
        value = _unique_value(record.get("key"))
        if value is None:
            self._refuse(
                key,
                f"the model's primary key must be one column holding the {self.id_property}"
                f" HubSpot matches records by, not {key}",
            )
            return
        if value in self.upserts or value in self.deletes:
            self.rejected.append(
                RecordRejection(
                    key,
                    ErrorClass.CONFLICT,
                    f"another record of the batch has {self.id_property} {value!r}; HubSpot"
                    " refuses a batch naming a record twice",
                )
            )
            return
        if record.get("op") == "deleted":
            self.deletes[value] = key
            return
        data = record.get("data") or {}
        mapped = data.get(self.id_property)
        if mapped is not None and not self._same(_property_text(mapped), value):
            self._refuse(
                key,
                f"field {self.id_property} ({_property_text(mapped)!r}) differs from the record's"
                f" key ({value!r}): HubSpot matches records by {self.id_property}, so the model's"
                " primary key must be that column",
            )
            return
        self.upserts[value] = (key, {name: _property_text(v) for name, v in data.items()})

    def _same(self, mapped: str, value: str) -> bool:
        """HubSpot matches emails whatever their case; other unique values exactly."""
        if self.id_property == "email":
            return mapped.casefold() == value.casefold()
        return mapped == value

    def _refuse(self, key: str, message: str) -> None:
        self.rejected.append(RecordRejection(key, ErrorClass.MAPPING, message))

    def body(self) -> dict[str, Any]:
        return {
            "inputs": [
                {"idProperty": self.id_property, "id": value, "properties": properties}
                for value, (_, properties) in self.upserts.items()
            ]
        }

    def upsert_keys(self) -> dict[str, str]:
        return {value: key for value, (key, _) in self.upserts.items()}


def _unique_value(key: Any) -> str | None:
    """The key as the unique property's text; None for a composite key."""
    if isinstance(key, dict | list) or key is None:
        return None
    return _property_text(key)


def _property_text(value: Any) -> str:
    """A value as HubSpot property text: null clears the property (""), an object or array is
    its JSON text (HubSpot properties hold no structure), a number keeps every digit."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict | list):
        return json_text(value)
    return str(value)


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text, parse_float=Decimal)
    except ValueError:
        return None


def _body(answer: HttpAnswer, what: str) -> dict[str, Any]:
    if answer.status == 204 or not answer.text.strip():
        return {}
    body = answer.json(f"HubSpot's {what} answer")
    if not isinstance(body, dict):
        raise malformed(f"HubSpot's {what} answer", "it is not a JSON object", answer.text)
    return body


def _input_errors(
    answer: HttpAnswer, keys: Mapping[str, str], what: str, *, missing_is_gone: bool = False
) -> tuple[list[RecordRejection], set[str]]:
    """A 207's per-input errors as rejections of the records whose unique values they name,
    and the values sent that the errors name (as sent). With `missing_is_gone`, an input
    HubSpot has no record of is named but not refused."""
    body = _body(answer, what)
    errors = body.get("errors") or []
    if not isinstance(errors, list):
        raise malformed(f"HubSpot's {what} answer", '"errors" is not a list', answer.text)
    rejected: dict[str, RecordRejection] = {}
    named: set[str] = set()
    sent = {value: value for value in keys}
    for error in errors:
        if not isinstance(error, dict):
            raise malformed(f"HubSpot's {what} answer", "an error is not an object", answer.text)
        category = str(error.get("category") or "")
        error_class = CATEGORY_CLASSES.get(category, ErrorClass.VALIDATION)
        message = str(error.get("message") or "refused by HubSpot")
        ids = _error_ids(error)
        if not ids:  # an error that names no input: none of the batch can count as loaded
            raise DestinationError(
                error_class, f"HubSpot's {what} answered {category}: {message}", code=category
            )
        for echoed in ids:
            value = _match(sent, echoed)
            if value is None:
                raise malformed(
                    f"HubSpot's {what} answer", f"an error names {echoed!r}, not sent", answer.text
                )
            named.add(value)
            if missing_is_gone and category == "OBJECT_NOT_FOUND":
                continue
            key = keys[value]
            rejected[key] = RecordRejection(key, error_class, message, category or None)
    return list(rejected.values()), named


def _match(by_value: Mapping[str, str], value: str) -> str | None:
    """What `by_value` holds for `value`, or for the one entry equal to it but for case: HubSpot
    keeps emails in lower case and may echo them so."""
    if value in by_value:
        return by_value[value]
    folded = [v for k, v in by_value.items() if k.casefold() == value.casefold()]
    return folded[0] if len(folded) == 1 else None


def _error_ids(error: Mapping[str, Any]) -> list[str]:
    context = error.get("context")
    ids = context.get("ids") if isinstance(context, dict) else None
    if not isinstance(ids, list):
        return []
    return [_property_text(i) for i in ids]


def _found_ids(answer: HttpAnswer, id_property: str) -> dict[str, str]:
    """The record id of each unique value a batch read found."""
    body = _body(answer, "batch read")
    results = body.get("results") or []
    if not isinstance(results, list):
        raise malformed("HubSpot's batch read answer", '"results" is not a list', answer.text)
    found: dict[str, str] = {}
    for result in results:
        properties = result.get("properties") if isinstance(result, dict) else None
        if not isinstance(properties, dict) or result.get("id") is None:
            raise malformed("HubSpot's batch read answer", "a result has no id", answer.text)
        value = properties.get(id_property)
        if value is not None:
            found[_property_text(value)] = str(result["id"])
    return found


ACTION_OBJECTS = {"upsert_contacts": "contacts", "upsert_companies": "companies"}

ACTIONS = {
    "upsert_contacts": ActionSpec(
        "upsert_contacts",
        "Create or update contacts matched by contacts_id_property (email); mirror archives"
        " the contacts of deleted rows. Fields are contact property names.",
        field_columns=False,
    ),
    "upsert_companies": ActionSpec(
        "upsert_companies",
        "Create or update companies matched by companies_id_property (domain); mirror archives"
        " the companies of deleted rows. Fields are company property names.",
        field_columns=False,
    ),
}


def _build(config: HubSpotConfig, context: AdapterContext) -> HubSpotDestination:
    return HubSpotDestination(config)


async def check(config: HubSpotConfig, context: AdapterContext) -> str:
    """The account the token belongs to: `GET /account-info/v3/details`."""
    async with HttpClient(
        config.base_url,
        headers={"Authorization": f"Bearer {config.token}"},
        timeout_s=config.timeout_s,
    ) as client:
        answer = await client.request("GET", "account-info/v3/details")
    if not answer.ok:
        raise http_error(answer)
    details = answer.json("HubSpot's account details")
    if not isinstance(details, dict) or details.get("portalId") is None:
        raise malformed("HubSpot's account details", "it has no portalId", answer.text)
    extra = [str(details[k]) for k in ("accountType", "timeZone") if details.get(k)]
    return f"portal {details['portalId']}" + (f" ({', '.join(extra)})" if extra else "")


PLUGIN = DestinationPlugin(config=HubSpotConfig, actions=ACTIONS, build=_build, check=check)
