"""Webhooks: batches of records POSTed as JSON. The protocol is in docs/webhook-protocol.md."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, cast

import aiohttp
from pydantic import Field, HttpUrl

from ebbtide.config.models import DeclaredField, DestinationConfig
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


class WebhookConfig(DestinationConfig):
    # Both may carry `${VAR}` secrets: never part of a repr.
    url: HttpUrl = Field(repr=False)
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    timeout_s: float = Field(default=30.0, gt=0)
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
            async with self._session.post(
                str(self.config.url), data=body, headers={"Idempotency-Key": batch.idempotency_key}
            ) as response:
                text = await response.text()
                if 200 <= response.status < 300:
                    return _rejections(text)
                raise _http_error(response.status, text, response.headers.get("Retry-After"))
        except TimeoutError as exc:
            raise DestinationError(
                ErrorClass.TIMEOUT, f"no answer within {self.config.timeout_s:g}s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise DestinationError(ErrorClass.NETWORK, f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _rejections(text: str) -> BatchResult:
    """A 2xx body may list records it refused; every key it does not list was accepted."""
    if not text.strip():
        return BatchResult()
    try:
        answer = json.loads(text)
    except json.JSONDecodeError:
        return BatchResult()
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list):
        return BatchResult()
    return BatchResult(tuple(_rejection(item) for item in results if _refused(item)))


def _refused(item: Any) -> bool:
    return isinstance(item, dict) and "key" in item and item.get("ok") is False


def _rejection(item: dict[str, Any]) -> RecordRejection:
    try:
        error_class = ErrorClass(item.get("error_class", "validation"))
    except ValueError:
        error_class = ErrorClass.VALIDATION
    return RecordRejection(
        key=json.dumps(item["key"]),
        error_class=error_class,
        message=str(item.get("message") or "rejected by the destination"),
        code=str(item["code"]) if item.get("code") is not None else None,
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
