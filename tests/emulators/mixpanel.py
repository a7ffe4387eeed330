"""Mixpanel's ingestion API as its public documentation describes it.

`POST /import?strict=1`: a JSON array of up to 2,000 events, 10 MB uncompressed, 1 MB per event,
Basic auth with the project token as username or a service account (username, secret) plus
`project_id`. Events that fail validation are listed in a 400's `failed_records` (index,
insert_id, field, message) and the others imported; events are deduplicated by event name,
distinct_id, time and `$insert_id`. A 413 for a body over the limit, a 429 without Retry-After.

`POST /engage` (verbose=1): up to 2,000 profile updates (`$token`, `$distinct_id`, `$set` or
`$delete`); a 200 whose body says `{"status": 1}` or `{"status": 0, "error": …}` (a batch with an
invalid update is refused whole).
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from typing import Any

from aiohttp import web

from tests.conformance.case import DestinationCase, Seen
from tests.emulators.base import Emulator

EVENTS = 2000
REQUEST_BYTES = 10_000_000
EVENT_BYTES = 1_000_000
_INSERT_ID = re.compile(r"^[A-Za-z0-9-]{1,36}$")


class MixpanelEmulator(Emulator):
    """Holds imported events (deduplicated) and profiles by distinct_id."""

    name = "mixpanel"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service_account = ("sa-ebbtide.1234.mp-service-account", "4242")  # user, project
        self.events: dict[tuple[str, str, int, str], dict[str, Any]] = {}
        self.imported = 0  # events imported, duplicates included
        self.profiles: dict[str, dict[str, Any]] = {}
        self.answer_lost = 0  # requests to import, then answer 502 as if the answer was lost

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/import", self._import)
        app.router.add_post("/engage", self._engage)

    def authorized(self, request: web.Request) -> bool:
        if request.path == "/engage":
            return True  # /engage takes the project token in each update
        user, _, password = _basic(request.headers.get("Authorization", ""))
        if user == self.credential and not password:
            return True
        account, project = self.service_account
        return (user, password, request.query.get("project_id")) == (
            account,
            self.credential,
            project,
        )

    def unauthorized(self) -> web.Response:
        body = {"code": 401, "error": "Invalid credentials", "status": "Unauthorized"}
        return web.json_response(body, status=401)

    def rate_limited(self, reset_s: float) -> web.Response:
        body = {
            "code": 429,
            "error": "Project exceeded rate limits. Please retry the request with exponential"
            " backoff.",
            "status": "Too Many Requests",
        }
        return web.json_response(body, status=429)

    async def _import(self, request: web.Request) -> web.Response:
        if (fault := self.guard(request)) is not None:
            return fault
        body = await request.read()
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        if len(body) > REQUEST_BYTES:
            return _status(413, f"request exceeds max limit of {REQUEST_BYTES} bytes")
        events = json.loads(body)
        if not isinstance(events, list) or len(events) > EVENTS:
            return _status(400, f"a request takes a JSON array of at most {EVENTS} events")
        if self.refuses_whole(events):
            return _status(400, "unable to parse the request body")
        failed, imported = [], 0
        for index, event in enumerate(events):
            problem = self._invalid(event)
            if problem is not None:
                field, message = problem
                insert_id = (event.get("properties") or {}).get("$insert_id")
                failed.append(
                    {"index": index, "insert_id": insert_id, "field": field, "message": message}
                )
                continue
            props = event["properties"]
            key = (event["event"], props["distinct_id"], props["time"], props["$insert_id"])
            self.events[key] = event
            imported += 1
        self.imported += imported
        self.changed()
        if self.answer_lost > 0:
            self.answer_lost -= 1
            return _status(502, "Bad Gateway")
        if failed:
            return web.json_response(
                {
                    "code": 400,
                    "error": "some data points in the request failed validation",
                    "status": "Bad Request",
                    "num_records_imported": imported,
                    "failed_records": failed,
                },
                status=400,
            )
        return web.json_response({"code": 200, "num_records_imported": imported, "status": "OK"})

    def _invalid(self, event: Any) -> tuple[str, str] | None:
        props = event.get("properties") if isinstance(event, dict) else None
        if not isinstance(props, dict) or not event.get("event"):
            return "event", "'event' and 'properties' are required"
        if len(json.dumps(event, separators=(",", ":"))) > EVENT_BYTES:
            return "properties", f"the event is larger than {EVENT_BYTES} bytes"
        time = props.get("time")
        if not isinstance(time, int) or time < 31_536_000_000:
            return "properties.time", "'properties.time' is invalid: must be ms since epoch"
        if not isinstance(props.get("distinct_id"), str):
            return "properties.distinct_id", "'properties.distinct_id' is required"
        if not _INSERT_ID.match(str(props.get("$insert_id") or "")):
            return "properties.$insert_id", "'properties.$insert_id' is invalid"
        if self.is_rejected(props):
            return "properties.email", "'properties.email' is invalid"
        return None

    async def _engage(self, request: web.Request) -> web.Response:
        if (fault := self.guard(request)) is not None:
            return fault
        updates = await request.json()
        if not isinstance(updates, list) or len(updates) > EVENTS:
            return web.json_response({"status": 0, "error": f"at most {EVENTS} updates"})
        if any(u.get("$token") != self.credential for u in updates):
            body = {"status": 0, "error": "Invalid project token"}
            return web.json_response(body, status=401)
        error = self._invalid_updates(updates)
        if error is not None:
            return web.json_response({"status": 0, "error": error})
        for update in updates:
            distinct_id = str(update["$distinct_id"])
            if "$delete" in update:
                self.profiles.pop(distinct_id, None)
            else:
                self.profiles.setdefault(distinct_id, {}).update(update["$set"])
        self.changed()
        return web.json_response({"status": 1, "error": None})

    def _invalid_updates(self, updates: list[Any]) -> str | None:
        if self.refuses_whole(updates):
            return "unable to parse the profile updates"
        for update in updates:
            if not update.get("$distinct_id"):
                return "'$distinct_id' is required"
            if "$delete" not in update and not isinstance(update.get("$set"), dict):
                return "an update needs an operation ($set, $delete, …)"
            if len(json.dumps(update)) > EVENT_BYTES:
                return f"an update is larger than {EVENT_BYTES} bytes"
            if self.is_rejected(update.get("$set") or {}):
                return "'$email' is invalid"
        return None


def _basic(header: str) -> tuple[str, str, str]:
    if not header.startswith("Basic "):
        return "", "", ""
    try:
        return base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return "", "", ""


def _status(code: int, error: str) -> web.Response:
    names = {400: "Bad Request", 413: "Request Entity Too Large", 502: "Bad Gateway"}
    return web.json_response(
        {"code": code, "error": error, "status": names.get(code, "Error")}, status=code
    )


def _updates(seen: Seen) -> int:
    return len(seen.json())


CASE = DestinationCase(
    type="mixpanel",
    emulator=MixpanelEmulator,
    settings=lambda url: {"base_url": url, "project_token": "${CONFORMANCE_CREDENTIAL}"},
    action="set_profiles",
    fields={"distinct_id": "id", "$email": "email", "$name": "name"},
    held=lambda emulator: {k: v.get("$email") for k, v in emulator.profiles.items()},
    records_in=_updates,
    record_paths=frozenset({"/engage", "/import"}),
    max_batch_size=EVENTS,
    max_request_bytes=REQUEST_BYTES,
    max_record_bytes=999_000,
)
