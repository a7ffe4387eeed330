"""Segment's HTTP Tracking API batch endpoint, from its public documentation
(segment.com/docs/connections/sources/catalog/libraries/server/http-api/).

What the documentation says, and this emulator does:
- `POST /v1/batch`, `{"batch": [event, …]}`, the write key as HTTP Basic auth (key as the
  user name, empty password); answered 200 `{"success": true}` for a batch it took;
- 400 for a body that is not JSON, a request over 500 KB, or an event over 32 KB (nothing of
  the request is kept);
- up to 2,500 events a request: past that, 200 all the same and the extra events dropped;
- an event without userId and anonymousId, a track without `event`, a group without
  `groupId`, or a messageId of 100 characters or more: 200, and the event dropped;
- events are deduplicated by messageId: a second event with a known messageId is dropped;
- 429 with `Retry-After` and `X-RateLimit-Reset` (seconds) past the rate limit.

Where the documentation is silent or the real API cannot be emulated faithfully:
- A wrong write key gets 401 here. The real edge answers 200 to most keys it does not know and
  drops their events (the documentation lists "incorrect credentials" among reasons events are
  not accepted); the conformance suite needs a refusal to show the run stops.
- The 400's body is not documented: `{"success": false, "message": …}` here.
- Segment never refuses one event of a batch by itself, so `reject_values` (the suite's fault
  "a record refused by itself") refuses the whole request with a 400, as `refuse_whole_values`
  does; the engine halves the batch until the record is alone.
"""

from __future__ import annotations

import base64
import json
import math
import threading
from typing import Any

from aiohttp import web

from tests.conformance.case import DestinationCase, Seen
from tests.emulators.base import Emulator

REQUEST_LIMIT = 500_000
EVENT_LIMIT = 32_000
EVENTS_PER_REQUEST = 2_500
TYPES = frozenset({"identify", "track", "group", "page", "screen", "alias"})


class SegmentEmulator(Emulator):
    """Keeps each event once per messageId, as Segment's deduplication does."""

    name = "segment"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.events: dict[str, dict[str, Any]] = {}  # messageId → the event, in arrival order
        self.duplicates: list[dict[str, Any]] = []  # events dropped for a known messageId
        self.dropped: list[tuple[str, dict[str, Any]]] = []  # (why, event) dropped after a 200
        self.lose_answers = 0  # the next requests are taken, then answered 503 (answer lost)
        self._lock = threading.Lock()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/batch", self._batch)

    def authorized(self, request: web.Request) -> bool:
        token = base64.b64encode(f"{self.credential}:".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {token}"

    def unauthorized(self) -> web.Response:
        return web.json_response({"success": False, "message": "Invalid write key"}, status=401)

    def rate_limited(self, reset_s: float) -> web.Response:
        seconds = str(max(1, math.ceil(reset_s)))
        return web.json_response(
            {"success": False, "message": "Too Many Requests"},
            status=429,
            headers={"Retry-After": seconds, "X-RateLimit-Reset": seconds},
        )

    async def _batch(self, request: web.Request) -> web.Response:
        if (fault := self.guard(request)) is not None:
            return fault
        body = await request.read()
        if len(body) > REQUEST_LIMIT:
            return _bad(f"request too large: {len(body):,} bytes (limit {REQUEST_LIMIT:,})")
        try:
            payload = json.loads(body)
        except ValueError:
            return _bad("invalid JSON")
        events = payload.get("batch") if isinstance(payload, dict) else None
        if not isinstance(events, list):
            return _bad('the body has no "batch" array')
        for event in events:
            size = len(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode())
            if size > EVENT_LIMIT:
                return _bad(f"event too large: {size:,} bytes (limit {EVENT_LIMIT:,})")
        if self.refuses_whole(events) or any(self.is_rejected(e) for e in events):
            return _bad("an event of the batch is not valid")
        self._take(events)
        with self._lock:
            lost = self.lose_answers > 0
            self.lose_answers -= 1 if lost else 0
        if lost:
            return web.Response(status=503, text="upstream timed out", headers={"Retry-After": "0"})
        return web.json_response({"success": True})

    def _take(self, events: list[Any]) -> None:
        with self._lock:
            for number, event in enumerate(events):
                why = _dropped_why(event) if number < EVENTS_PER_REQUEST else "past 2,500 events"
                if why is not None:
                    self.dropped.append((why, event))
                elif event["messageId"] in self.events:
                    self.duplicates.append(event)
                else:
                    self.events[event["messageId"]] = event
        self.changed()

    # -- what tests read back -----------------------------------------------------------------

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events.values() if e.get("type") == kind]

    def profiles(self) -> dict[str, dict[str, Any]]:
        """userId → traits, merged identify by identify as Segment's profiles do."""
        merged: dict[str, dict[str, Any]] = {}
        for event in self.of_type("identify"):
            if "userId" in event:
                merged.setdefault(event["userId"], {}).update(event.get("traits") or {})
        return merged

    def message_ids(self) -> list[str]:
        """Every messageId the emulator was sent (held, duplicate or dropped), in order."""
        return [e.get("messageId") for s in self.requests_to("/v1/batch") for e in _sent(s)]


def _bad(message: str) -> web.Response:
    return web.json_response({"success": False, "message": message}, status=400)


def _dropped_why(event: Any) -> str | None:
    """Why Segment would drop this event after answering 200, if it would."""
    if not isinstance(event, dict) or event.get("type") not in TYPES:
        return "no valid type"
    if not event.get("userId") and not event.get("anonymousId"):
        return "no_user_anon_id"
    if event["type"] == "track" and not event.get("event"):
        return "track without event"
    if event["type"] == "group" and not event.get("groupId"):
        return "group without groupId"
    message_id = event.get("messageId")
    if not isinstance(message_id, str) or not message_id or len(message_id) >= 100:
        return "messageId missing or 100 characters or more"
    return None


def _sent(seen: Seen) -> list[Any]:
    try:
        events = seen.json().get("batch")
    except (ValueError, AttributeError):
        return []
    return events if isinstance(events, list) else []


def _held(emulator: SegmentEmulator) -> dict[str, Any]:
    """userId → the anonymousId of its latest track (the suite's model has no object column,
    so its email travels as the anonymousId and its name as the event: see CASE)."""
    return {e["userId"]: e.get("anonymousId") for e in emulator.of_type("track")}


CASE = DestinationCase(
    type="segment",
    emulator=SegmentEmulator,
    settings=lambda url: {"write_key": "${CONFORMANCE_CREDENTIAL}", "base_url": url},
    # Traits and properties are objects, and a customized object needs an object column to
    # start from: the suite's model (id, email, name, plan, score) has none. The track
    # action's string fields carry what the suite checks instead: email as the anonymousId
    # (held, updated), name as the event name (the payload's size).
    action="track",
    fields={"userId": "id", "anonymousId": "email", "event": "name"},
    held=_held,
    records_in=lambda seen: len(_sent(seen)),
    record_paths=frozenset({"/v1/batch"}),
    max_batch_size=EVENTS_PER_REQUEST,
    max_request_bytes=REQUEST_LIMIT,
    max_record_bytes=EVENT_LIMIT,
    deletes=False,
)
