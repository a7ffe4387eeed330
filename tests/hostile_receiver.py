"""A hostile HTTP receiver on 127.0.0.1 that misbehaves on purpose, kept for every destination.

It plays any HTTP destination: every method on every path is answered, and what each request
carried (method, path, headers, body) is kept, whatever the answer. A POST whose body is a batch
of docs/webhook-protocol.md is answered per that protocol, bent by the chosen `mode`:

- `accept` (default): 200 with an empty body, the protocol's "all accepted".
- `reject`: 200 listing the records whose canonical key text is in `reject_keys` as refused.
- key echoes in another form (one refusal, for the first record of the batch):
  `key_as_string` (17 → "17"), `key_as_number` ("17" → 17), `key_reordered` (composite key's
  properties in reverse order), `key_extra` (an extra property), `key_missing_property`,
  `unknown_key` (a key not in the batch), `duplicate_key` (the first key refused twice).
- garbage 2xx bodies: `garbage_html`, `garbage_results_not_list` (`{"results": "ok"}`),
  `garbage_item_without_key`, `garbage_truncated`, `garbage_not_object` (`[]`),
  `garbage_wrong_types` (`"ok": "no"`), `garbage_bytes` (not UTF-8).
- echoes of what it received: `echo_reject` refuses every record with a message that repeats the
  record's data and the request's headers, in each of `echo_encodings` (raw, json-escaped,
  percent-encoded, base64); `echo_error` answers `echo_status` with a body that does the same.

`redirect(path, status, location)` makes a path answer a redirect instead (location: a path on
this receiver, or any URL, such as another receiver's: a different origin). Waiting is on events
(`wait_for`), never on sleeps. Start it with `with HostileReceiver() as receiver:`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

ENCODINGS = ("raw", "json", "percent", "base64")
_GARBAGE: dict[str, tuple[str | bytes, str]] = {
    "garbage_html": ("<html><body>OK</body></html>", "text/html"),
    "garbage_results_not_list": ('{"results": "ok"}', "application/json"),
    "garbage_truncated": ('{"results": [{"key": 1, "ok": fa', "application/json"),
    "garbage_not_object": ("[]", "application/json"),
    "garbage_bytes": (b'\xff\xfe{"results": []}', "application/json"),
}


def key_text(key: Any) -> str:
    """A key as canonical JSON text (sorted, compact): how `reject_keys` is keyed."""
    return json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def encode(text: str, encoding: str) -> str:
    """`text` as a server might echo it: raw, JSON-escaped, percent-encoded or base64."""
    if encoding == "raw":
        return text
    if encoding == "json":
        return json.dumps(text)[1:-1]  # ensure_ascii: non-ASCII turns into \\uXXXX
    if encoding == "percent":
        return urllib.parse.quote(text, safe="")
    if encoding == "base64":
        return base64.b64encode(text.encode()).decode()
    raise ValueError(f"unknown encoding {encoding!r}")


@dataclass(frozen=True)
class Seen:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def batch(self) -> dict[str, Any] | None:
        """The body as a webhook batch, or None when it is not one."""
        try:
            value = json.loads(self.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        if isinstance(value, dict) and isinstance(value.get("records"), list):
            return value
        return None

    def records(self) -> list[dict[str, Any]]:
        batch = self.batch()
        return [] if batch is None else list(batch["records"])


@dataclass
class HostileReceiver:
    """Misbehaves as `mode` says (see the module docstring); every attribute may change live."""

    host: str = "127.0.0.1"
    mode: str = "accept"
    reject_keys: set[str] = field(default_factory=set)
    echo_encodings: tuple[str, ...] = ENCODINGS
    echo_status: int = 500
    redirects: dict[str, tuple[int, str]] = field(default_factory=dict)
    # Extra modes: name → answer(seen) returning (status, body, content type).
    extra_modes: dict[str, Callable[[Seen], tuple[int, str, str]]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    origin: str = ""
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None

    # -- behaviours and what it saw ---------------------------------------------------------

    def url(self, path: str = "/ingest") -> str:
        return f"{self.origin}{path}"

    def redirect(self, path: str, status: int, location: str) -> None:
        """Answer requests to `path` with `status` and this Location."""
        self.redirects[path] = (status, location)

    def reject(self, key: Any) -> None:
        self.reject_keys.add(key_text(key))

    def forget(self) -> None:
        """Forget what was received (behaviours stay)."""
        with self._changed:
            self.seen.clear()

    def requests_to(self, path: str) -> list[Seen]:
        with self._changed:
            return [s for s in self.seen if s.path == path]

    def keys_received(self, path: str = "/ingest") -> list[Any]:
        return [r["key"] for s in self.requests_to(path) for r in s.records()]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
        """Block until `predicate()` holds after some request arrived (or raise on timeout)."""
        with self._changed:
            if not self._changed.wait_for(predicate, timeout):
                raise TimeoutError("the hostile receiver never saw what was expected")

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> HostileReceiver:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait()
        if not self.origin:
            raise RuntimeError("the hostile receiver could not start")
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

    def __enter__(self) -> HostileReceiver:
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
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.origin = f"http://{self.host}:{port}"

    # -- answering --------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        seen = Seen(request.method, request.path, dict(request.headers), await request.read())
        status, body, content_type, headers = self._answer(seen)
        with self._changed:
            self.seen.append(seen)
            self._changed.notify_all()
        data = body if isinstance(body, bytes) else body.encode()
        return web.Response(status=status, body=data, content_type=content_type, headers=headers)

    def _answer(self, seen: Seen) -> tuple[int, str | bytes, str, dict[str, str]]:
        if seen.path in self.redirects:
            status, location = self.redirects[seen.path]
            return status, "", "text/plain", {"Location": location}
        if self.mode in self.extra_modes:
            return (*self.extra_modes[self.mode](seen), {})
        if self.mode in _GARBAGE:
            text, content_type = _GARBAGE[self.mode]
            return 200, text, content_type, {}
        if self.mode == "echo_error":
            return self.echo_status, self._echo(seen, seen.records()), "text/plain", {}
        results = self._results(seen)
        body = json.dumps({"results": results}) if results else ""
        return 200, body, "application/json", {}

    def _results(self, seen: Seen) -> list[dict[str, Any]]:
        records = seen.records()
        if self.mode == "accept" or not records:
            return []
        if self.mode == "reject":
            keys = [r["key"] for r in records if key_text(r["key"]) in self.reject_keys]
            return [_refusal(key) for key in keys]
        if self.mode == "echo_reject":
            return [_refusal(r["key"], self._echo(seen, [r])) for r in records]
        if self.mode == "garbage_item_without_key":
            return [{"ok": False, "message": "no key"}]
        if self.mode == "garbage_wrong_types":
            return [{"key": records[0]["key"], "ok": "no", "message": 5}]
        return _bent(self.mode, records[0]["key"])

    def _echo(self, seen: Seen, records: list[dict[str, Any]]) -> str:
        """What a careless server puts in an error: the data and headers it was sent."""
        texts = [json.dumps(r.get("data"), ensure_ascii=False) for r in records]
        texts += [_string_values(r.get("data")) for r in records]
        texts += [f"{name}: {value}" for name, value in seen.headers.items()]
        texts += list(seen.headers.values())
        parts = [f"[{enc}] {encode(t, enc)}" for t in texts if t for enc in self.echo_encodings]
        return "refused: " + " | ".join(parts)


def _string_values(data: Any) -> str:
    if isinstance(data, dict):
        return " ".join(str(v) for v in data.values() if isinstance(v, str))
    return ""


def _refusal(key: Any, message: str = "refused by the hostile receiver") -> dict[str, Any]:
    return {"key": key, "ok": False, "code": "HOSTILE", "message": message}


def _bent(mode: str, key: Any) -> list[dict[str, Any]]:
    """One refusal whose key is the first record's key in another form than it was sent."""
    if mode == "key_as_string":
        return [_refusal(key if isinstance(key, str) else json.dumps(key))]
    if mode == "key_as_number":
        return [_refusal(int(key) if isinstance(key, str) and key.isdigit() else key)]
    if mode == "key_reordered":
        return [_refusal(dict(reversed(list(key.items()))) if isinstance(key, dict) else key)]
    if mode == "key_extra":
        return [_refusal({**key, "extra": 1} if isinstance(key, dict) else {"id": key})]
    if mode == "key_missing_property":
        return [_refusal(dict(list(key.items())[1:]) if isinstance(key, dict) else None)]
    if mode == "unknown_key":
        return [_refusal("no such key in this batch")]
    if mode == "duplicate_key":
        return [_refusal(key), _refusal(key)]
    raise ValueError(f"unknown mode {mode!r}")
