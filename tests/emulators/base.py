"""What every vendor emulator shares: an aiohttp server on 127.0.0.1 in a thread of its own,
the requests it saw, what it holds, and the faults tests ask of it.

A vendor's emulator subclasses `Emulator`, adds its routes in `routes()` and answers them as
the vendor's public documentation says (request shape, limits, status codes, per-record error
format, rate-limit headers). Routes that take records go through `guard()` first, which answers
for the faults a test asked for: bad credentials, scripted answers (`fail_next`) and the rate
limit. Waiting is on events (`wait_for`), never on sleeps.

Faults every emulator honours the same way, so the conformance suite can drive any of them:
- `reject_values`: a record with one of these strings among its values is refused by itself,
  in the vendor's per-record error format (the rest of the request is accepted);
- `refuse_whole_values`: a request holding one of these strings is refused whole, as the
  vendor refuses a request with a bad record in it (its 400, nothing applied);
- `fail_next(status, …)`: the next requests to record routes get this answer;
- `rate_limit`: at most `requests` per `per_s` window; past it, the vendor's 429 with its
  headers, and `over_limit` counts the requests that arrived past the limit.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Seen:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival
    query: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Scripted:
    status: int
    body: str
    headers: dict[str, str]
    times: int


def values_of(item: Any) -> Iterable[str]:
    """Every string (and number, as text) anywhere in a JSON value."""
    if isinstance(item, dict):
        for value in item.values():
            yield from values_of(value)
    elif isinstance(item, list):
        for value in item:
            yield from values_of(value)
    elif item is not None and not isinstance(item, bool):
        yield str(item)


class Emulator:
    """Base of the vendor emulators; see the module's docstring."""

    name = "emulator"

    def __init__(self, *, credential: str, rate_limit: tuple[int, float] | None = None) -> None:
        self.credential = credential
        self.rate_limit = rate_limit  # (requests, per seconds)
        self.reject_values: set[str] = set()
        self.refuse_whole_values: set[str] = set()
        self.seen: list[Seen] = []
        self.over_limit = 0
        self.origin = ""
        self._scripted: deque[Scripted] = deque()
        self._window: deque[float] = deque()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    # -- for subclasses -----------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        """Add the vendor's routes."""
        raise NotImplementedError

    def authorized(self, request: web.Request) -> bool:
        """Whether the request carries the credential, as the vendor takes it."""
        raise NotImplementedError

    def unauthorized(self) -> web.Response:
        """The vendor's answer to bad credentials."""
        return web.json_response({"error": "unauthorized"}, status=401)

    def rate_limited(self, reset_s: float) -> web.Response:
        """The vendor's 429, with its own headers."""
        return web.json_response(
            {"error": "rate limited"}, status=429, headers={"Retry-After": f"{reset_s:.3f}"}
        )

    def guard(self, request: web.Request) -> web.Response | None:
        """The answer a fault calls for, or None to answer the request normally."""
        if not self.authorized(request):
            return self.unauthorized()
        with self._changed:
            if self._scripted:
                scripted = self._scripted[0]
                scripted.times -= 1
                if scripted.times <= 0:
                    self._scripted.popleft()
                return web.Response(
                    status=scripted.status,
                    text=scripted.body,
                    headers=scripted.headers,
                    content_type="application/json",
                )
        reset = self._over_the_limit()
        if reset is not None:
            return self.rate_limited(reset)
        return None

    def is_rejected(self, item: Any) -> bool:
        return bool(self.reject_values) and any(v in self.reject_values for v in values_of(item))

    def refuses_whole(self, payload: Any) -> bool:
        return bool(self.refuse_whole_values) and any(
            v in self.refuse_whole_values for v in values_of(payload)
        )

    def changed(self) -> None:
        """Wake the waiters: something the emulator holds changed."""
        with self._changed:
            self._changed.notify_all()

    # -- for tests --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.origin

    def fail_next(
        self, status: int, body: Any = "", headers: dict[str, str] | None = None, times: int = 1
    ) -> None:
        """The next `times` requests to record routes get this answer."""
        text = body if isinstance(body, str) else json.dumps(body)
        with self._changed:
            self._scripted.append(Scripted(status, text, dict(headers or {}), times))

    def limit(self, requests: int, per_s: float) -> None:
        """Enforce a rate limit from now on, with a window that starts empty."""
        with self._changed:
            self.rate_limit = (requests, per_s)
            self._window.clear()
            self.over_limit = 0

    def requests_to(self, path: str) -> list[Seen]:
        with self._changed:
            return [s for s in self.seen if s.path == path]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
        """Block until `predicate()` holds after some request arrived (or raise on timeout)."""
        with self._changed:
            if not self._changed.wait_for(predicate, timeout):
                raise TimeoutError(f"the {self.name} emulator never saw what was expected")

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Emulator:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait()
        if not self.origin:
            raise RuntimeError(f"the {self.name} emulator could not start")
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        if self._runner is not None:
            runner = self._runner
            asyncio.run_coroutine_threadsafe(runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._open())
        finally:
            ready.set()
        loop.run_forever()
        loop.close()

    async def _open(self) -> None:
        app = web.Application(client_max_size=64 << 20, middlewares=[self._record])
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.origin = f"http://127.0.0.1:{port}"

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        seen = Seen(
            request.method,
            request.path,
            dict(request.headers),
            await request.read(),
            time.monotonic(),
            dict(request.query),
        )
        try:
            response: web.StreamResponse = await handler(request)
        finally:
            with self._changed:
                self.seen.append(seen)
                self._changed.notify_all()
        return response

    def _over_the_limit(self) -> float | None:
        """Counts the request in the window; the seconds to wait when it is over the limit."""
        if self.rate_limit is None:
            return None
        requests, per_s = self.rate_limit
        now = time.monotonic()
        with self._changed:
            while self._window and self._window[0] <= now - per_s:
                self._window.popleft()
            if len(self._window) >= requests:
                self.over_limit += 1
                return max(self._window[0] + per_s - now, 0.0)
            self._window.append(now)
        return None
