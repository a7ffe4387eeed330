"""What ebbtide keeps or shows of records: sensitive fields and secrets masked.

A destination may echo a record's data in its answer, so a failure's message, code and
payload sample, and a run's error, are masked with the sensitive values of the whole batch
they came with, in every form (see `config.redact`). The sent-record journals keep the data as
sent, on purpose: a replay resends it exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from ebbtide.config.redact import Redactor

MAX_PAYLOAD_SAMPLE = 4096


class _Number(str):
    """A number as the record's JSON wrote it (`12.50`), not as a float would print it."""


def _number(literal: str) -> _Number:
    return _Number(literal)


def _parse(record_json: str) -> Any:
    return json.loads(record_json, parse_float=_number, parse_int=_number)


def sensitive_values(record: Any, sensitive: frozenset[str]) -> set[str]:
    """Every value of the record's sensitive fields, as text: each scalar of an object or an
    array, numbers and booleans also as JSON writes them. Nulls say nothing and are kept."""
    data = record.get("data") if isinstance(record, dict) else None
    if not isinstance(data, dict):
        return set()
    return {text for field in sensitive & data.keys() for text in _leaves(data[field])}


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, _Number):  # as written, and as a receiver may reprint it
        yield str(value)
        yield json.dumps(float(value) if "." in value or "e" in value.lower() else int(value))
    elif isinstance(value, bool | int | float):
        yield from (json.dumps(value), str(value))
    elif isinstance(value, str):
        yield value


def batch_redactor(
    records_json: Iterable[str], sensitive: frozenset[str], redact: Redactor
) -> Redactor:
    """Masks the secrets and every sensitive value of these records."""
    if not sensitive:
        return redact
    values: set[str] = set()
    for record_json in records_json:
        values |= sensitive_values(_parse(record_json), sensitive)
    return redact.with_values(values)


def payload_sample(record_json: str, sensitive: frozenset[str], redact: Redactor) -> str:
    """The payload as stored with a failure: sensitive fields replaced by the mask, every
    secret and sensitive value masked wherever else it appears, then cut to size (masking
    first, so that a secret across the cut is not half shown)."""
    if sensitive:
        record_json = masked(record_json, sensitive, redact.mask)
    return redact(record_json)[:MAX_PAYLOAD_SAMPLE]


def masked(record_json: str, sensitive: frozenset[str], mask: str = "***") -> str:
    """The record with the values of sensitive fields replaced by the mask."""
    try:
        record = json.loads(record_json)
    except ValueError:
        return record_json  # not JSON: the redactor masks the values themselves
    data = record.get("data") if isinstance(record, dict) else None
    if isinstance(data, dict):
        for field in sensitive & data.keys():
            data[field] = mask
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


def masked_record(record: Any, sensitive: frozenset[str], redact: Redactor) -> Any:
    """A record as `sync plan` shows it: sensitive fields masked, secrets out of every text."""
    redact = redact.with_values(sensitive_values(record, sensitive))
    if isinstance(record, dict) and isinstance(record.get("data"), dict):
        data = record["data"]
        record = {
            **record,
            "data": {k: redact.mask if k in sensitive else v for k, v in data.items()},
        }
    return _redacted(record, redact)


def _redacted(value: Any, redact: Redactor) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v, redact) for k, v in value.items()}  # keys: field names
    if isinstance(value, list):
        return [_redacted(item, redact) for item in value]
    return value
