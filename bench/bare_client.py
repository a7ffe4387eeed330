"""The yardstick: pre-built webhook bodies POSTed with plain aiohttp, no engine around it.

`python -m bench.bare_client URL RECORDS BATCH_SIZE CONCURRENCY` prints JSON: records, wall time
of the POSTs alone (building the bodies is not timed) and the process's peak memory.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections.abc import Iterator

import aiohttp

PLANS = ("free", "starter", "pro", "enterprise")


def _record(i: int) -> str:
    """One record as the webhook destination sends it for the benchmark's users model."""
    data = {
        "email": f"user{i}@example.com",
        "name": f"User {i}",
        "plan": PLANS[i % 4],
        "ltv": (i * 37) % 1000000 / 100,
        "updated_at": f"2026-01-01T00:00:{i % 60:02d}.000000",
    }
    return json.dumps({"op": "added", "key": i, "data": data}, separators=(",", ":"))


def build_bodies(records: int, batch_size: int) -> list[bytes]:
    """`{"mapping", "action", "records": [...]}` bodies of `batch_size` records each."""
    head = '{"mapping": "users_to_hook", "action": "upsert","records":['
    return [
        (
            head
            + ",".join(_record(i) for i in range(start, min(start + batch_size, records)))
            + "]}"
        ).encode()
        for start in range(0, records, batch_size)
    ]


async def post_all(url: str, bodies: list[bytes], concurrency: int) -> None:
    """POST every body over `concurrency` kept-alive connections, reading each answer."""
    queue: Iterator[tuple[int, bytes]] = iter(enumerate(bodies))
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        headers={"Content-Type": "application/json"},
    ) as session:

        async def worker() -> None:
            for number, body in queue:
                headers = {"Idempotency-Key": f"bare-{number}"}
                async with session.post(url, data=body, headers=headers) as response:
                    await response.text()
                    response.raise_for_status()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def main(url: str, records: int, batch_size: int, concurrency: int) -> None:
    bodies = build_bodies(records, batch_size)
    started = time.perf_counter()
    asyncio.run(post_all(url, bodies, concurrency))
    wall_s = time.perf_counter() - started
    result = {
        "sent": records,
        "requests": len(bodies),
        "wall_s": round(wall_s, 3),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
