"""A real webhook receiver on loopback that plays a destination: for the demo, tests and benchmark.

It speaks docs/webhook-protocol.md. It serves from a background thread with its own event loop,
so a test can sync against it in the same process, and it runs as a process of its own:

    python -m ebbtide.demo.receiver --port 8787 [--host 127.0.0.1] [--log FILE.jsonl]
                                    [--count-only] [--delay-s S]

Behaviours may be changed at any time while it runs, from any thread. Per request, the first that
applies decides the answer: `status_for_all`, then `fail_first` (the next N requests get
`fail_status`), then 200 with `reject_keys` listed as refused records. `retry_after` goes out as a
Retry-After header on 429 and 503 answers; `hang_s` and `delay_s` wait before answering.

What it saw is recorded on arrival, whatever the answer (a hung request's records count as
received: a slow server does apply them, which is what at-least-once delivery is about).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import http
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NamedTuple

from aiohttp import web

# Batches of up to 100,000 records must fit; aiohttp's default cap is 1 MiB.
MAX_BODY_BYTES = 1 << 30
# In count-only mode records are counted, not parsed: each record has exactly one "op" key.
# (A mapped field literally named "op" would be counted too; use the parsing mode for such data.)
_OP_MARK = b'"op":'


class Rejection(NamedTuple):
    """How the receiver refuses one record inside an accepted batch."""

    code: str = "REJECTED"
    message: str = "rejected by the receiver"
    error_class: str = "validation"


@dataclass(frozen=True)
class Exchange:
    """One request as the receiver saw it, and what it answered."""

    at: float  # time.monotonic() on arrival
    idempotency_key: str
    status: int
    records: int
    mapping: str | None = None
    action: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def key_text(key: Any) -> str:
    """A key as canonical JSON text (sorted, compact): how `reject_keys` is keyed."""
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


class _BadRequest(ValueError):
    """The body is not a batch of the webhook protocol."""


class Receiver:
    """An HTTP server on `host:port` (0: any free port) answering POSTs to `path`.

    Behaviours (public attributes, changeable while running):
    - `reject_keys`: canonical key text (see `key_text`, or use `reject()`) → `Rejection`
      (or any `(code, message, error_class)` tuple); those records are refused in a 200 answer.
    - `fail_first`: setting it to N answers the next N requests with `fail_status` (500).
    - `retry_after`: seconds sent as Retry-After with 429 and 503 answers (a string, such as
      an HTTP date, is sent as it is).
    - `hang_s`, `delay_s`: seconds to wait before answering (a hang, a slow receiver).
    - `status_for_all`: answer every request with this status (e.g. 401).

    What it saw: `records` (dicts with op, key, data, idempotency_key and `accepted`: answered
    2xx and not rejected), `exchanges`, `requests`, `idempotency_keys`, `record_count`,
    `max_in_flight`. With `count_only`, bodies are not parsed: only counts are kept. With
    `log_path`, every received record is appended to that file as a JSON line, flushed before
    the answer is sent (bodies are then parsed even in count-only mode).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        path: str = "/ingest",
        count_only: bool = False,
        log_path: Path | None = None,
    ) -> None:
        self.host, self.port, self.path = host, port, path
        self.count_only = count_only
        self.log_path = log_path
        self.url = ""
        self._lock = threading.Lock()
        self._answering = threading.Event()
        self._answering.set()
        self.clear_behaviours()
        self.reset()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._log: IO[str] | None = None

    # -- behaviours -------------------------------------------------------------------------

    def clear_behaviours(self) -> None:
        """Back to a well-behaved destination that accepts everything at once."""
        with self._lock:
            self.reject_keys: dict[str, tuple[str, str, str]] = {}
            self.fail_status = 500
            self.retry_after: float | str | None = None
            self.hang_s = 0.0
            self.delay_s = 0.0
            self.status_for_all: int | None = None
            # Once this many records came in, answer nothing more until `release()`: a
            # sync is held at an exact point of its load.
            self.hold_after: int | None = None
            self._fail_first = 0
            self._failed = 0

    def release(self) -> None:
        """Answer again after `hold_after` (or `holding()`) held the answers back; a hold not
        yet reached is called off (a caller may see the records before the hold is set)."""
        with self._lock:
            self.hold_after = None
            self._answering.set()

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Take requests in but answer none until the block ends: a sync stays mid-load, its
        lease held, however long the caller takes (no hang to outlast)."""
        self._answering.clear()
        try:
            yield
        finally:
            self._answering.set()

    def reject(
        self,
        key: Any,
        *,
        code: str = "REJECTED",
        message: str = "rejected by the receiver",
        error_class: str = "validation",
    ) -> None:
        """Refuse the record with this key (a value, or a dict for a composite key)."""
        with self._lock:
            self.reject_keys[key_text(key)] = Rejection(code, message, error_class)

    @property
    def fail_first(self) -> int:
        return self._fail_first

    @fail_first.setter
    def fail_first(self, n: int) -> None:
        with self._lock:
            self._fail_first, self._failed = n, 0

    # -- what it saw ------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget what was received (behaviours stay; see `clear_behaviours`)."""
        with self._lock:
            self.records: list[dict[str, Any]] = []
            self.exchanges: list[Exchange] = []
            self.idempotency_keys: list[str] = []
            self.requests = 0
            self.record_count = 0
            self.in_flight = 0
            self.max_in_flight = 0

    def keys(self, *, accepted_only: bool = True) -> list[Any]:
        """Keys received in arrival order; by default only those the receiver accepted."""
        with self._lock:
            return [r["key"] for r in self.records if r["accepted"] or not accepted_only]

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Receiver:
        """Bind and serve from a background thread; `url` is valid when this returns."""
        if self._thread is not None:
            raise RuntimeError("the receiver is already running")
        ready = threading.Event()
        failure: list[OSError] = []
        self._thread = threading.Thread(
            target=self._serve, args=(ready, failure), name="ebbtide-receiver", daemon=True
        )
        self._thread.start()
        ready.wait()
        if not self.url:
            self._thread.join()
            self._thread = None
            if failure:
                raise failure[0]
            raise RuntimeError("the receiver could not start (see the error above)")
        return self

    def stop(self) -> None:
        """Stop serving: hung requests are released, the socket and the log are closed."""
        if self._thread is None or self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self, ready: threading.Event, failure: list[OSError]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._open())
        except OSError as exc:  # the port is taken, the host is not local …
            failure.append(exc)
            loop.run_until_complete(self._close())
            loop.close()
            return
        finally:
            ready.set()
        loop.run_forever()
        loop.close()

    async def _open(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(self.path, self._ingest)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        port = self._runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.log_path is not None:
            self._log = self.log_path.open("a", encoding="utf-8")
        self.url = f"http://{host}:{port}{self.path}"

    async def _close(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- serving ----------------------------------------------------------------------------

    async def _ingest(self, request: web.Request) -> web.Response:
        body = await request.read()
        idempotency_key = request.headers.get("Idempotency-Key", "")
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            status = self._choose_status()
        try:
            try:
                rejected = self._take_in(request, body, idempotency_key, status)
            except _BadRequest as exc:
                self._remember(Exchange(time.monotonic(), idempotency_key, 400, 0))
                return web.json_response({"error": str(exc)}, status=400)
            with self._lock:  # as the records come in: a release can only follow the hold
                if self.hold_after is not None and self.record_count >= self.hold_after:
                    self.hold_after = None  # once: from here on, nothing is answered
                    self._answering.clear()
            await self._wait(self.hang_s + self.delay_s)
            await self._held_back()
            return self._answer(status, rejected)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _choose_status(self) -> int:
        """Called under the lock: what this request will be answered."""
        if self.status_for_all is not None:
            return self.status_for_all
        if self._failed < self._fail_first:
            self._failed += 1
            return self.fail_status
        return 200

    def _take_in(
        self, request: web.Request, body: bytes, idempotency_key: str, status: int
    ) -> list[dict[str, Any]]:
        """Record what arrived; returns the `results` entries of refused records."""
        exchange = Exchange(
            time.monotonic(), idempotency_key, status, 0, headers=dict(request.headers)
        )
        if self.count_only and self._log is None:
            self._remember(dataclasses.replace(exchange, records=body.count(_OP_MARK)))
            return []
        mapping, action, records = _parse(body)
        exchange = dataclasses.replace(
            exchange, records=len(records), mapping=mapping, action=action
        )
        refused = self._refused(records) if 200 <= status < 300 else {}
        seen = [
            {
                "op": r["op"],
                "key": r["key"],
                "data": r["data"],
                "idempotency_key": idempotency_key,
                "accepted": 200 <= status < 300 and key_text(r["key"]) not in refused,
            }
            for r in records
        ]
        self._write_log(seen)
        self._remember(exchange, seen)
        return [_result(key, rejection) for key, rejection in refused.values()]

    def _refused(self, records: list[dict[str, Any]]) -> dict[str, tuple[Any, Rejection]]:
        """Canonical key text → (the key as sent, its rejection), for the refused records."""
        with self._lock:
            if not self.reject_keys:
                return {}
            given = dict(self.reject_keys)
        # Keys set by hand may be spaced or ordered differently: compare canonical forms.
        rejects = {key_text(json.loads(text)): value for text, value in given.items()}
        refused: dict[str, tuple[Any, Rejection]] = {}
        for record in records:
            text = key_text(record["key"])
            if text in rejects:
                refused[text] = (record["key"], Rejection(*rejects[text]))
        return refused

    def _remember(self, exchange: Exchange, seen: list[dict[str, Any]] | None = None) -> None:
        with self._lock:
            self.requests += 1
            self.record_count += exchange.records
            self.exchanges.append(exchange)
            self.idempotency_keys.append(exchange.idempotency_key)
            if seen is not None and not self.count_only:
                self.records.extend(seen)

    def _write_log(self, seen: list[dict[str, Any]]) -> None:
        if self._log is None:
            return
        lines = (
            json.dumps(
                {
                    "op": r["op"],
                    "key": r["key"],
                    "idempotency_key": r["idempotency_key"],
                    "accepted": r["accepted"],
                }
            )
            + "\n"
            for r in seen
        )
        self._log.writelines(lines)
        self._log.flush()

    async def _held_back(self) -> None:
        while not self._answering.is_set() and not (self._stopping and self._stopping.is_set()):
            await asyncio.sleep(0.01)

    async def _wait(self, seconds: float) -> None:
        if seconds <= 0 or self._stopping is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _answer(self, status: int, rejected: list[dict[str, Any]]) -> web.Response:
        if 200 <= status < 300:
            return web.json_response({"results": rejected} if rejected else {}, status=status)
        headers = {}
        retry_after = self.retry_after
        if retry_after is not None and status in (429, 503):
            headers["Retry-After"] = (
                retry_after if isinstance(retry_after, str) else f"{retry_after:g}"
            )
        phrase = _phrase(status)
        return web.json_response(
            {"error": f"{phrase} (played by the ebbtide test receiver)"},
            status=status,
            headers=headers,
        )


def _parse(body: bytes) -> tuple[str | None, str | None, list[dict[str, Any]]]:
    try:
        batch = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _BadRequest(f"the body is not JSON: {exc}") from exc
    if not isinstance(batch, dict) or not isinstance(batch.get("records"), list):
        raise _BadRequest('the body must be an object with a "records" array')
    records = batch["records"]
    for record in records:
        if not isinstance(record, dict) or not {"op", "key", "data"} <= record.keys():
            raise _BadRequest('every record needs "op", "key" and "data"')
    return batch.get("mapping"), batch.get("action"), records


def _result(key: Any, rejection: Rejection) -> dict[str, Any]:
    return {
        "key": key,
        "ok": False,
        "code": rejection.code,
        "message": rejection.message,
        "error_class": rejection.error_class,
    }


def _phrase(status: int) -> str:
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT; the first line on stdout is the URL to POST to."""
    parser = argparse.ArgumentParser(prog="python -m ebbtide.demo.receiver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787, help="0 picks a free port")
    parser.add_argument("--path", default="/ingest")
    parser.add_argument("--log", type=Path, help="append every received record to this JSONL")
    parser.add_argument("--count-only", action="store_true", help="count records, keep none")
    parser.add_argument("--delay-s", type=float, default=0.0, help="latency per request")
    parser.add_argument(
        "--hold-after", type=int, help="answer nothing once N records came in, until SIGUSR1"
    )
    args = parser.parse_args(argv)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    receiver = Receiver(
        args.host, args.port, path=args.path, count_only=args.count_only, log_path=args.log
    )
    receiver.delay_s = args.delay_s
    receiver.hold_after = args.hold_after
    signal.signal(signal.SIGUSR1, lambda *_: receiver.release())
    with receiver:
        print(f"listening on {receiver.url}", flush=True)
        while not stopping.wait(0.5):
            pass
    print(
        f"received {receiver.record_count} records in {receiver.requests} requests",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
