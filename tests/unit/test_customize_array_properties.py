"""Property tests: customizing an array picks properties of each item, and nothing else.

For any list of objects and any selection (and renaming) of their properties, the payload the
DuckDB snapshot store renders for `{array: items, properties: {new: old, …}}`:
  (a) never gives an item a property it lacks (never invents);
  (b) gives every selected property an item has, with the item's value (never drops);
  (c) keeps the items, in their order.
Items held as JSON keep a property whose value is null; items of a DuckDB LIST<STRUCT> cannot
tell null from missing, so there a null property is left out.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebbtide.config.models import MappingSpec, ModelSpec
from ebbtide.mapping.compiler import compile_mapping
from ebbtide.ports import ActionSpec, Operation
from ebbtide.snapshots.duckdb import DuckDBSnapshotStore

Item = dict[str, Any]
Selection = dict[str, str]  # destination property → item property

ACTION = ActionSpec("send", "takes any field")
MODEL = ModelSpec(source="warehouse", primary_key="id", sql="SELECT * FROM orders")

# Each example opens one store and renders every row of the example at once (about 0.1 s).
PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- strategies ----------------------------------------------------------------------------

# A small alphabet of names, so that selections and items overlap often.
ITEM_KEYS = ["a", "b", "c", "d"]
OUTPUT_NAMES = ["a", "b", "x", "y", "z"]  # renaming may also keep, or swap, the names

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(max_size=6),
    st.floats(allow_nan=False, allow_infinity=False),
)
json_values = st.one_of(
    scalars,
    st.dictionaries(st.sampled_from(ITEM_KEYS), scalars, max_size=3),
    st.lists(scalars, max_size=3),
)
json_items = st.dictionaries(st.sampled_from(ITEM_KEYS), json_values, max_size=len(ITEM_KEYS))
# Several rows per example, each with its own items.
json_rows = st.lists(st.lists(json_items, max_size=5), min_size=1, max_size=4)
selections = st.dictionaries(
    st.sampled_from(OUTPUT_NAMES), st.sampled_from(ITEM_KEYS), min_size=1, max_size=4
)

# LIST<STRUCT>: one type per property, as a warehouse column has.
STRUCT_ITEM = pa.struct(
    [
        pa.field("a", pa.int64()),
        pa.field("b", pa.string()),
        pa.field("c", pa.bool_()),
        pa.field("d", pa.struct([pa.field("x", pa.int64()), pa.field("y", pa.string())])),
    ]
)
_int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
struct_values = {
    "a": st.none() | _int64,
    "b": st.none() | st.text(max_size=6),
    "c": st.none() | st.booleans(),
    "d": st.none()
    | st.fixed_dictionaries({}, optional={"x": st.none() | _int64, "y": st.none() | st.text()}),
}
struct_items = st.none() | st.fixed_dictionaries({}, optional=struct_values)
struct_rows = st.lists(st.none() | st.lists(struct_items, max_size=5), min_size=1, max_size=4)


# -- running a mapping ---------------------------------------------------------------------


def customized(items: pa.Array, selection: Selection) -> list[Any]:
    """The `lines` field each row sends, for rows with ids 0, 1, … holding `items`."""
    table = pa.table({"id": pa.array(range(len(items)), pa.int64()), "items": items})
    fields = {"lines": {"array": "items", "properties": dict(selection)}}
    spec = MappingSpec(model="orders", destination="hook", action="send", fields=fields)
    mapping = compile_mapping("orders_out", spec, MODEL, ACTION)
    with tempfile.TemporaryDirectory() as state_dir:
        store = DuckDBSnapshotStore(Path(state_dir), mapping)
        try:
            store.stage(pa.RecordBatchReader.from_batches(table.schema, table.to_batches()))
            store.diff()
            out = store.outbound(frozenset(Operation), batch_size=100).read_all()
        finally:
            store.close()
    rows = sorted(out.to_pylist(), key=lambda r: r["__k0"])
    assert [r["__problem"] for r in rows] == [None] * len(items)
    return [json.loads(r["__record"])["data"]["lines"] for r in rows]


def json_text(rows: list[list[Item]]) -> pa.Array:
    return pa.array([json.dumps(items, ensure_ascii=False) for items in rows], pa.string())


def duckdb_json(rows: list[list[Item]]) -> pa.Array:
    return pa.ExtensionArray.from_storage(pa.json_(), json_text(rows))


def holding(rows: list[list[Item]], as_json_type: bool) -> pa.Array:
    return duckdb_json(rows) if as_json_type else json_text(rows)


# -- items held as JSON: a present null is kept ------------------------------------------------


@PROPERTY_SETTINGS
@given(rows=json_rows, selection=selections, as_json_type=st.booleans())
def test_customize_array_never_invents_a_property_an_item_lacks(
    rows: list[list[Item]], selection: Selection, as_json_type: bool
) -> None:
    sent = customized(holding(rows, as_json_type), selection)
    for items, lines in zip(rows, sent, strict=True):
        for item, line in zip(items, lines, strict=True):
            allowed = {name for name, source in selection.items() if source in item}
            assert set(line) <= allowed, (item, line)


@PROPERTY_SETTINGS
@given(rows=json_rows, selection=selections, as_json_type=st.booleans())
def test_customize_array_never_drops_a_selected_property_an_item_has(
    rows: list[list[Item]], selection: Selection, as_json_type: bool
) -> None:
    sent = customized(holding(rows, as_json_type), selection)
    for items, lines in zip(rows, sent, strict=True):
        for item, line in zip(items, lines, strict=True):
            for name, source in selection.items():
                if source in item:  # a null value is present too
                    assert name in line, (item, line)
                    assert line[name] == item[source], (name, item, line)


@PROPERTY_SETTINGS
@given(rows=json_rows, selection=selections, as_json_type=st.booleans())
def test_customize_array_keeps_every_item_in_order(
    rows: list[list[Item]], selection: Selection, as_json_type: bool
) -> None:
    sent = customized(holding(rows, as_json_type), selection)
    expected = [
        [{n: item[s] for n, s in selection.items() if s in item} for item in items]
        for items in rows
    ]
    assert [len(lines) for lines in sent] == [len(items) for items in rows]
    assert sent == expected  # item by item, in the model's order


# -- items of a LIST<STRUCT>: null or missing, the property is left out ------------------------


@PROPERTY_SETTINGS
@given(rows=struct_rows, selection=selections)
def test_customize_struct_list_leaves_out_null_or_missing_properties_and_keeps_the_rest(
    rows: list[list[Item | None] | None], selection: Selection
) -> None:
    items = pa.array(rows, pa.list_(STRUCT_ITEM))
    as_stored = items.to_pylist()  # absent properties become null, as in a warehouse
    sent = customized(items, selection)
    expected = [
        None
        if stored is None
        else [
            None
            if item is None
            else {n: item[s] for n, s in selection.items() if item[s] is not None}
            for item in stored
        ]
        for stored in as_stored
    ]
    assert sent == expected
