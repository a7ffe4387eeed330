"""Per-destination rate limits, shared by every mapping that syncs to the destination.

A destination counts requests by when they *arrive*, and the time between our send and its
arrival is not ours to control (a busy machine, a large body, a slow network). So the limit is
kept as `requests` permits: a send holds one from before its request is built until its answer
is back, and `per` seconds beyond that. Any window of `per` seconds at the destination then
holds at most `requests` arrivals, whatever the delays, since every request that arrived in it
still held its permit when the last of them arrived. Concurrent mappings share the permits,
even on other event loops in the same process. After a 429 the destination is paused for its
Retry-After, and nothing is sent before it passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

# Past the window: the destination's clock and ours tick apart by a few milliseconds.
_MARGIN_S = 0.01


@dataclass
class RateLimiter:
    requests: int
    per_s: float
    _free_at: list[float] = field(default_factory=list)  # a heap: when each idle permit frees
    _paused_until: float = 0.0
    _waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = field(
        default_factory=list
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._free_at = [0.0] * self.requests

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one request's permit while the request is made (and `per` seconds after)."""
        free_at = await self._take()
        try:
            await _sleep_until(free_at)
            while (paused := self._pause_left()) > 0:  # a 429 while this request waited
                await asyncio.sleep(paused)
            yield
        finally:
            self._give_back()

    def pause(self, seconds: float) -> None:
        """The destination asked us to back off (Retry-After)."""
        if not math.isfinite(seconds):
            return
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def _pause_left(self) -> float:
        with self._lock:
            return self._paused_until - time.monotonic()

    async def _take(self) -> float:
        """An idle permit (waiting for one while all are out); when it may be used."""
        while True:
            loop = asyncio.get_running_loop()
            woken: asyncio.Future[None] = loop.create_future()
            with self._lock:
                if self._free_at:
                    return heapq.heappop(self._free_at)
                self._waiting.append((loop, woken))
            await woken

    def _give_back(self) -> None:
        with self._lock:
            heapq.heappush(self._free_at, time.monotonic() + self.per_s + _MARGIN_S)
            waiting, self._waiting = self._waiting, []
        for loop, woken in waiting:
            # A loop that has closed has nobody waiting on it any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, woken)


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)


async def _sleep_until(moment: float) -> None:
    wait = moment - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)


class Unlimited:
    """For destinations without a configured limit: still honours Retry-After pauses."""

    def __init__(self) -> None:
        self._paused_until = 0.0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await _sleep_until(self._paused_until)
        yield

    def pause(self, seconds: float) -> None:
        if not math.isfinite(seconds):
            return
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)


_shared: dict[str, RateLimiter | Unlimited] = {}
_shared_lock = threading.Lock()


def limiter_for(
    destination: str, requests: int | None, per_s: float | None
) -> RateLimiter | Unlimited:
    """The one limiter of `destination` in this process."""
    with _shared_lock:
        limiter = _shared.get(destination)
        wanted_limit = requests is not None and per_s is not None
        stale = isinstance(limiter, RateLimiter) and (
            not wanted_limit or (limiter.requests, limiter.per_s) != (requests, per_s)
        )
        if limiter is None or stale or (wanted_limit and isinstance(limiter, Unlimited)):
            limiter = RateLimiter(requests, per_s) if requests and per_s else Unlimited()
            _shared[destination] = limiter
        return limiter
