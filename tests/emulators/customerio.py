"""Customer.io's Journeys Track API, as its public docs describe it: the v2 batch endpoint and the
account-region call.

- `POST /api/v2/batch` with `{"batch": [entity, …]}`; HTTP Basic auth with the site id and the
  Track API key. A request is smaller than 500 KB (else 413) and each entity smaller than 32 KB.
- Entities: `{"type": "person", "action": "identify" | "delete" | "event", "identifiers":
  {"id" | "email": …}, "attributes": {…}, "name": …, "timestamp": <unix seconds>}`.
- Entities refused alone (a missing identifier, an attribute value over 1000 bytes, an event
  without a name, …) are listed in a 207: `{"errors": [{"batch_index", "reason", "field",
  "message"}]}`; the others are applied. A request it cannot take at all is a 400 with
  `{"meta": {"error": …}}`; bad credentials a 401.
- `GET /api/v1/accounts/region`: `{"url", "region", "environment_id"}`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import web

from tests.conformance.case import DestinationCase, Seen
from tests.emulators.base import Emulator

MAX_REQUEST_BYTES = 500 * 1024
MAX_ENTITY_BYTES = 32 * 1024
MAX_ATTRIBUTE_BYTES = 1000
SITE_ID = "site-7f3a"
ENVIRONMENT_ID = 81234


class CustomerIOEmulator(Emulator):
    """Holds people by identifier value, and the events each was sent."""

    name = "customerio"

    def __init__(self, *, site_id: str = SITE_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.site_id = site_id
        self.people: dict[str, dict[str, Any]] = {}  # identifier value → attributes
        self.events: list[dict[str, Any]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v2/batch", self._batch)
        app.router.add_get("/api/v1/accounts/region", self._region)

    def authorized(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"{self.site_id}:{self.credential}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    def unauthorized(self) -> web.Response:
        return web.json_response({"meta": {"error": "Unauthorized request"}}, status=401)

    async def _region(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return self.unauthorized()
        return web.json_response(
            {"url": "https://track.customer.io", "region": "us", "environment_id": ENVIRONMENT_ID}
        )

    async def _batch(self, request: web.Request) -> web.Response:
        if (fault := self.guard(request)) is not None:
            return fault
        body = await request.read()
        if len(body) >= MAX_REQUEST_BYTES:
            return web.json_response(
                {"meta": {"error": "request must be smaller than 500kb"}}, status=413
            )
        payload = await request.json()
        batch = payload.get("batch") if isinstance(payload, dict) else None
        if not isinstance(batch, list):
            return web.json_response({"meta": {"error": "batch must be an array"}}, status=400)
        if self.refuses_whole(payload):
            return web.json_response({"meta": {"error": "malformed request"}}, status=400)
        errors = []
        for index, entity in enumerate(batch):
            problem = self._problem(entity)
            if problem is None:
                self._apply(entity)
            else:
                reason, field, message = problem
                errors.append(
                    {"batch_index": index, "reason": reason, "field": field, "message": message}
                )
        self.changed()
        if errors:
            return web.json_response({"errors": errors}, status=207)
        return web.json_response({})

    def _problem(self, entity: Any) -> tuple[str, str, str] | None:
        """Why Customer.io would refuse this entity alone, as (reason, field, message)."""
        if not isinstance(entity, dict) or entity.get("type") != "person":
            return "invalid", "type", "type must be person or object"
        if len(json.dumps(entity).encode()) >= MAX_ENTITY_BYTES:
            return "invalid", "", "each entity must be smaller than 32kb"
        identifiers = entity.get("identifiers")
        if not isinstance(identifiers, dict) or len(identifiers) != 1:
            return "required", "identifiers", "identifiers must hold exactly one of id, email"
        (kind, value), *_ = identifiers.items()
        if kind not in ("id", "email", "cio_id") or not isinstance(value, str) or not value:
            return "invalid", "identifiers", f"{kind} must be a non-empty string"
        attributes = entity.get("attributes") or {}
        if not isinstance(attributes, dict):
            return "invalid", "attributes", "attributes must be an object"
        for name, item in attributes.items():
            if isinstance(item, str) and len(item.encode()) > MAX_ATTRIBUTE_BYTES:
                return (
                    "invalid",
                    f"attributes.{name}",
                    f"value for attribute '{name}' cannot be longer than 1000 bytes",
                )
        if self.is_rejected(attributes):
            return "invalid", "attributes", "an attribute value is not valid"
        action = entity.get("action")
        if action == "event" and not entity.get("name"):
            return "required", "name", "event name must not be blank"
        if action == "event" and not isinstance(entity.get("timestamp", 0), int):
            return "invalid", "timestamp", "timestamp must be a unix timestamp in seconds"
        if action not in ("identify", "delete", "event"):
            return "invalid", "action", f"unknown action {action}"
        return None

    def _apply(self, entity: dict[str, Any]) -> None:
        (value,) = entity["identifiers"].values()
        if entity["action"] == "identify":
            self.people.setdefault(value, {}).update(entity.get("attributes") or {})
        elif entity["action"] == "delete":
            self.people.pop(value, None)
        else:
            self.events.append(entity)


def _entities(seen: Seen) -> int:
    return len(seen.json()["batch"])


def _conformance_emulator(*, credential: str) -> CustomerIOEmulator:
    # The suite has one credential variable: here it is the site id and the API key both.
    return CustomerIOEmulator(credential=credential, site_id=credential)


CASE = DestinationCase(
    type="customerio",
    emulator=_conformance_emulator,
    settings=lambda url: {
        "site_id": "${CONFORMANCE_CREDENTIAL}",
        "api_key": "${CONFORMANCE_CREDENTIAL}",
        "base_url": url,
    },
    action="identify_people",
    fields={"email": "email", "name": "name", "plan": "plan", "score": "score"},
    held=lambda emulator: {k: v.get("email") for k, v in emulator.people.items()},
    records_in=_entities,
    record_paths=frozenset({"/api/v2/batch"}),
    max_batch_size=1000,
    max_request_bytes=MAX_REQUEST_BYTES,
    max_record_bytes=32_000,
    declares_fields=False,  # a person's attributes are the workspace's own
)
