"""Per-destination rate limits, shared by every mapping that syncs to the destination.

A sliding window: no interval of `per` seconds ever holds more than `requests` sends. Each
send reserves its time slot under a lock, so concurrent requests (and concurrent mappings,
even on other event loops in the same process) never overrun the window together. After a
429 the destination is paused for its Retry-After, and nothing is sent before it passes.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

# Between a send and the one `requests` later: a little past the window, since the destination
# counts arrivals, and a request's body is built after its slot is taken (a large batch's
# takes tens of milliseconds longer than a small one's, more on a busy machine).
_MARGIN = 1.01
_MARGIN_S = 0.05


@dataclass
class RateLimiter:
    requests: int
    per_s: float
    _sent: deque[float] = field(default_factory=deque)
    _paused_until: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def acquire(self) -> None:
        """Wait until one more request may be sent, then count it as sent."""
        while True:
            wait = self._reserve()
            if wait > 0:
                await asyncio.sleep(wait)
            with self._lock:
                # A 429 may have paused the destination while this request slept.
                if time.monotonic() >= self._paused_until:
                    return

    def pause(self, seconds: float) -> None:
        """The destination asked us to back off (Retry-After)."""
        if not math.isfinite(seconds):
            return
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def _reserve(self) -> float:
        with self._lock:
            now = time.monotonic()
            while self._sent and self._sent[0] <= now - self.per_s:
                self._sent.popleft()
            slot = max(now, self._paused_until, self._sent[-1] if self._sent else now)
            if len(self._sent) >= self.requests:
                slot = max(slot, self._sent[-self.requests] + self.per_s * _MARGIN + _MARGIN_S)
            self._sent.append(slot)
            return slot - now


class Unlimited:
    """For destinations without a configured limit: still honours Retry-After pauses."""

    def __init__(self) -> None:
        self._paused_until = 0.0

    async def acquire(self) -> None:
        wait = self._paused_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

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
