"""The webhook protocol's parsing: 2xx answers, Retry-After, HTTP status → error class."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime

import pytest

from ebbtide.destinations.http import HttpAnswer, http_error, json_text, parse_retry_after
from ebbtide.destinations.webhook import answer_of
from ebbtide.errors import DestinationError, ErrorClass
from ebbtide.ports import BatchResult, RecordRejection


def _http_error(status: int, text: str, retry_after: str | None) -> DestinationError:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return http_error(HttpAnswer(status, headers, text))


def test_an_empty_2xx_body_or_an_object_without_results_accepts_the_whole_batch() -> None:
    for body in ("", "  \n", "{}", '{"status": "queued"}', '{"results": []}'):
        assert answer_of(body) == BatchResult(), body


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("OK", "it is not JSON"),
        ("<html><body>OK</body></html>", "it is not JSON"),
        ('{"results": [{"key": 1, "ok": fa', "it is not JSON"),
        ("[1, 2]", "it is not a JSON object"),
        ('{"results": "ok"}', '"results" is not a list'),
        ('{"results": null}', '"results" is not a list'),
        ('{"results": [{"ok": false}]}', 'result 1 is not an object with a "key"'),
        ('{"results": [{"key": 1, "ok": true}, "junk"]}', "result 2 is not an object"),
        ('{"results": [{"key": 4}]}', 'result 1 has no "ok": true or false'),
        ('{"results": [{"key": 4, "ok": "no"}]}', 'result 1 has no "ok": true or false'),
        ('{"results": [{"key": NaN, "ok": false}]}', "it is not JSON"),
        pytest.param("[" * 100_000 + "]" * 100_000, "nested too deeply", id="deep-body"),
        pytest.param(
            '{"results": [{"ok": false, "key": ' + "[" * 5000 + "]" * 5000 + "}]}",
            "nested too deeply",
            id="deep-key",
        ),
    ],
)
def test_a_2xx_body_that_is_not_the_protocols_acknowledges_nothing(body: str, says: str) -> None:
    with pytest.raises(DestinationError) as raised:
        answer_of(body)
    error = raised.value
    assert error.error_class is ErrorClass.SERVER_ERROR  # retried, then failed: never loaded
    assert says in error.message
    assert "no record of the batch counts as loaded" in error.message


def test_results_name_refused_and_accepted_keys_exactly_as_the_destination_wrote_them() -> None:
    body = """{"results": [
        {"key": 1, "ok": true},
        {"key": 2, "ok": false, "code": "INVALID_EMAIL", "message": "email: bad",
         "error_class": "validation"},
        {"key": {"b": 2, "a": 1.50}, "ok": false, "error_class": "conflict"},
        {"key": "17", "ok": true},
        {"key": 12345678901234567890.1234567890, "ok": true}
    ]}"""
    assert answer_of(body) == BatchResult(
        rejected=(
            RecordRejection("2", ErrorClass.VALIDATION, "email: bad", "INVALID_EMAIL"),
            RecordRejection('{"b":2,"a":1.50}', ErrorClass.CONFLICT, "rejected by the destination"),
        ),
        accepted=("1", '"17"', "12345678901234567890.1234567890"),
    )


def test_an_unknown_or_missing_error_class_means_validation() -> None:
    body = '{"results": [{"key": "a", "ok": false, "error_class": "teapot", "code": 7}]}'
    (rejection,) = answer_of(body).rejected
    assert (rejection.key, rejection.error_class, rejection.code) == (
        '"a"',
        ErrorClass.VALIDATION,
        "7",
    )


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, ErrorClass.VALIDATION),
        (401, ErrorClass.AUTH),
        (403, ErrorClass.PERMISSION),
        (404, ErrorClass.NOT_FOUND),
        (408, ErrorClass.TIMEOUT),
        (409, ErrorClass.CONFLICT),
        (413, ErrorClass.PAYLOAD_TOO_LARGE),
        (422, ErrorClass.VALIDATION),
        (429, ErrorClass.RATE_LIMITED),
        (500, ErrorClass.SERVER_ERROR),
        (502, ErrorClass.SERVER_ERROR),
        (503, ErrorClass.SERVER_ERROR),
        (504, ErrorClass.SERVER_ERROR),
    ],
)
def test_http_status_maps_to_its_error_class(status: int, error_class: ErrorClass) -> None:
    error = _http_error(status, "", None)
    assert (error.error_class, error.http_status, error.code) == (error_class, status, str(status))


def test_only_auth_and_permission_answers_stop_the_run_and_only_transient_ones_retry() -> None:
    fatal = {s for s in (400, 401, 403, 404, 409, 413, 422, 429, 500) if _fatal(s)}
    retried = {s for s in (400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 503) if _retried(s)}
    assert fatal == {401, 403}
    assert retried == {408, 429, 500, 503}


def _fatal(status: int) -> bool:
    return _http_error(status, "", None).error_class.fatal


def _retried(status: int) -> bool:
    return _http_error(status, "", None).error_class.retriable


def test_error_message_holds_a_short_single_line_body_excerpt() -> None:
    error = _http_error(400, "bad\n\n   field   email\t" + "x" * 1000, "3")
    assert error.message.startswith("HTTP 400: bad field email x")
    assert len(error.message) <= len("HTTP 400: ") + 300
    assert error.retry_after == 3.0
    assert _http_error(500, "", None).message == "HTTP 500: (empty body)"


def test_retry_after_in_seconds() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None


def test_retry_after_as_an_http_date() -> None:
    later = datetime.now(UTC) + timedelta(seconds=30)
    seconds = parse_retry_after(format_datetime(later, usegmt=True))
    assert seconds is not None and 25 <= seconds <= 30
    past = datetime.now(UTC) - timedelta(hours=1)
    assert parse_retry_after(format_datetime(past, usegmt=True)) == 0.0


def test_retry_after_date_in_minus_0000_zone_is_read_as_utc() -> None:
    # RFC 5322 "-0000" makes parsedate_to_datetime return a naive datetime; subtracting it
    # from an aware one raised TypeError, which crashed the whole run from inside send().
    later = datetime.now(UTC) + timedelta(seconds=30)
    seconds = parse_retry_after(later.strftime("%a, %d %b %Y %H:%M:%S -0000"))
    assert seconds is not None and 25 <= seconds <= 30


def test_retry_after_that_is_not_a_finite_number_is_ignored() -> None:
    # float() accepts "nan" and "inf"; asyncio.sleep(nan) never returns, so one odd header
    # would hang the run (its heartbeat keeping the mapping's lease) forever.
    for value in ("nan", "NaN", "inf", "-inf", "Infinity"):
        seconds = parse_retry_after(value)
        assert seconds is None or math.isfinite(seconds), value


def test_json_text_keeps_decimals_exact_and_refuses_what_json_cannot_hold() -> None:
    value = {"ltv": Decimal("12345678901234567890.1234567890"), "tags": ["é", 1, None, True]}
    text = json_text(value)
    assert text == '{"ltv":12345678901234567890.1234567890,"tags":["é",1,null,true]}'
    assert json.loads(text, parse_float=Decimal)["ltv"] == value["ltv"]
    with pytest.raises(ValueError, match="not a JSON number"):
        json_text({"x": Decimal("NaN")})
