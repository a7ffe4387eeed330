"""The rate limiter keeps the destination's windows whatever delays a request meets on its way."""

from __future__ import annotations

import asyncio
import random
import threading
import time

from ebbtide.engine.rate_limit import RateLimiter


def busiest_window(arrivals: list[float], per_s: float) -> int:
    arrivals = sorted(arrivals)
    return max(
        sum(1 for later in arrivals[i:] if later - first < per_s)
        for i, first in enumerate(arrivals)
    )


async def send_all(
    limiter: RateLimiter, count: int, concurrency: int, seed: int, events: list[str] | None = None
) -> list[float]:
    """Requests whose arrival lags the send by up to 80 ms, more than any margin would cover.

    The sleeps are the requests' time on the wire, not waits for anything: the windows hold
    however long they take. `events` gets "in" as a request takes its permit, "out" as it ends."""
    chance = random.Random(seed)
    arrivals: list[float] = []
    gate = asyncio.Semaphore(concurrency)
    noted = events if events is not None else []

    async def one() -> None:
        async with gate, limiter.slot():
            noted.append("in")
            await asyncio.sleep(chance.uniform(0, 0.08))  # built, queued, on the wire
            arrivals.append(time.monotonic())
            await asyncio.sleep(chance.uniform(0, 0.02))  # the answer coming back
            noted.append("out")

    await asyncio.gather(*(one() for _ in range(count)))
    return arrivals


def test_no_window_at_the_destination_holds_more_arrivals_than_the_limit() -> None:
    limiter = RateLimiter(requests=3, per_s=0.25)
    events: list[str] = []
    arrivals = asyncio.run(send_all(limiter, count=24, concurrency=8, seed=7, events=events))
    assert len(arrivals) == 24
    assert busiest_window(arrivals, 0.25) <= 3
    assert events[:3] == ["in", "in", "in"]  # the limit is used: three go out at once


def test_event_loops_in_two_threads_share_the_permits() -> None:
    limiter = RateLimiter(requests=2, per_s=0.2)
    arrivals: list[list[float]] = [[], []]

    def run(index: int) -> None:
        arrivals[index] = asyncio.run(send_all(limiter, count=8, concurrency=4, seed=index))

    threads = [threading.Thread(target=run, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    both = arrivals[0] + arrivals[1]
    assert len(both) == 16
    assert busiest_window(both, 0.2) <= 2


def test_a_pause_holds_back_requests_already_waiting_for_their_permit() -> None:
    limiter = RateLimiter(requests=1, per_s=0.05)

    async def scenario() -> tuple[float, float]:
        async with limiter.slot():
            limiter.pause(0.3)  # the answer to this request was a 429 with Retry-After
            paused_at = time.monotonic()
        async with limiter.slot():
            return paused_at, time.monotonic()

    paused_at, next_send = asyncio.run(scenario())
    assert next_send - paused_at >= 0.3
