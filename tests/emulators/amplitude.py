"""Amplitude's HTTP V2 and Identify APIs as their public documentation describes them.

`POST /2/httpapi`: `{"api_key", "events", "options": {"min_id_length"}}`, fewer than 2,000 events
and 1 MB per request (past either: 413). Each event needs `event_type` and a `user_id` or
`device_id` of at least `min_id_length` (5) characters. A request with invalid events is a 400
naming them (`events_with_invalid_fields` / `events_with_missing_fields`: field → indexes) and
nothing of it is ingested. A wrong key is a 400 "Invalid API key: …". Events repeating an
`insert_id` are ignored. Throttling is a 429 with `throttled_events` and no Retry-After.

`POST /identify` (form: `api_key`, `identification` JSON): user properties by user_id or
device_id; a 400 refuses the request whole.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from tests.conformance.case import DestinationCase, Seen
from tests.emulators.base import Emulator

EVENTS = 2000
REQUEST_BYTES = 1_000_000
MIN_ID_LENGTH = 5


class AmplitudeEmulator(Emulator):
    """Holds events by insert_id and user properties by user_id (or device_id)."""

    name = "amplitude"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.events: dict[str, dict[str, Any]] = {}  # by insert_id
        self.ingested = 0  # events ingested, repeats included
        self.users: dict[str, dict[str, Any]] = {}
        self.answer_lost = 0  # requests to ingest, then answer 502 as if the answer was lost
        self.request_bytes = REQUEST_BYTES  # a test may lower it

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/2/httpapi", self._httpapi)
        app.router.add_post("/identify", self._identify)

    def authorized(self, request: web.Request) -> bool:
        return True  # the key is in the body: checked by each route

    def _bad_key(self, key: Any) -> web.Response | None:
        if key == self.credential:
            return None
        return web.json_response({"code": 400, "error": f"Invalid API key: {key}"}, status=400)

    def rate_limited(self, reset_s: float) -> web.Response:
        body = {
            "code": 429,
            "error": "Too many requests for some devices and users",
            "eps_threshold": 1000,
            "throttled_devices": {},
            "throttled_users": {},
            "throttled_events": [],
        }
        return web.json_response(body, status=429)

    async def _httpapi(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if len(raw) > self.request_bytes:
            return _error(413, "Payload too large")
        payload = json.loads(raw)
        if (bad := self._bad_key(payload.get("api_key"))) is not None:
            return bad
        if (fault := self.guard(request)) is not None:
            return fault
        events = payload.get("events")
        if not isinstance(events, list) or not events:
            return _error(400, "Request missing required field", missing_field="events")
        if len(events) > EVENTS:
            return _error(413, "Payload too large")
        if self.refuses_whole(events):
            return _error(400, "Invalid JSON request body")
        min_id = (payload.get("options") or {}).get("min_id_length", MIN_ID_LENGTH)
        invalid: dict[str, list[int]] = {}
        missing: dict[str, list[int]] = {}
        for index, event in enumerate(events):
            for field, problem in self._problems(event, min_id):
                (invalid if problem == "invalid" else missing).setdefault(field, []).append(index)
        if invalid or missing:
            return _error(
                400,
                "Invalid field values on some events" if invalid else "Missing required fields",
                events_with_invalid_fields=invalid,
                events_with_missing_fields=missing,
            )
        for event in events:
            self.events[event.get("insert_id") or f"#{len(self.events)}"] = event
        self.ingested += len(events)
        self.changed()
        if self.answer_lost > 0:
            self.answer_lost -= 1
            return _error(502, "Bad Gateway")
        return web.json_response(
            {
                "code": 200,
                "events_ingested": len(events),
                "payload_size_bytes": len(raw),
                "server_upload_time": int(time.time() * 1000),
            }
        )

    def _problems(self, event: Any, min_id: int) -> list[tuple[str, str]]:
        if not isinstance(event, dict):
            return [("event", "invalid")]
        found = []
        if not event.get("event_type"):
            found.append(("event_type", "missing"))
        ids = [event.get(k) for k in ("user_id", "device_id") if event.get(k)]
        if not ids:
            found.append(("user_id", "missing"))
        elif all(len(str(i)) < min_id for i in ids):
            found.append(("user_id" if event.get("user_id") else "device_id", "invalid"))
        if "time" in event and not isinstance(event["time"], int):
            found.append(("time", "invalid"))
        for field, value in event.items():
            if self.is_rejected({field: value}):
                found.append((field, "invalid"))
        return found

    async def _identify(self, request: web.Request) -> web.Response:
        form = await request.post()
        if (bad := self._bad_key(form.get("api_key"))) is not None:
            return bad
        if (fault := self.guard(request)) is not None:
            return fault
        identification = json.loads(str(form.get("identification") or "[]"))
        if self.refuses_whole(identification):
            return web.Response(status=400, text="invalid identification")
        for item in identification:
            ids = [item.get(k) for k in ("user_id", "device_id") if item.get(k)]
            if not ids or all(len(str(i)) < MIN_ID_LENGTH for i in ids):
                return web.Response(status=400, text="missing or invalid user_id or device_id")
        for item in identification:
            holder = self.users.setdefault(str(item.get("user_id") or item["device_id"]), {})
            holder.update(item.get("user_properties") or {})
            holder.update({k: v for k, v in item.items() if k != "user_properties"})
        self.changed()
        return web.Response(text="success")


def _error(status: int, error: str, **extra: Any) -> web.Response:
    return web.json_response({"code": status, "error": error, **extra}, status=status)


def _events(seen: Seen) -> int:
    return len(seen.json()["events"])


def _latest_email(emulator: Any) -> dict[str, Any]:
    """user_id → the email in the event properties of its latest event."""
    held: dict[str, Any] = {}
    for event in emulator.events.values():
        held[event["user_id"]] = event["event_properties"]["email"]
    return held


# Amplitude events cannot be deleted: deletes=False. The suite's ids are 1..n, shorter than
# Amplitude's default minimum of 5 characters: min_id_length 1.
CASE = DestinationCase(
    type="amplitude",
    emulator=AmplitudeEmulator,
    settings=lambda url: {
        "base_url": url,
        "api_key": "${CONFORMANCE_CREDENTIAL}",
        "min_id_length": 1,
    },
    action="track_events",
    fields={
        "user_id": "id",
        "event_type": {"value": "User Synced"},
        "event_properties": {"properties": {"email": "email", "name": "name", "plan": "plan"}},
    },
    held=_latest_email,
    records_in=_events,
    record_paths=frozenset({"/2/httpapi"}),
    max_batch_size=EVENTS,
    max_request_bytes=REQUEST_BYTES,
    max_record_bytes=900_000,
    deletes=False,
)
