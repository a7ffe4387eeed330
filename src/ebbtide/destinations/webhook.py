"""Webhooks: batches of records POSTed as JSON. The protocol is in docs/webhook-protocol.md."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from pydantic import Field, HttpUrl

from ebbtide.config.models import DeclaredField, DestinationConfig
from ebbtide.destinations import http
from ebbtide.destinations.http import (
    HttpAnswer,
    HttpClient,
    http_error,
    redirect_error,
)
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

if TYPE_CHECKING:  # yarl comes with the HTTP client, when a destination is made
    from yarl import URL

_ANSWER_EXCERPT = 120
_MAX_REDIRECTS = 5
_KEEPS_METHOD = frozenset({307, 308})  # 301, 302 and 303 let clients switch to GET
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9-]*\s+\S")
_CREDENTIAL_HEADER = re.compile(r"auth|key|token|secret|password|signature|cookie", re.I)


class WebhookConfig(DestinationConfig):
    secret_settings = ("headers",)

    # Both may carry `${VAR}` secrets: never part of a repr.
    url: HttpUrl = Field(repr=False)
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    timeout_s: float = Field(default=30.0, gt=0)
    # Off: a redirect fails the batch and names the new URL. On: a 307 or 308 to the same
    # origin is followed with the same POST (body and headers); nothing else ever is.
    follow_same_origin_redirects: bool = False
    # What the receiver accepts, when it has a fixed list; mappings are checked against it.
    fields: list[DeclaredField] | None = None

    def secret_values(self) -> list[str]:
        """The values of the headers that carry credentials (`${VAR}`s are secrets anyway);
        a Content-Type is no secret, and masking it would garble every message."""
        values = [v for k, v in self.headers.items() if v and _CREDENTIAL_HEADER.search(k)]
        # "Bearer <token>": the token is the secret, which a receiver may echo alone.
        return [v.split(None, 1)[1] if _SCHEME.match(v) else v for v in values]


class WebhookDestination:
    """POSTs `{"mapping", "action", "records": [...]}` over kept-alive connections."""

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self._client = HttpClient(
            "",
            headers={"Content-Type": "application/json", **config.headers},
            timeout_s=config.timeout_s,
            concurrency=config.concurrency,
        )

    async def open(self) -> None:
        await self._client.open()

    async def send(self, batch: OutboundBatch) -> BatchResult:
        records = ",".join(cast(list[str], batch.records.column(RECORD_COLUMN).to_pylist()))
        head = json.dumps({"mapping": batch.mapping, "action": batch.action})[:-1]
        body = f'{head},"records":[{records}]}}'.encode()
        from yarl import URL

        return await self._post(URL(str(self.config.url)), body, batch.idempotency_key)

    async def _post(self, url: URL, body: bytes, idempotency_key: str) -> BatchResult:
        """POST the batch; never follows a redirect that would change the request or its host."""
        for _ in range(_MAX_REDIRECTS + 1):
            answer = await self._client.request(
                "POST", url, body=body, headers={"Idempotency-Key": idempotency_key}
            )
            if answer.ok:
                return _acknowledgement(answer)
            if not 300 <= answer.status < 400:
                raise http_error(answer)
            target = _redirect_target(url, answer.headers.get("Location"))
            if not self._may_follow(url, answer.status, target):
                raise redirect_error(answer.status, target)
            url = cast("URL", target)
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
        await self._client.close()


def _acknowledgement(answer: HttpAnswer) -> BatchResult:
    if not answer.whole:
        raise _malformed(f"it is larger than {http.MAX_ANSWER_BYTES:,} bytes", answer.text)
    return answer_of(answer.text)


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
    # With pyarrow behind it: imported once there is an answer to read, not with the module.
    from ebbtide.engine.acknowledgement import json_text

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
    from yarl import URL

    try:
        return url.join(URL(location))
    except ValueError:
        return None


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
