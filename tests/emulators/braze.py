"""Braze's REST API as its public documentation describes it: `POST /users/track` (attributes,
events and purchases, 75 objects per request together; an invalid object is named by
`{"type", "input_array", "index"}` in `errors` and the others applied; a request whose objects
are all invalid is a 400 "Valid data must be provided …"), `POST /users/delete` (up to 50
external_ids), a Bearer REST API key, and `X-RateLimit-Limit/-Remaining/-Reset` (a Unix time in
seconds) on every answer; a 429 carries them, with no Retry-After.
"""

from __future__ import annotations

import math
import time
from functools import partial
from typing import Any

from aiohttp import web

from tests.conformance.case import DestinationCase, Seen
from tests.emulators.base import Emulator

TRACK_OBJECTS = 75
DELETE_IDS = 50
NO_VALID_DATA = "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."


class BrazeEmulator(Emulator):
    """Holds user attributes by external_id and the events tracked."""

    name = "braze"

    def __init__(self, *, report_allowance: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Whether successful answers report what is left of `rate_limit`'s window (Braze's own
        # behaviour); off, they report an allowance with plenty left, and only 429s say it is
        # spent (see CASE).
        self.report_allowance = report_allowance
        self.users: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.deleted: list[str] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/users/track", self._track)
        app.router.add_post("/users/delete", self._delete)

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.credential}"

    def unauthorized(self) -> web.Response:
        return web.json_response({"message": "Invalid API key"}, status=401)

    def rate_limited(self, reset_s: float) -> web.Response:
        return web.json_response(
            {"message": "API rate limit reached"},
            status=429,
            headers=self._rate_headers(remaining=0, reset_s=reset_s),
        )

    def _rate_headers(self, remaining: int | None = None, reset_s: float | None = None) -> Any:
        """The allowance as Braze reports it: the emulator's `rate_limit` window, if any."""
        if self.rate_limit is None or (remaining is None and not self.report_allowance):
            limit, remaining, reset_s = 250_000, 249_999, 3600.0
        else:
            limit, per_s = self.rate_limit
            with self._changed:
                window = list(self._window)
            now = time.monotonic()
            if remaining is None:
                remaining = max(limit - len(window), 0)
            if reset_s is None:
                reset_s = (window[0] + per_s - now) if window else per_s
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(time.time() + max(reset_s, 0.0))),
        }

    def _answer(self, body: dict[str, Any], status: int = 200) -> web.Response:
        return web.json_response(body, status=status, headers=self._rate_headers())

    async def _track(self, request: web.Request) -> web.Response:
        if (fault := self.guard(request)) is not None:
            return fault
        payload = await request.json()
        arrays = {name: payload.get(name) or [] for name in ("attributes", "events", "purchases")}
        if sum(len(items) for items in arrays.values()) > TRACK_OBJECTS:
            return self._answer(
                {"message": f"Too many objects: at most {TRACK_OBJECTS} per request"}, 400
            )
        if self.refuses_whole(payload):
            return self._answer({"message": "Invalid request: a field is malformed"}, 400)
        errors: list[dict[str, Any]] = []
        applied = {"attributes": 0, "events": 0}
        for index, item in enumerate(arrays["attributes"]):
            if (error := self._invalid(item)) is not None:
                errors.append({"type": error, "input_array": "attributes", "index": index})
                continue
            self.users.setdefault(str(item["external_id"]), {}).update(item)
            applied["attributes"] += 1
        for index, item in enumerate(arrays["events"]):
            error = self._invalid(item)
            if error is None and not (item.get("name") and item.get("time")):
                error = "'name' and 'time' are required"
            if error is not None:
                errors.append({"type": error, "input_array": "events", "index": index})
                continue
            self.events.append(item)
            applied["events"] += 1
        self.changed()
        if not any(applied.values()):
            return self._answer({"message": NO_VALID_DATA, "errors": errors}, 400)
        body: dict[str, Any] = {"message": "success"}
        if errors:
            body["errors"] = errors
        body.update({f"{k}_processed": n for k, n in applied.items() if arrays[k]})
        return self._answer(body, 201 if errors else 200)

    def _invalid(self, item: Any) -> str | None:
        if not isinstance(item, dict) or not (item.get("external_id") or item.get("braze_id")):
            return "'external_id', 'user_alias', 'braze_id', 'email' or 'phone' is required"
        if self.is_rejected(item):
            return "'email' is not valid"
        return None

    async def _delete(self, request: web.Request) -> web.Response:
        if (fault := self.guard(request)) is not None:
            return fault
        payload = await request.json()
        ids = payload.get("external_ids") or []
        if len(ids) > DELETE_IDS:
            return self._answer({"message": f"At most {DELETE_IDS} external_ids"}, 400)
        deleted = 0
        for external_id in ids:
            if self.users.pop(str(external_id), None) is not None:
                deleted += 1
            self.deleted.append(str(external_id))
        self.changed()
        return self._answer({"deleted": deleted, "message": "success"}, 201)


def _objects(seen: Seen) -> int:
    body = seen.json()
    if seen.path == "/users/delete":
        return len(body.get("external_ids") or [])
    return sum(len(body.get(name) or []) for name in ("attributes", "events", "purchases"))


# The suite's rate-limit test expects the emulator's limit to be hit (a 429) at least once; a
# destination that honours X-RateLimit-Remaining on successful answers never hits it, so the
# suite's emulator reports the allowance on 429s only. tests/integration/test_braze_destination.py
# covers the pause on a spent allowance.
CASE = DestinationCase(
    type="braze",
    emulator=partial(BrazeEmulator, report_allowance=False),
    settings=lambda url: {"base_url": url, "api_key": "${CONFORMANCE_CREDENTIAL}"},
    action="track_attributes",
    fields={"external_id": "id", "email": "email", "first_name": "name"},
    held=lambda emulator: {k: v.get("email") for k, v in emulator.users.items()},
    records_in=_objects,
    record_paths=frozenset({"/users/track", "/users/delete"}),
    max_batch_size=TRACK_OBJECTS,
)
