"""Acknowledgements: which records of a batch the destination's answer names, matched exactly.

A record counts as loaded only on the destination's word for it. An answer that names a key no
record of the batch was sent with (another form, such as "17" for 17; a key twice; a key it
made up) says nothing reliable about any record: it is refused whole, as a failure of the
destination to answer per its protocol, and the batch is sent again.

Keys match as JSON values: the same types, strings equal code point for code point, numbers
equal as exact decimals (17, 17.0 and 1.7e1 are one number; 17 and "17" are not), objects with
the same members in any order. Nothing else is forgiven.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa

from ebbtide.errors import DestinationError, ErrorClass
from ebbtide.ports import KEY_COLUMN, BatchResult, RecordRejection

_SHOWN = 200  # characters of a key quoted in a message


def not_acknowledged(message: str) -> DestinationError:
    """The answer cannot be matched to the batch: retried as a failure on the destination's
    side, and no record of the batch is settled until an answer can be."""
    return DestinationError(
        ErrorClass.SERVER_ERROR, f"{message}; no record of the batch counts as loaded"
    )


def canonical_key(key_json: str) -> str:
    """The one text of a key's JSON value: members sorted, numbers exact, no spacing."""
    value = json.loads(
        key_json, parse_float=Decimal, parse_int=Decimal, parse_constant=_no_constant
    )
    return _canonical(value)


def rejected_positions(records: pa.RecordBatch, result: BatchResult) -> dict[int, RecordRejection]:
    """Where each refused record sits in the batch; raises `not_acknowledged()` when the answer
    names a key that is not exactly one record's."""
    if not result.rejected and not result.accepted:
        return {}
    sent = records.column(KEY_COLUMN).to_pylist()
    at = _index(sent)
    positions: dict[int, RecordRejection] = {}
    named: set[int] = set()
    for key, rejection in [*((r.key, r) for r in result.rejected), *_oks(result)]:
        i = _position(key, at, sent)
        if i in named:
            raise not_acknowledged(f"the destination's answer names key {_shown(key)} twice")
        named.add(i)
        if rejection is not None:
            positions[i] = rejection
    return positions


def _oks(result: BatchResult) -> list[tuple[str, RecordRejection | None]]:
    return [(key, None) for key in result.accepted]


def _index(sent: list[Any]) -> dict[str, int | None]:
    """Canonical key → position; None where two records' keys cannot be told apart."""
    at: dict[str, int | None] = {}
    for i, key in enumerate(sent):
        canonical = canonical_key(str(key))
        at[canonical] = None if canonical in at else i
    return at


def _position(key: str, at: dict[str, int | None], sent: list[Any]) -> int:
    try:
        canonical = canonical_key(key)
    except (ValueError, RecursionError):  # JSONDecodeError included
        raise not_acknowledged(
            f"the destination's answer names key {_shown(key)}, which is not JSON"
        ) from None
    if canonical not in at:
        raise not_acknowledged(
            f"the destination's answer names key {_shown(key)} which is not in the batch"
            + _sent_as(key, sent)
        )
    position = at[canonical]
    if position is None:
        raise not_acknowledged(
            f"the destination's answer names key {_shown(key)}, which matches several records"
            " of the batch"
        )
    return position


def _sent_as(key: str, sent: list[Any]) -> str:
    """The key the answer most likely meant, when it only differs in form ("17" for 17)."""
    loose = _loose(key)
    for sent_key in sent:
        if _loose(str(sent_key)) == loose:
            return f" (sent as {_shown(str(sent_key))})"
    return ""


def _loose(key: str) -> str:
    """A key with every scalar as text: "17" and 17 read the same."""
    return json.dumps(_texts(json.loads(key, parse_float=Decimal)), sort_keys=True)


def _texts(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _texts(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_texts(v) for v in value]
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return str(value)


def _shown(key: str) -> str:
    return key if len(key) <= _SHOWN else key[:_SHOWN] + "…"


def json_text(value: Any) -> str:
    """A parsed JSON value (read with `parse_float=Decimal`) written back without losing a
    digit, members in their order: how an adapter passes on the key a destination named."""
    return _written(value, str, sort=False)


def _canonical(value: Any) -> str:
    return _written(value, _number, sort=True)


def _written(value: Any, number: Callable[[Decimal], str], *, sort: bool) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int | float):
        value = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not JSON")
        return number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(_written(v, number, sort=sort) for v in value) + "]"
    members = sorted(value.items()) if sort else list(value.items())
    return (
        "{"
        + ",".join(
            f"{_written(k, number, sort=sort)}:{_written(v, number, sort=sort)}" for k, v in members
        )
        + "}"
    )


def _number(value: Decimal) -> str:
    """Digits and exponent without trailing zeros: equal numbers, equal texts, exactly (the
    decimal context's normalize() would round to 28 digits)."""
    sign, digits, exponent = value.as_tuple()
    text = "".join(map(str, digits)).lstrip("0")
    if not text:
        return "0"
    assert isinstance(exponent, int)  # NaN and infinities never parse
    stripped = text.rstrip("0")
    exponent += len(text) - len(stripped)
    return f"{'-' if sign else ''}{stripped}e{exponent}"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@dataclass(frozen=True)
class Acknowledged:
    """A destination's answer matched to its batch: the records it refused, by position."""

    rejected_at: dict[int, RecordRejection]


def acknowledge(records: pa.RecordBatch, result: BatchResult) -> Acknowledged:
    """Match an answer to the batch it answers; raises when it cannot be (see the module)."""
    return Acknowledged(rejected_positions(records, result))
