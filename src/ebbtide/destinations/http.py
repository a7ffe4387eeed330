"""What every HTTP destination shares: the client session, the status-to-error-class table,
Retry-After and rate-limit headers, and the bounded reading of answers.

A destination module builds its request bodies and reads its vendor's per-record answers;
everything about talking HTTP safely is here, so each one gets it right the same way:

- redirects are never followed by the client (a POST would lose its body, credentials could
  reach another host): a 3xx is an answer like any other, and `http_error` words it;
- an answer is read up to a bound, so a destination cannot exhaust our memory;
- timeouts and connection failures become `timeout` and `network` errors (retried);
- a status becomes its error class (DESIGN.md's taxonomy), with the seconds the destination
  asked us to wait, from `Retry-After` or from the vendor's rate-limit headers.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from ebbtide.errors import DestinationError, ErrorClass

# aiohttp is imported when a run first sends (a sync with nothing to send never does), yarl
# when a client is made: loading a workspace imports the destination modules it names.
if TYPE_CHECKING:
    import aiohttp
    from yarl import URL

STATUS_CLASSES = {
    400: ErrorClass.VALIDATION,
    401: ErrorClass.AUTH,
    403: ErrorClass.PERMISSION,
    404: ErrorClass.NOT_FOUND,
    405: ErrorClass.NOT_FOUND,
    408: ErrorClass.TIMEOUT,
    409: ErrorClass.CONFLICT,
    410: ErrorClass.NOT_FOUND,
    413: ErrorClass.PAYLOAD_TOO_LARGE,
    422: ErrorClass.VALIDATION,
    429: ErrorClass.RATE_LIMITED,
}
BODY_EXCERPT = 300
# Results for the largest batch (100,000 records) with messages fit many times over.
MAX_ANSWER_BYTES = 64 << 20
_ANSWER_EXCERPT = 120


def json_text(value: Any) -> str:
    """Compact JSON in which a decimal stays the number it was: records are parsed with
    `parse_float=Decimal` so that no digit is lost, and json.dumps cannot write a Decimal."""
    if isinstance(value, dict):
        members = (
            f"{json.dumps(str(k), ensure_ascii=False)}:{json_text(v)}" for k, v in value.items()
        )
        return "{" + ",".join(members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(json_text(v) for v in value) + "]"
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a JSON number")
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def error_class_of(status: int) -> ErrorClass:
    """The error class of a non-2xx status: any 5xx is the destination's failure."""
    if status >= 500:
        return ErrorClass.SERVER_ERROR
    return STATUS_CLASSES.get(status, ErrorClass.VALIDATION)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds, from either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000" means UTC, without saying so
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


@dataclass(frozen=True)
class RateLimitHeaders:
    """How a vendor says how much of its allowance is left, and when it comes back.

    `reset` is read as `reset_unit`: seconds from now, milliseconds from now, or a Unix time
    in seconds. When `remaining` says nothing is left, the destination is paused until the
    reset; a 429 without Retry-After waits for the reset too.
    """

    remaining: str
    reset: str
    reset_unit: Literal["seconds", "milliseconds", "epoch"] = "seconds"

    def wait_s(self, headers: Mapping[str, str], *, spent: bool = False) -> float | None:
        """Seconds until the allowance is back, when it is spent (or `spent` says so)."""
        remaining = _number(headers.get(self.remaining))
        if not spent and (remaining is None or remaining > 0):
            return None
        reset = _number(headers.get(self.reset))
        if reset is None:
            return None
        if self.reset_unit == "milliseconds":
            reset /= 1000
        elif self.reset_unit == "epoch":
            reset -= time.time()
        return min(max(reset, 0.0), 3600.0)


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class HttpAnswer:
    """What the destination answered: status, headers and the body as text (whole or not)."""

    status: int
    headers: Mapping[str, str]
    text: str
    whole: bool = True

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self, what: str) -> Any:
        """The body as JSON (decimals kept exact); a body that is not is no acknowledgement."""
        if not self.whole:
            raise malformed(what, f"it is larger than {MAX_ANSWER_BYTES:,} bytes", self.text)
        try:
            return json.loads(self.text, parse_float=Decimal, parse_constant=_not_json)
        except RecursionError:
            raise malformed(what, "it is nested too deeply", self.text) from None
        except ValueError:
            raise malformed(what, "it is not JSON", self.text) from None


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def malformed(what: str, why: str, text: str) -> DestinationError:
    """A 2xx answer we cannot read: nothing it says counts, and the batch is sent again."""
    excerpt = " ".join(text.split())[:_ANSWER_EXCERPT]
    return DestinationError(
        ErrorClass.SERVER_ERROR,
        f"the destination answered 2xx with a body that is not {what} ({why}: {excerpt!r});"
        " no record of the batch counts as loaded",
    )


def http_error(
    answer: HttpAnswer,
    *,
    message: str | None = None,
    error_class: ErrorClass | None = None,
    rate_limit: RateLimitHeaders | None = None,
) -> DestinationError:
    """A non-2xx answer as the error it is, with how long the destination asked us to wait."""
    if 300 <= answer.status < 400:
        return redirect_error(answer.status, answer.headers.get("Location"))
    excerpt = message or " ".join(answer.text.split())[:BODY_EXCERPT] or "(empty body)"
    error_class = error_class or error_class_of(answer.status)
    wait = parse_retry_after(answer.headers.get("Retry-After"))
    if wait is None and rate_limit is not None:
        spent = error_class is ErrorClass.RATE_LIMITED
        wait = rate_limit.wait_s(answer.headers, spent=spent)
    return DestinationError(
        error_class,
        f"HTTP {answer.status}: {excerpt}",
        code=str(answer.status),
        http_status=answer.status,
        retry_after=wait,
    )


def redirect_error(status: int, location: URL | str | None) -> DestinationError:
    """A redirect is a failure that names where the destination says it went."""
    where = f"redirects to {location}" if location else "redirects without a Location"
    return DestinationError(
        ErrorClass.NOT_FOUND,
        f"HTTP {status}: the destination's URL {where}; redirects are not followed (a POST"
        " would lose its body, and the configured headers must not go to another address),"
        " so nothing was delivered. If the new address is right, set the destination's url"
        " to it",
        code=str(status),
        http_status=status,
    )


class HttpClient:
    """One destination's kept-alive connections for one run (`open` … `close`)."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
        concurrency: int = 4,
        auth: aiohttp.BasicAuth | None = None,
    ) -> None:
        from yarl import URL

        self.base_url = URL(base_url.rstrip("/") + "/") if base_url else URL()
        self.timeout_s = timeout_s
        self._headers = dict(headers or {})
        self._concurrency = concurrency
        self._auth = auth
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._concurrency),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers=self._headers,
            auth=self._auth,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> HttpClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def url(self, path: str) -> URL:
        """`path` under the base URL ("/crm/v3/…" or "crm/v3/…"); a full URL as it is."""
        from yarl import URL

        target = URL(path)
        if target.is_absolute():
            return target
        return self.base_url.join(URL(path.lstrip("/")))

    async def request(
        self,
        method: str,
        path: str | URL,
        *,
        body: bytes | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> HttpAnswer:
        """One request; any status is an answer (redirects are returned, never followed)."""
        import aiohttp
        from yarl import URL

        if self._session is None:
            await self.open()
        assert self._session is not None
        url = path if isinstance(path, URL) else self.url(path)
        if json_body is not None:
            body = json_text(json_body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        try:
            async with self._session.request(
                method,
                url,
                data=body,
                headers=headers,
                params=params,
                allow_redirects=False,  # aiohttp would turn a 301/302 POST into a bodiless GET
            ) as response:
                text, whole = await _read_answer(response)
                return HttpAnswer(response.status, response.headers, text, whole)
        except TimeoutError as exc:
            raise DestinationError(
                ErrorClass.TIMEOUT, f"no answer within {self.timeout_s:g}s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise DestinationError(ErrorClass.NETWORK, f"{type(exc).__name__}: {exc}") from exc


async def _read_answer(response: aiohttp.ClientResponse) -> tuple[str, bool]:
    """The body as text, and whether it is whole. JSON is UTF-8; other bytes must not crash
    the run, only fail the batch."""
    data = bytearray()
    async for chunk in response.content.iter_chunked(1 << 16):
        data += chunk
        if len(data) > MAX_ANSWER_BYTES:
            return data[:_ANSWER_EXCERPT].decode("utf-8", errors="replace"), False
    return data.decode("utf-8", errors="replace"), True
