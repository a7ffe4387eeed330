"""HubSpot's CRM v3 batch endpoints for contacts and companies, as its public docs describe them.

- `POST /crm/v3/objects/{object}/batch/upsert`: `{"inputs": [{"idProperty", "id", "properties"}]}`,
  at most 100 inputs; the idProperty must be a property with unique values. A 200 when every
  input was applied, a 207 Multi-Status listing per-input errors (`category`, `message`,
  `context.ids`: the unique values) beside the results otherwise; a 400 refuses the request.
- `POST …/batch/read` with `idProperty`: the records found; the others as OBJECT_NOT_FOUND
  errors in a 207. `POST …/batch/archive` with record ids: 204, whatever their state.
- `GET /account-info/v3/details`: the portal.
- Private app tokens as `Authorization: Bearer`; a 401 with category INVALID_AUTHENTICATION.
- Rate limit headers on every answer (`X-HubSpot-RateLimit-Max`, `-Remaining`,
  `-Interval-Milliseconds`, `-Daily`, `-Daily-Remaining`); a 429 says which policy was hit
  (`TEN_SECONDLY_ROLLING` or `DAILY`), without Retry-After.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from typing import Any

from aiohttp import web

from tests.conformance.case import DestinationCase, Seen
from tests.emulators.base import Emulator

MAX_INPUTS = 100
PORTAL_ID = 62515
LIMIT_HEADERS: web.RequestKey[dict[str, str]] = web.RequestKey("limit_headers", dict)


def _error(message: str, category: str, status: int = 400, **extra: Any) -> web.Response:
    body = {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
        **extra,
    }
    return web.json_response(body, status=status)


class HubSpotEmulator(Emulator):
    """Holds contacts and companies by record id; unique properties are enforced."""

    name = "hubspot"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.held: dict[str, dict[str, dict[str, str]]] = {"contacts": {}, "companies": {}}
        self.unique: dict[str, set[str]] = {
            "contacts": {"email", "external_id"},
            "companies": {"domain", "external_id"},
        }
        self.daily_remaining: int | None = None  # None: the day's allowance is never spent
        self.next_headers: list[dict[str, str]] = []  # headers for the next answers, in turn
        self.burst = (100, 10.0)  # the 10-second window (a free account's private app)
        self._burst_window: deque[float] = deque()
        self._next_id = 1000
        # (object type, unique property) → value → record id: see _owner.
        self._owners: dict[tuple[str, str], dict[str, str]] = {}

    # -- what tests read --------------------------------------------------------------------

    def by(self, object_type: str, prop: str) -> dict[str, dict[str, str]]:
        """The object type's records by the value of `prop`."""
        return {p[prop]: p for p in self.held[object_type].values() if prop in p}

    # -- routes -----------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/crm/v3/objects/{object}/batch/upsert", self._upsert)
        app.router.add_post("/crm/v3/objects/{object}/batch/read", self._read)
        app.router.add_post("/crm/v3/objects/{object}/batch/archive", self._archive)
        app.router.add_get("/account-info/v3/details", self._details)

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.credential}"

    def unauthorized(self) -> web.Response:
        return _error(
            "Authentication credentials not found. This API supports OAuth 2.0 authentication",
            "INVALID_AUTHENTICATION",
            401,
        )

    def rate_limited(self, reset_s: float) -> web.Response:
        """The suite's `rate_limit` fault plays HubSpot's per-second limit (policy SECONDLY):
        unlike the 10-second window, no header warns of it before the 429."""
        response = _error(
            "You have reached your secondly limit.",
            "RATE_LIMITS",
            429,
            errorType="RATE_LIMIT",
            policyName="SECONDLY",
        )
        response.headers.update(self._limit_headers(count=False))
        return response

    def _limit_headers(self, *, count: bool = False) -> dict[str, str]:
        """HubSpot's headers; `count`: this request is counted in the 10-second window.
        The answer to a request past the window's limit is None instead."""
        requests, per_s = self.burst
        now = time.monotonic()
        with self._changed:
            while self._burst_window and self._burst_window[0] <= now - per_s:
                self._burst_window.popleft()
            if count:
                if len(self._burst_window) >= requests:
                    return {}
                self._burst_window.append(now)
            used = len(self._burst_window)
            headers = {
                "X-HubSpot-RateLimit-Max": str(requests),
                "X-HubSpot-RateLimit-Remaining": str(max(requests - used, 0)),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(per_s * 1000)),
                "X-HubSpot-RateLimit-Daily": "250000",
                "X-HubSpot-RateLimit-Daily-Remaining": str(
                    249_000 if self.daily_remaining is None else self.daily_remaining
                ),
            }
            if self.next_headers:
                headers.update(self.next_headers.pop(0))
        return headers

    async def _guarded(self, request: web.Request) -> tuple[web.Response | None, Any]:
        """Faults first (credentials, scripted answers, limits), then the body's shape."""
        if (fault := self.guard(request)) is not None:
            return fault, None
        if not (headers := self._limit_headers(count=True)):
            response = _error(
                "You have reached your ten_secondly_rolling limit.",
                "RATE_LIMITS",
                429,
                errorType="RATE_LIMIT",
                policyName="TEN_SECONDLY_ROLLING",
            )
            response.headers.update(self._limit_headers())
            return response, None
        request[LIMIT_HEADERS] = headers
        if self.daily_remaining is not None:
            if self.daily_remaining <= 0:
                return _error(
                    "You have reached your daily limit.",
                    "RATE_LIMITS",
                    429,
                    errorType="RATE_LIMIT",
                    policyName="DAILY",
                ), None
            self.daily_remaining -= 1
        object_type = request.match_info["object"]
        if object_type not in self.held:
            return _error(
                f"Unable to infer object type from: {object_type}", "OBJECT_NOT_FOUND", 404
            ), None
        payload = await request.json()
        inputs = payload.get("inputs") if isinstance(payload, dict) else None
        if not isinstance(inputs, list) or not inputs:
            return _error("Invalid input JSON: inputs is required", "VALIDATION_ERROR"), None
        if len(inputs) > MAX_INPUTS:
            return _error(
                f"Batch input exceeds the maximum of {MAX_INPUTS} inputs", "VALIDATION_ERROR"
            ), None
        return None, payload

    def _answer(self, request: web.Request, results: list[Any], errors: list[Any]) -> web.Response:
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": "2026-01-01T00:00:00Z",
            "completedAt": "2026-01-01T00:00:01Z",
        }
        if errors:
            body |= {"errors": errors, "numErrors": len(errors)}
        self.changed()
        return web.json_response(
            body, status=207 if errors else 200, headers=request[LIMIT_HEADERS]
        )

    async def _upsert(self, request: web.Request) -> web.Response:
        fault, payload = await self._guarded(request)
        if fault is not None:
            return fault
        object_type = request.match_info["object"]
        if self.refuses_whole(payload):
            return _error("Property values were not valid", "VALIDATION_ERROR")
        ids = [str(i.get("id")) for i in payload["inputs"]]
        if len(set(ids)) < len(ids):
            return _error("Duplicate IDs found in batch input", "VALIDATION_ERROR")
        results: list[Any] = []
        errors: list[Any] = []
        for item in payload["inputs"]:
            id_property = item.get("idProperty") or request.query.get("idProperty")
            if id_property not in self.unique[object_type]:
                return _error(
                    f"{id_property} is not a unique property of {object_type}", "VALIDATION_ERROR"
                )
            outcome = self._upsert_one(object_type, id_property, item)
            (errors if outcome.get("status") == "error" else results).append(outcome)
        return self._answer(request, results, errors)

    def _upsert_one(self, object_type: str, id_property: str, item: dict[str, Any]) -> Any:
        value = str(item["id"])
        properties = item.get("properties") or {}
        bad = [k for k, v in properties.items() if isinstance(v, dict | list)]
        if bad or self.is_rejected(properties):
            which = bad[0] if bad else next(iter(properties), id_property)
            return {
                "status": "error",
                "category": "VALIDATION_ERROR",
                "message": f'Property values were not valid: [{{"isValid":false,"message":"{which}'
                ' was not a valid value","error":"INVALID_PROPERTY_VALUE","name":"' + which + '"}]',
                "context": {"ids": [value]},
            }
        records = self.held[object_type]
        stored = _stored(id_property, value)
        record_id = self._owner(object_type, id_property, stored)
        new = {
            k: "" if v is None else str(v).lower() if isinstance(v, bool) else _stored(k, str(v))
            for k, v in properties.items()
        }
        new[id_property] = stored
        for prop in self.unique[object_type]:
            owner = self._owner(object_type, prop, new[prop]) if new.get(prop) else None
            if owner is not None and owner != record_id:
                return {
                    "status": "error",
                    "category": "CONFLICT",
                    "message": f"A {object_type[:-1]} with {prop} {new[prop]} already exists",
                    "context": {"ids": [value]},
                }
        if record_id is None:
            self._next_id += 1
            record_id = str(self._next_id)
            records[record_id] = {"hs_object_id": record_id}
        records[record_id].update(new)
        for prop in self.unique[object_type]:
            if records[record_id].get(prop):
                self._owners.setdefault((object_type, prop), {})[records[record_id][prop]] = (
                    record_id
                )
        return {"id": record_id, "properties": records[record_id], "new": False}

    def _owner(self, object_type: str, prop: str, value: str) -> str | None:
        """The record holding a unique value, through an index (a scan of every record per
        input made 100,000 upserts quadratic); an entry whose record changed or went is stale."""
        owners = self._owners.setdefault((object_type, prop), {})
        record_id = owners.get(value)
        held = self.held[object_type].get(record_id) if record_id is not None else None
        if held is None or held.get(prop) != value:
            owners.pop(value, None)
            return None
        return record_id

    async def _read(self, request: web.Request) -> web.Response:
        fault, payload = await self._guarded(request)
        if fault is not None:
            return fault
        object_type = request.match_info["object"]
        id_property = payload.get("idProperty") or "hs_object_id"
        wanted = payload.get("properties") or []
        found = self.by(object_type, id_property)
        results, missing = [], []
        for item in payload["inputs"]:
            value = str(item.get("id"))
            record = found.get(_stored(id_property, value))
            if record is not None:
                properties = {k: v for k, v in record.items() if k in wanted}
                results.append({"id": record["hs_object_id"], "properties": properties})
            else:
                missing.append(value)
        errors = []
        if missing:
            errors.append(
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": f"Could not get some {object_type} objects, they may be deleted"
                    " or not exist. Check that ids are valid.",
                    "context": {"ids": missing},
                }
            )
        return self._answer(request, results, errors)

    async def _archive(self, request: web.Request) -> web.Response:
        fault, payload = await self._guarded(request)
        if fault is not None:
            return fault
        records = self.held[request.match_info["object"]]
        for item in payload["inputs"]:
            records.pop(str(item.get("id")), None)
        self.changed()
        return web.Response(status=204, headers=request[LIMIT_HEADERS])

    async def _details(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return self.unauthorized()
        return web.json_response(
            {
                "portalId": PORTAL_ID,
                "accountType": "STANDARD",
                "timeZone": "US/Eastern",
                "companyCurrency": "USD",
                "additionalCurrencies": [],
                "utcOffset": "-05:00",
                "utcOffsetMilliseconds": -18_000_000,
                "uiDomain": "app.hubspot.com",
                "dataHostingLocation": "na1",
            }
        )


def _stored(prop: str, value: str) -> str:
    """HubSpot keeps email addresses in lower case (and matches them so)."""
    return value.lower() if prop == "email" else value


def _inputs(seen: Seen) -> int:
    return len(seen.json()["inputs"])


def _held(emulator: Any) -> dict[str, Any]:
    return {k: v.get("email") for k, v in emulator.by("contacts", "external_id").items()}


CASE = DestinationCase(
    type="hubspot",
    emulator=HubSpotEmulator,
    # The model's key (id) is the contacts' unique external_id; email is an ordinary field.
    settings=lambda url: {
        "token": "${CONFORMANCE_CREDENTIAL}",
        "base_url": url,
        "contacts_id_property": "external_id",
    },
    action="upsert_contacts",
    fields={"email": "email", "firstname": "name", "plan": "plan", "score": "score"},
    held=_held,
    records_in=_inputs,
    record_paths=frozenset(
        f"/crm/v3/objects/contacts/batch/{verb}" for verb in ("upsert", "read", "archive")
    ),
    max_batch_size=MAX_INPUTS,
    declares_fields=False,  # contact properties are the account's own, custom ones included
)
