"""Keys go out in one canonical JSON form and come back matched to exactly their record.

Each property stages real rows in the DuckDB snapshot store, takes the keys of the outbound
records as the engine sends them, and lets a receiver parse each key and write it back as its
JSON library does: the answer must name that record and no other. A key in another form (17
for "17", a rounded decimal) must name none, and the batch must not be acknowledged.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ebbtide.config.models import SyncMode
from ebbtide.engine.acknowledgement import canonical_key, rejected_positions
from ebbtide.errors import DestinationError, ErrorClass, ModelError
from ebbtide.mapping.compiler import CompiledMapping, column_field
from ebbtide.ports import KEY_COLUMN, BatchResult, Operation, RecordRejection
from ebbtide.snapshots.duckdb import DuckDBSnapshotStore

MAPPING = CompiledMapping(
    name="things",
    model="things",
    destination="hook",
    action="upsert",
    mode=SyncMode.MIRROR,
    key_columns=("k",),
    fields=(column_field("note", "note"),),
)
COMPOSITE = replace(MAPPING, key_columns=("k", "part"))
PROPERTY = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
INT64 = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
NAIVE = st.datetimes()  # year 1 to 9999
AWARE = st.datetimes(
    min_value=datetime.fromisoformat("0001-01-02"),  # a day in: UTC+14 stays in year 1
    max_value=datetime.fromisoformat("9999-12-30"),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone.max]),
)


def sent_keys(tmp_path: Path, columns: dict[str, Any]) -> pa.RecordBatch:
    """The outbound records of a first sync of these rows (every one of them is added)."""
    mapping = COMPOSITE if "part" in columns else MAPPING
    size = len(next(iter(columns.values())))
    table = pa.table({**columns, "note": pa.array(["n"] * size)})
    store = DuckDBSnapshotStore(tmp_path / uuid.uuid4().hex, mapping)
    try:
        store.stage(pa.RecordBatchReader.from_batches(table.schema, table.to_batches()))
        store.check_keys()
        store.diff()
        records = store.outbound(frozenset({Operation.ADDED}), 100_000).read_all()
    finally:
        store.close()
    return records.combine_chunks().to_batches()[0]


def keys_of(batch: pa.RecordBatch) -> list[str]:
    return [str(key) for key in batch.column(KEY_COLUMN).to_pylist()]


def refusal(key: str) -> BatchResult:
    return BatchResult((RecordRejection(key, ErrorClass.VALIDATION, "refused"),))


def python_echo(key: str) -> str:
    """What a receiver built on Python's json module answers: parsed, written back ASCII-only."""
    return json.dumps(json.loads(key))


def each_echo_names_its_own_record(batch: pa.RecordBatch, echo: Callable[[str], str]) -> None:
    for i, key in enumerate(keys_of(batch)):
        assert list(rejected_positions(batch, refusal(echo(key)))) == [i], key


def unique(values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(values, min_size=1, max_size=12, unique=True)


# -- every key type the sources produce round-trips ----------------------------------------


@PROPERTY
@given(unique(INT64))
@example([-(2**63), 2**63 - 1, 0, -1, 2**53 + 1])
def test_int64_keys_are_sent_as_exact_json_integers(tmp_path: Path, ids: list[int]) -> None:
    batch = sent_keys(tmp_path, {"k": pa.array(ids, pa.int64())})
    assert sorted(json.loads(k) for k in keys_of(batch)) == sorted(ids)
    each_echo_names_its_own_record(batch, python_echo)


@PROPERTY
@given(unique(st.integers(0, 2**64 - 1)))
@example([2**64 - 1, 2**63])
def test_uint64_keys_are_sent_as_exact_json_integers(tmp_path: Path, ids: list[int]) -> None:
    batch = sent_keys(tmp_path, {"k": pa.array(ids, pa.uint64())})
    assert sorted(json.loads(k) for k in keys_of(batch)) == sorted(ids)
    each_echo_names_its_own_record(batch, python_echo)


@PROPERTY
@given(unique(TEXT))
@example(['"', "\\", 'a"b\\c', "é", "\u2028", "😀", "17", "</script>", "[/bold]"])
def test_string_keys_round_trip_whatever_their_characters(tmp_path: Path, ids: list[str]) -> None:
    batch = sent_keys(tmp_path, {"k": pa.array(ids, pa.string())})
    assert sorted(json.loads(k) for k in keys_of(batch)) == sorted(ids)
    each_echo_names_its_own_record(batch, python_echo)


@PROPERTY
@given(unique(st.decimals(min_value=-(10**27), max_value=10**27, places=10)))
@example([Decimal("12345678901234567890.1234567890"), Decimal("12345678901234567890.1234567891")])
@example([Decimal("1.5000000000"), Decimal("0E-10"), Decimal("-0.0000000001")])
def test_decimal_keys_keep_every_digit(tmp_path: Path, ids: list[Decimal]) -> None:
    batch = sent_keys(tmp_path, {"k": pa.array(ids, pa.decimal128(38, 10))})
    keys = keys_of(batch)
    assert sorted(json.loads(k, parse_float=Decimal, parse_int=Decimal) for k in keys) == sorted(
        ids
    )
    each_echo_names_its_own_record(batch, lambda key: str(json.loads(key, parse_float=Decimal)))


@PROPERTY
@given(unique(st.floats(allow_nan=False, allow_infinity=False, width=64)))
@example([0.1, 1e20, 1e-7, 5e-324, 1.7976931348623157e308])
def test_double_keys_round_trip_through_a_json_float(tmp_path: Path, ids: list[float]) -> None:
    ids = list({x + 0.0 for x in ids})  # -0.0 and 0.0 are one key
    batch = sent_keys(tmp_path, {"k": pa.array(ids, pa.float64())})
    assert sorted(json.loads(k) for k in keys_of(batch)) == sorted(ids)
    each_echo_names_its_own_record(batch, python_echo)


@PROPERTY
@given(unique(st.dates()))
@example([date(1, 1, 1), date(9999, 12, 31), date(2024, 2, 29)])
def test_date_keys_are_iso_8601(tmp_path: Path, ids: list[date]) -> None:
    batch = sent_keys(tmp_path, {"k": pa.array(ids, pa.date32())})
    keys = sorted(json.loads(k) for k in keys_of(batch))
    assert keys == sorted(d.isoformat() for d in ids)
    each_echo_names_its_own_record(batch, python_echo)


@PROPERTY
@given(unique(NAIVE))
@example(
    [datetime.fromisoformat("2024-01-01"), datetime.fromisoformat("2024-01-01T00:00:00.000001")]
)
def test_naive_timestamp_keys_are_iso_8601(tmp_path: Path, ids: list[datetime]) -> None:
    batch = sent_keys(tmp_path, {"k": pa.array(ids, pa.timestamp("us"))})
    keys = sorted(json.loads(k) for k in keys_of(batch))
    assert keys == sorted(t.isoformat(timespec="microseconds") for t in ids)
    each_echo_names_its_own_record(batch, python_echo)


@PROPERTY
@given(unique(AWARE))
def test_aware_timestamp_keys_are_iso_8601_in_utc(tmp_path: Path, ids: list[datetime]) -> None:
    instants = list({t.astimezone(UTC) for t in ids})  # one instant, one key
    batch = sent_keys(tmp_path, {"k": pa.array(instants, pa.timestamp("us", tz="UTC"))})
    keys = sorted(json.loads(k) for k in keys_of(batch))
    expected = [t.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z" for t in instants]
    assert keys == sorted(expected)
    each_echo_names_its_own_record(batch, python_echo)


def test_nanosecond_timestamp_keys_keep_their_nanoseconds(tmp_path: Path) -> None:
    # Sent to the microsecond, these two rows would reach the destination as one key.
    ids = pa.array([1_704_067_200_000_000_001, 1_704_067_200_000_000_002], pa.timestamp("ns"))
    batch = sent_keys(tmp_path, {"k": ids})
    assert sorted(keys_of(batch)) == [
        '"2024-01-01T00:00:00.000000001"',
        '"2024-01-01T00:00:00.000000002"',
    ]


@PROPERTY
@given(unique(st.uuids()))
def test_uuid_keys_are_strings(tmp_path: Path, ids: list[uuid.UUID]) -> None:
    batch = sent_keys(tmp_path, {"k": pa.array([str(u) for u in ids], pa.string())})
    keys = sorted(json.loads(k) for k in keys_of(batch))
    assert keys == sorted(str(u) for u in ids)
    each_echo_names_its_own_record(batch, python_echo)


@PROPERTY
@given(unique(st.binary(max_size=20)))
def test_binary_keys_are_base64_strings(tmp_path: Path, ids: list[bytes]) -> None:
    batch = sent_keys(tmp_path, {"k": pa.array(ids, pa.binary())})
    each_echo_names_its_own_record(batch, python_echo)


@PROPERTY
@given(unique(st.tuples(INT64, TEXT)))
def test_composite_keys_match_whatever_order_the_receiver_writes_members_in(
    tmp_path: Path, ids: list[tuple[int, str]]
) -> None:
    columns = {
        "k": pa.array([k for k, _ in ids], pa.int64()),
        "part": pa.array([p for _, p in ids], pa.string()),
    }
    batch = sent_keys(tmp_path, columns)
    for key in keys_of(batch):
        assert list(json.loads(key)) == ["k", "part"]  # the declared order of the primary key
    each_echo_names_its_own_record(batch, python_echo)
    each_echo_names_its_own_record(batch, lambda key: json.dumps(json.loads(key), sort_keys=True))
    reversed_members = {k: v for k, v in reversed(json.loads(keys_of(batch)[0]).items())}
    assert list(rejected_positions(batch, refusal(json.dumps(reversed_members)))) == [0]


@PROPERTY
@given(unique(st.tuples(st.dates(), NAIVE)))
def test_composite_keys_of_dates_and_timestamps_round_trip(
    tmp_path: Path, ids: list[tuple[date, datetime]]
) -> None:
    columns = {
        "k": pa.array([k for k, _ in ids], pa.date32()),
        "part": pa.array([p for _, p in ids], pa.timestamp("us")),
    }
    each_echo_names_its_own_record(sent_keys(tmp_path, columns), python_echo)


# -- a key in another form names no record --------------------------------------------------


def not_acknowledged(batch: pa.RecordBatch, key: str) -> str:
    with pytest.raises(DestinationError) as raised:
        rejected_positions(batch, refusal(key))
    assert raised.value.error_class is ErrorClass.SERVER_ERROR  # retried, then failed
    return raised.value.message


@PROPERTY
@given(unique(INT64))
def test_an_integer_key_echoed_as_a_string_matches_no_record(
    tmp_path: Path, ids: list[int]
) -> None:
    batch = sent_keys(tmp_path, {"k": pa.array(ids, pa.int64())})
    key = keys_of(batch)[0]
    message = not_acknowledged(batch, json.dumps(key))
    assert f"names key {json.dumps(key)} which is not in the batch (sent as {key})" in message


@PROPERTY
@given(unique(st.integers(0, 10**12).map(str)))
def test_a_string_key_echoed_as_a_number_matches_no_record(tmp_path: Path, ids: list[str]) -> None:
    batch = sent_keys(tmp_path, {"k": pa.array(ids, pa.string())})
    key = keys_of(batch)[0]
    message = not_acknowledged(batch, json.loads(key))
    assert "which is not in the batch (sent as " in message


def test_a_decimal_key_rounded_by_a_float_parser_matches_no_record(tmp_path: Path) -> None:
    ids = [Decimal("12345678901234567890.1234567890"), Decimal("12345678901234567890.1234567891")]
    batch = sent_keys(tmp_path, {"k": pa.array(ids, pa.decimal128(38, 10))})
    rounded = json.dumps(json.loads(keys_of(batch)[0]))  # through a double
    not_acknowledged(batch, rounded)


def test_a_composite_key_with_a_member_more_or_less_matches_no_record(tmp_path: Path) -> None:
    columns = {"k": pa.array([1, 2], pa.int64()), "part": pa.array(["a", "b"], pa.string())}
    batch = sent_keys(tmp_path, columns)
    not_acknowledged(batch, '{"k": 1, "part": "a", "extra": 1}')
    not_acknowledged(batch, '{"k": 1}')
    not_acknowledged(batch, "1")


def test_numbers_match_by_exact_value_whatever_their_notation() -> None:
    assert canonical_key("17") == canonical_key("17.0") == canonical_key("1.7e1")
    assert canonical_key("17") != canonical_key('"17"')
    assert canonical_key("0.1") != canonical_key("0.10000000000000001")
    assert canonical_key('{"a": 1, "b": [1, 2]}') == canonical_key('{"b":[1,2.0],"a":1}')


# -- keys JSON cannot carry are refused before sending --------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_nan_or_infinite_key_fails_the_run_before_anything_is_sent(
    tmp_path: Path, bad: float
) -> None:
    with pytest.raises(ModelError) as raised:
        sent_keys(tmp_path, {"k": pa.array([1.0, bad, 2.5], pa.float64())})
    assert "1 row(s) have a primary key that is NaN or infinite (k)" in str(raised.value)
    assert "nothing was sent" in str(raised.value)
    assert len(raised.value.samples) == 1
    assert str(bad).lower().lstrip("-")[:3] in raised.value.samples[0].lower()


def test_a_nan_part_of_a_composite_key_is_refused_naming_the_row(tmp_path: Path) -> None:
    columns = {
        "k": pa.array([1.0, float("nan")], pa.float64()),
        "part": pa.array(["a", "b"], pa.string()),
    }
    with pytest.raises(ModelError, match="NaN or infinite") as raised:
        sent_keys(tmp_path, columns)
    assert '"part":"b"' in raised.value.samples[0]
