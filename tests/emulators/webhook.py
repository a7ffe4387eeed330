"""The webhook protocol (docs/webhook-protocol.md) as an emulator: the model for the others."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.conformance.case import DestinationCase, Seen
from tests.emulators.base import Emulator


class WebhookEmulator(Emulator):
    """Applies records by key; refuses a record per `results`, a request whole with a 400."""

    name = "webhook"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.held: dict[str, dict[str, Any]] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/ingest", self._ingest)

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.credential}"

    async def _ingest(self, request: web.Request) -> web.Response:
        if (fault := self.guard(request)) is not None:
            return fault
        payload = await request.json()
        if self.refuses_whole(payload):
            return web.json_response({"error": "a record in the batch is not valid"}, status=400)
        results = []
        for record in payload["records"]:
            key = str(record["key"])
            if self.is_rejected(record.get("data") or {}):
                results.append(
                    {
                        "key": record["key"],
                        "ok": False,
                        "code": "INVALID",
                        "message": "email: invalid",
                    }
                )
            elif record["op"] == "deleted":
                self.held.pop(key, None)
            else:
                self.held[key] = record["data"]
        self.changed()
        return web.json_response({"results": results})


def _records(seen: Seen) -> int:
    return len(seen.json()["records"])


CASE = DestinationCase(
    type="webhook",
    emulator=WebhookEmulator,
    settings=lambda url: {
        "url": f"{url}/ingest",
        "headers": {"Authorization": "Bearer ${CONFORMANCE_CREDENTIAL}"},
    },
    action="upsert",
    fields={"email": "email", "name": "name", "plan": "plan"},
    held=lambda emulator: {k: v["email"] for k, v in emulator.held.items()},
    records_in=_records,
    record_paths=frozenset({"/ingest"}),
    max_batch_size=100_000,
    declares_fields=False,
)
