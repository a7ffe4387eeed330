"""Webhooks: batches of records POSTed as JSON. The protocol is in docs/webhook-protocol.md."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, cast

import aiohttp
from pydantic import Field, HttpUrl
from yarl import URL

from ebbtide.config.models import DeclaredField, DestinationConfig
from ebbtide.engine.acknowledgement import json_text
from ebbtide.errors import DestinationError, ErrorClass
from ebbtide.ports import (
    RECORD_COLUMN,
    ActionSpec,
    AdapterContext,
    BatchResult,
    DestinationPlugin,
    FieldSpec,
    OutboundBatch,
    RecordRejection,
)

_STATUS_CLASSES = {
    400: ErrorClass.VALIDATION,
    401: ErrorClass.AUTH,
    403: ErrorClass.PERMISSION,
    404: ErrorClass.NOT_FOUND,
    408: ErrorClass.TIMEOUT,
    405: ErrorClass.NOT_FOUND,
    409: ErrorClass.CONFLICT,
    410: ErrorClass.NOT_FOUND,
    413: ErrorClass.PAYLOAD_TOO_LARGE,
    422: ErrorClass.VALIDATION,
    429: ErrorClass.RATE_LIMITED,
}
_BODY_EXCERPT = 300
_ANSWER_EXCERPT = 120
_MAX_REDIRECTS = 5
# Results for the largest batch (100,000 records) with messages fit many times over.
_MAX_ANSWER_BYTES = 64 << 20
_KEEPS_METHOD = frozenset({307, 308})  # 301, 302 and 303 let clients switch to GET


class WebhookConfig(DestinationConfig):
    # Both may carry `${VAR}` secrets: never part of a repr.
    url: HttpUrl = Field(repr=False)
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    timeout_s: float = Field(default=30.0, gt=0)
    # Off: a redirect fails the batch and names the new URL. On: a 307 or 308 to the same
    # origin is followed with the same POST (body and headers); nothing else ever is.
    follow_same_origin_redirects: bool = False
    # What the receiver accepts, when it has a fixed list; mappings are checked against it.
    fields: list[DeclaredField] | None = None


class WebhookDestination:
    """POSTs `{"mapping", "action", "records": [...]}` over kept-alive connections."""

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.config.concurrency),
            timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            headers={"Content-Type": "application/json", **self.config.headers},
        )

    async def send(self, batch: OutboundBatch) -> BatchResult:
        assert self._session is not None, "open() comes first"
        records = ",".join(cast(list[str], batch.records.column(RECORD_COLUMN).to_pylist()))
        head = json.dumps({"mapping": batch.mapping, "action": batch.action})[:-1]
        body = f'{head},"records":[{records}]}}'.encode()
        try:
            return await self._post(URL(str(self.config.url)), body, batch.idempotency_key)
        except TimeoutError as exc:
            raise DestinationError(
                ErrorClass.TIMEOUT, f"no answer within {self.config.timeout_s:g}s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise DestinationError(ErrorClass.NETWORK, f"{type(exc).__name__}: {exc}") from exc

    async def _post(self, url: URL, body: bytes, idempotency_key: str) -> BatchResult:
        """POST the batch; never follows a redirect that would change the request or its host."""
        assert self._session is not None
        for _ in range(_MAX_REDIRECTS + 1):
            async with self._session.post(
                url,
                data=body,
                headers={"Idempotency-Key": idempotency_key},
                allow_redirects=False,  # aiohttp would turn a 301/302 POST into a bodiless GET
            ) as response:
                text, whole = await _read_answer(response)
                if 200 <= response.status < 300:
                    if not whole:
                        raise _malformed(f"it is larger than {_MAX_ANSWER_BYTES:,} bytes", text)
                    return answer_of(text)
                if not 300 <= response.status < 400:
                    raise _http_error(response.status, text, response.headers.get("Retry-After"))
                target = _redirect_target(url, response.headers.get("Location"))
                if not self._may_follow(url, response.status, target):
                    raise redirect_error(response.status, target)
                url = cast(URL, target)
        raise DestinationError(
            ErrorClass.NOT_FOUND, f"more than {_MAX_REDIRECTS} redirects in a row; last to {url}"
        )

    def _may_follow(self, url: URL, status: int, target: URL | None) -> bool:
        """Only a redirect that keeps the method, the body and the host may be followed."""
        return (
            self.config.follow_same_origin_redirects
            and status in _KEEPS_METHOD
            and target is not None
            and target.origin() == url.origin()
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_answer(response: aiohttp.ClientResponse) -> tuple[str, bool]:
    """The body as text, and whether it is whole: a destination cannot exhaust our memory.

    JSON is UTF-8; other bytes must not crash the run, only fail the batch.
    """
    data = bytearray()
    async for chunk in response.content.iter_chunked(1 << 16):
        data += chunk
        if len(data) > _MAX_ANSWER_BYTES:
            return data[:_ANSWER_EXCERPT].decode("utf-8", errors="replace"), False
    return data.decode("utf-8", errors="replace"), True


def answer_of(text: str) -> BatchResult:
    """A 2xx body: empty (or an object without `results`) means every record was accepted;
    anything not of the protocol's shape is no acknowledgement at all."""
    if not text.strip():
        return BatchResult()
    try:
        # Decimals keep every digit: a key is matched exactly, never through a float.
        answer = json.loads(text, parse_float=Decimal, parse_constant=_not_json)
        return _results(answer, text)
    except RecursionError:  # nested deeper than a key or an answer has any reason to be
        raise _malformed("it is nested too deeply", text) from None
    except ValueError:  # JSONDecodeError included
        raise _malformed("it is not JSON", text) from None


def _results(answer: Any, text: str) -> BatchResult:
    if not isinstance(answer, dict):
        raise _malformed("it is not a JSON object", text)
    results = answer.get("results", [])
    if not isinstance(results, list):
        raise _malformed('"results" is not a list', text)
    rejected, accepted = [], []
    for number, item in enumerate(results, 1):
        if not isinstance(item, dict) or "key" not in item:
            raise _malformed(f'result {number} is not an object with a "key"', text)
        if not isinstance(item.get("ok"), bool):
            raise _malformed(f'result {number} has no "ok": true or false', text)
        key = json_text(item["key"])
        if item["ok"]:
            accepted.append(key)
        else:
            rejected.append(_rejection(key, item))
    return BatchResult(tuple(rejected), tuple(accepted))


def _malformed(what: str, text: str) -> DestinationError:
    excerpt = " ".join(text.split())[:_ANSWER_EXCERPT]
    return DestinationError(
        ErrorClass.SERVER_ERROR,
        f"the destination answered 2xx with a body that is not the webhook protocol's ({what}:"
        f" {excerpt!r}); no record of the batch counts as loaded. The receiver must answer an"
        ' empty body or {"results": [{"key": …, "ok": false, …}]}, see docs/webhook-protocol.md',
    )


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _rejection(key: str, item: dict[str, Any]) -> RecordRejection:
    try:
        error_class = ErrorClass(item.get("error_class", "validation"))
    except ValueError:
        error_class = ErrorClass.VALIDATION
    return RecordRejection(
        key=key,
        error_class=error_class,
        message=str(item.get("message") or "rejected by the destination"),
        code=str(item["code"]) if item.get("code") is not None else None,
    )


def _redirect_target(url: URL, location: str | None) -> URL | None:
    if not location:
        return None
    try:
        return url.join(URL(location))
    except ValueError:
        return None


def redirect_error(status: int, target: URL | None) -> DestinationError:
    """A redirect is a failure that names where the destination says it went."""
    where = f"redirects to {target}" if target is not None else "redirects without a Location"
    return DestinationError(
        ErrorClass.NOT_FOUND,
        f"HTTP {status}: the destination's URL {where}; redirects are not followed (a POST"
        " would lose its body, and the configured headers must not go to another address),"
        " so nothing was delivered. If the new address is right, set the destination's url"
        " to it",
        code=str(status),
        http_status=status,
    )


def _http_error(status: int, text: str, retry_after: str | None) -> DestinationError:
    if status >= 500:
        error_class = ErrorClass.SERVER_ERROR
    else:
        error_class = _STATUS_CLASSES.get(status, ErrorClass.VALIDATION)
    excerpt = " ".join(text.split())[:_BODY_EXCERPT] or "(empty body)"
    return DestinationError(
        error_class,
        f"HTTP {status}: {excerpt}",
        code=str(status),
        http_status=status,
        retry_after=parse_retry_after(retry_after),
    )


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds, from either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000" means UTC, without saying so
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


ACTIONS = {
    "upsert": ActionSpec(
        "upsert", "POST added, updated (and in mirror mode deleted) records.", field_columns=False
    ),
    "send": ActionSpec(
        "send", "POST records; the receiver decides what each operation means.", field_columns=False
    ),
}


def _build(config: WebhookConfig, context: AdapterContext) -> WebhookDestination:
    return WebhookDestination(config)


def _describe(config: WebhookConfig, action: ActionSpec) -> ActionSpec:
    if config.fields is None:
        return action
    return replace(action, fields=tuple(FieldSpec.declared(f) for f in config.fields))


PLUGIN = DestinationPlugin(config=WebhookConfig, actions=ACTIONS, build=_build, describe=_describe)
