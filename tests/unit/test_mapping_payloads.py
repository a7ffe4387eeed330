"""Payloads as the DuckDB snapshot store renders them: objects, arrays, paths, static values
and types, each read back from the outbound `__record` of a real stage → diff → outbound.

Model rows are built by an in-memory DuckDB, so columns carry the real STRUCT, LIST, MAP and
JSON types a warehouse hands over.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from ebbtide.config.models import FieldType, MappingSpec, ModelSpec
from ebbtide.mapping.compiler import compile_mapping
from ebbtide.ports import ActionSpec, FieldSpec, Operation
from ebbtide.snapshots.duckdb import DuckDBSnapshotStore

ANY_FIELDS = ActionSpec("send", "takes any field")
MODEL = ModelSpec(source="warehouse", primary_key="id", sql="SELECT * FROM rows")
JSON_EXTENSION = "arrow.json"

# The products of the order_completed example, as JSON text.
PRODUCTS_JSON = (
    '[{"currency":"USD","price":40,"productName":"jacket",'
    '"purchaseTime":"2021-12-17 23:43:47.102","quantity":1},'
    '{"currency":"USD","price":5,"productName":"socks","quantity":2}]'
)
PRODUCT_LINES = {"name": "productName", "time": "purchaseTime"}


def model(sql: str, *, json_columns: bool = False) -> pa.Table:
    """The rows of `sql`; with `json_columns`, DuckDB JSON columns arrive as `arrow.json`."""
    con = duckdb.connect()
    if json_columns:
        con.execute("SET arrow_lossless_conversion = true")
    table = con.execute(sql).to_arrow_table()
    con.close()
    return table


@dataclass(frozen=True)
class Sent:
    """One outbound row: the record's data, its problem and the typed field columns."""

    data: Any
    problem: str | None
    record: str
    columns: dict[str, Any]


def sent(
    tmp_path: Path,
    table: pa.Table,
    fields: dict[str, Any],
    action: ActionSpec = ANY_FIELDS,
) -> list[Sent]:
    """Every row of `table` as it would be sent for the first time, ordered by id."""
    spec = MappingSpec(model="rows", destination="hook", action=action.name, fields=fields)
    mapping = compile_mapping("rows_out", spec, MODEL, action)
    store = DuckDBSnapshotStore(tmp_path / "state", mapping)
    try:
        store.stage(pa.RecordBatchReader.from_batches(table.schema, table.to_batches()))
        store.diff()
        out = store.outbound(frozenset(Operation), batch_size=100).read_all()
    finally:
        store.close()
    rows = sorted(out.to_pylist(), key=lambda r: r["__k0"])
    return [
        Sent(
            data=json.loads(r["__record"])["data"],
            problem=r["__problem"],
            record=r["__record"],
            columns={n: r[n] for n in fields},
        )
        for r in rows
    ]


def data_of(tmp_path: Path, table: pa.Table, fields: dict[str, Any]) -> list[Any]:
    """The data of each row, after checking that no row has a problem."""
    rows = sent(tmp_path, table, fields)
    assert [r.problem for r in rows] == [None] * len(rows)
    return [r.data for r in rows]


def typed(*fields: tuple[str, FieldType]) -> ActionSpec:
    return ActionSpec("send", "typed fields", fields=tuple(FieldSpec(n, t) for n, t in fields))


# -- select object -----------------------------------------------------------------------------

OBJECT_COLUMNS = {
    "struct": ("{'sku': 'A1', 'qty': 2}", False),
    "map": ("MAP {'sku': 'A1', 'qty': '2'}", False),
    "json-text": ('\'{"sku":"A1","qty":2}\'', False),
    "duckdb-json": ('\'{"sku":"A1","qty":2}\'::JSON', True),
}


@pytest.mark.parametrize("holder", list(OBJECT_COLUMNS), ids=list(OBJECT_COLUMNS))
def test_select_object_sends_the_whole_object_whatever_column_holds_it(
    tmp_path: Path, holder: str
) -> None:
    expression, json_columns = OBJECT_COLUMNS[holder]
    table = model(f"SELECT 1 AS id, {expression} AS product", json_columns=json_columns)
    [data] = data_of(tmp_path, table, {"product": {"object": "product"}})
    qty = "2" if holder == "map" else 2  # a MAP's values share one type: here VARCHAR
    assert data == {"product": {"sku": "A1", "qty": qty}}


@pytest.mark.parametrize(
    ("expression", "json_columns"),
    [
        ("NULL::STRUCT(sku VARCHAR)", False),
        ("NULL::MAP(VARCHAR, INTEGER)", False),
        ("NULL::VARCHAR", False),
        ("NULL::JSON", True),
    ],
    ids=["struct", "map", "json-text", "duckdb-json"],
)
def test_select_object_of_a_null_column_sends_null(
    tmp_path: Path, expression: str, json_columns: bool
) -> None:
    table = model(f"SELECT 1 AS id, {expression} AS product", json_columns=json_columns)
    [data] = data_of(tmp_path, table, {"product": {"object": "product"}})
    assert data == {"product": None}


def test_select_object_keeps_nested_objects_and_arrays(tmp_path: Path) -> None:
    table = model(
        "SELECT 1 AS id, {'sku': 'A1', 'dims': {'width': 3, 'height': 4}, 'tags': ['a', 'b']}"
        " AS product"
    )
    [data] = data_of(tmp_path, table, {"product": {"object": "product"}})
    assert data == {"product": {"sku": "A1", "dims": {"width": 3, "height": 4}, "tags": ["a", "b"]}}


# -- customize object --------------------------------------------------------------------------


def test_customize_object_picks_and_renames_properties_of_a_struct(tmp_path: Path) -> None:
    table = model("SELECT 1 AS id, {'id': 'sku1', 'color': 'red', 'size': 'M'} AS product")
    fields = {"item": {"object": "product", "properties": {"sku": "id", "colour": "color"}}}
    [data] = data_of(tmp_path, table, fields)
    assert data == {"item": {"sku": "sku1", "colour": "red"}}  # size not selected: left out


@pytest.mark.parametrize(
    ("expression", "json_columns"),
    [
        ("{'dims': {'width': 10, 'height': 20}, 'name': 'box'}", False),
        ('\'{"dims":{"width":10,"height":20},"name":"box"}\'', False),
        ('\'{"dims":{"width":10,"height":20},"name":"box"}\'::JSON', True),
    ],
    ids=["struct", "json-text", "duckdb-json"],
)
def test_customize_object_follows_dotted_paths_into_nested_properties(
    tmp_path: Path, expression: str, json_columns: bool
) -> None:
    table = model(f"SELECT 1 AS id, {expression} AS product", json_columns=json_columns)
    fields = {"item": {"object": "product", "properties": {"width": "dims.width", "n": "name"}}}
    [data] = data_of(tmp_path, table, fields)
    assert data == {"item": {"width": 10, "n": "box"}}


def test_customize_object_takes_a_name_the_struct_lacks_from_the_model_column(
    tmp_path: Path,
) -> None:
    table = model("SELECT 1 AS id, {'id': 'sku1'} AS product, 99.5::DOUBLE AS revenue")
    fields = {"item": {"object": "product", "properties": {"sku": "id", "price": "revenue"}}}
    [data] = data_of(tmp_path, table, fields)
    assert data == {"item": {"sku": "sku1", "price": 99.5}}


def test_a_struct_property_wins_over_a_model_column_of_the_same_name(tmp_path: Path) -> None:
    table = model("SELECT 7 AS id, {'id': 'sku1'} AS product")
    fields = {"item": {"object": "product", "properties": {"sku": "id"}}}
    [data] = data_of(tmp_path, table, fields)
    assert data == {"item": {"sku": "sku1"}}  # not the row's id 7


def test_customize_object_takes_column_sources_and_static_values(tmp_path: Path) -> None:
    table = model(
        "SELECT 1 AS id, {'id': 'sku1'} AS product, {'city': 'Paris'} AS address, 'a@x.io' AS email"
    )
    properties = {
        "sku": "id",
        "email": {"column": "email"},
        "city": {"column": "address.city"},
        "plan": {"value": "pro"},
        "limits": {"value": {"seats": 5}},
    }
    fields = {"item": {"object": "product", "properties": properties}}
    [data] = data_of(tmp_path, table, fields)
    assert data == {
        "item": {
            "sku": "sku1",
            "email": "a@x.io",
            "city": "Paris",
            "plan": "pro",
            "limits": {"seats": 5},
        }
    }


def test_customize_object_builds_from_a_map_column(tmp_path: Path) -> None:
    table = model("SELECT 1 AS id, MAP {'a': 1, 'b': 2} AS counts")
    fields = {"c": {"object": "counts", "properties": {"first": "a", "second": "b"}}}
    [data] = data_of(tmp_path, table, fields)
    assert data == {"c": {"first": 1, "second": 2}}


def test_customize_object_of_a_null_object_sends_null(tmp_path: Path) -> None:
    table = model("SELECT * FROM (VALUES (1, {'id': 'sku1'}), (2, NULL)) v(id, product)")
    fields = {"item": {"object": "product", "properties": {"sku": "id", "plan": {"value": "pro"}}}}
    assert data_of(tmp_path, table, fields) == [
        {"item": {"sku": "sku1", "plan": "pro"}},
        {"item": None},
    ]


# -- select array ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "json_columns"),
    [
        ("[{'name': 'jacket', 'qty': 1}, {'name': 'socks', 'qty': 2}]", False),
        ('\'[{"name":"jacket","qty":1},{"name":"socks","qty":2}]\'', False),
        ('\'[{"name":"jacket","qty":1},{"name":"socks","qty":2}]\'::JSON', True),
    ],
    ids=["list-of-struct", "json-text", "duckdb-json"],
)
def test_select_array_sends_the_whole_array(
    tmp_path: Path, expression: str, json_columns: bool
) -> None:
    table = model(f"SELECT 1 AS id, {expression} AS products", json_columns=json_columns)
    [data] = data_of(tmp_path, table, {"products": {"array": "products"}})
    assert data == {"products": [{"name": "jacket", "qty": 1}, {"name": "socks", "qty": 2}]}


def test_select_array_of_an_empty_and_a_null_list(tmp_path: Path) -> None:
    table = model("SELECT * FROM (VALUES (1, [1, 2]), (2, []), (3, NULL)) v(id, tags)")
    assert data_of(tmp_path, table, {"tags": {"array": "tags"}}) == [
        {"tags": [1, 2]},
        {"tags": []},
        {"tags": None},
    ]


# -- customize array: the order_completed example -------------------------------------


@pytest.mark.parametrize("json_columns", [False, True], ids=["json-text", "duckdb-json"])
def test_order_completed_products_customized_to_name_and_time(
    tmp_path: Path, json_columns: bool
) -> None:
    cast = "::JSON" if json_columns else ""
    table = model(
        f"SELECT 'order_completed' AS id, '{PRODUCTS_JSON}'{cast} AS products",
        json_columns=json_columns,
    )
    assert table.schema.field("products").type == (pa.json_() if json_columns else pa.string())
    fields = {"products": {"array": "products", "properties": PRODUCT_LINES}}
    [data] = data_of(tmp_path, table, fields)
    assert data == {
        "products": [
            {"name": "jacket", "time": "2021-12-17 23:43:47.102"},
            {"name": "socks"},
        ]
    }


def test_order_completed_products_as_a_struct_list_send_iso_8601_times(tmp_path: Path) -> None:
    table = model(
        "SELECT 'order_completed' AS id, ["
        "{'currency': 'USD', 'price': 40, 'productName': 'jacket',"
        " 'purchaseTime': TIMESTAMP '2021-12-17 23:43:47.102', 'quantity': 1},"
        "{'currency': 'USD', 'price': 5, 'productName': 'socks',"
        " 'purchaseTime': NULL, 'quantity': 2}] AS products"
    )
    fields = {"products": {"array": "products", "properties": PRODUCT_LINES}}
    [data] = data_of(tmp_path, table, fields)
    assert data == {
        "products": [
            {"name": "jacket", "time": "2021-12-17T23:43:47.102000"},
            {"name": "socks"},
        ]
    }


# -- customize array: what each item keeps ----------------------------------------------------


def test_a_struct_list_item_with_a_null_property_leaves_it_out(tmp_path: Path) -> None:
    table = model("SELECT 1 AS id, [{'a': NULL, 'b': 1}, {'a': 'z', 'b': NULL}] AS items")
    fields = {"items": {"array": "items", "properties": {"A": "a", "B": "b"}}}
    [data] = data_of(tmp_path, table, fields)
    assert data == {"items": [{"B": 1}, {"A": "z"}]}


@pytest.mark.parametrize("json_columns", [False, True], ids=["json-text", "duckdb-json"])
def test_a_json_item_keeps_a_present_null_and_leaves_an_absent_key_out(
    tmp_path: Path, json_columns: bool
) -> None:
    cast = "::JSON" if json_columns else ""
    items = '[{"a":null,"b":1},{"b":2},{}]'
    table = model(f"SELECT 1 AS id, '{items}'{cast} AS items", json_columns=json_columns)
    fields = {"items": {"array": "items", "properties": {"A": "a", "B": "b"}}}
    [data] = data_of(tmp_path, table, fields)
    assert data == {"items": [{"A": None, "B": 1}, {"B": 2}, {}]}


def test_customize_array_keeps_nested_values_of_json_items(tmp_path: Path) -> None:
    items = '[{"p":{"x":[1,2]},"q":true},{"p":"text","q":false}]'
    table = model(f"SELECT 1 AS id, '{items}' AS items")
    fields = {"items": {"array": "items", "properties": {"P": "p", "X": "p.x"}}}
    [data] = data_of(tmp_path, table, fields)
    assert data == {"items": [{"P": {"x": [1, 2]}, "X": [1, 2]}, {"P": "text"}]}


def test_customize_array_may_select_one_property_under_two_names(tmp_path: Path) -> None:
    table = model("SELECT 1 AS id, [{'sku': 'A1'}, {'sku': 'B2'}] AS items")
    fields = {"items": {"array": "items", "properties": {"id": "sku", "ref": "sku"}}}
    [data] = data_of(tmp_path, table, fields)
    assert data == {"items": [{"id": "A1", "ref": "A1"}, {"id": "B2", "ref": "B2"}]}


def test_customize_array_of_a_list_of_maps_leaves_absent_keys_out(tmp_path: Path) -> None:
    table = model("SELECT 1 AS id, [MAP {'a': 1, 'b': 2}, MAP {'b': 3}] AS items")
    fields = {"items": {"array": "items", "properties": {"A": "a", "B": "b"}}}
    [data] = data_of(tmp_path, table, fields)
    assert data == {"items": [{"A": 1, "B": 2}, {"B": 3}]}


def test_a_json_array_item_that_is_not_an_object_fails_the_row(tmp_path: Path) -> None:
    table = model("SELECT * FROM (VALUES (1, '[{\"a\":1}]'), (2, '[1, {\"a\":2}]')) v(id, items)")
    fields = {"items": {"array": "items", "properties": {"A": "a"}}}
    good, bad = sent(tmp_path, table, fields)
    assert (good.data, good.problem) == ({"items": [{"A": 1}]}, None)
    assert bad.problem == "field 'items': items[] holds an item that is not an object"


def test_customize_array_of_json_that_is_not_an_array_fails_the_row(tmp_path: Path) -> None:
    table = model("SELECT * FROM (VALUES (1, '[]'), (2, '{\"a\":1}'), (3, '[{')) v(id, items)")
    fields = {"items": {"array": "items", "properties": {"A": "a"}}}
    empty, an_object, broken = sent(tmp_path, table, fields)
    assert (empty.data, empty.problem) == ({"items": []}, None)
    assert an_object.problem == "field 'items': items is not an array"
    assert broken.problem == "field 'items': items is not valid JSON"


# -- plain fields: paths and static values ----------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "json_columns"),
    [
        ("{'city': 'Paris', 'zip': '75001'}", False),
        ('\'{"city":"Paris","zip":"75001"}\'', False),
        ('\'{"city":"Paris","zip":"75001"}\'::JSON', True),
        ("MAP {'city': 'Paris', 'zip': '75001'}", False),
    ],
    ids=["struct", "json-text", "duckdb-json", "map"],
)
def test_a_dotted_path_sends_a_nested_property_as_a_plain_field(
    tmp_path: Path, expression: str, json_columns: bool
) -> None:
    table = model(f"SELECT 1 AS id, {expression} AS address", json_columns=json_columns)
    [data] = data_of(tmp_path, table, {"city": "address.city"})
    assert data == {"city": "Paris"}


def test_a_dotted_path_through_a_null_object_sends_null(tmp_path: Path) -> None:
    table = model("SELECT * FROM (VALUES (1, {'city': 'Paris'}), (2, NULL)) v(id, address)")
    assert data_of(tmp_path, table, {"city": "address.city"}) == [
        {"city": "Paris"},
        {"city": None},
    ]


def test_a_static_value_is_sent_with_every_row(tmp_path: Path) -> None:
    table = model("SELECT * FROM (VALUES (1, 'a@x.io'), (2, 'b@x.io')) v(id, email)")
    fields = {"email": "email", "plan": {"value": "pro"}, "seats": {"value": 3}}
    assert data_of(tmp_path, table, fields) == [
        {"email": "a@x.io", "plan": "pro", "seats": 3},
        {"email": "b@x.io", "plan": "pro", "seats": 3},
    ]


# -- types -------------------------------------------------------------------------------------


def test_dates_times_and_timestamps_are_iso_8601(tmp_path: Path) -> None:
    table = model(
        "SELECT 1 AS id, DATE '2020-05-06' AS d, TIMESTAMP '2020-05-06 07:08:09.5' AS ts,"
        " TIME '10:11:12' AS t"
    )
    [data] = data_of(tmp_path, table, {"d": "d", "ts": "ts", "t": "t"})
    assert data == {"d": "2020-05-06", "ts": "2020-05-06T07:08:09.500000", "t": "10:11:12"}


def test_dates_and_timestamps_nested_in_structs_lists_and_maps_are_iso_8601(
    tmp_path: Path,
) -> None:
    table = model(
        "SELECT 1 AS id,"
        " {'at': TIMESTAMP '2021-12-17 23:43:47.102', 'on': DATE '2020-01-02'} AS s,"
        " [TIMESTAMP '2021-12-17 23:43:47', NULL] AS l,"
        " [{'at': TIMESTAMP '2021-12-17 23:43:47.102'}] AS ls,"
        " MAP {'k': TIMESTAMP '2020-01-01 00:00:00'} AS m"
    )
    [data] = data_of(tmp_path, table, {"s": "s", "l": "l", "ls": "ls", "m": "m"})
    assert data == {
        "s": {"at": "2021-12-17T23:43:47.102000", "on": "2020-01-02"},
        "l": ["2021-12-17T23:43:47.000000", None],
        "ls": [{"at": "2021-12-17T23:43:47.102000"}],
        "m": {"k": "2020-01-01T00:00:00.000000"},
    }


def test_tz_aware_timestamps_are_sent_in_utc_with_z_at_every_depth(tmp_path: Path) -> None:
    at = "TIMESTAMPTZ '2021-01-01 10:00:00+02'"
    table = model(
        f"SELECT 1 AS id, {at} AS ts, {{'at': {at}}} AS s, [{at}] AS l,"
        f" [{{'at': {at}, 'n': 1}}] AS ls"
    )
    fields = {
        "ts": "ts",
        "s": "s",
        "l": "l",
        "ls": "ls",
        "picked": {"array": "ls", "properties": {"when": "at"}},
        "as_text": {"column": "ts"},
    }
    utc = "2021-01-01T08:00:00.000000Z"
    [data] = data_of(tmp_path, table, fields)
    assert data == {
        "ts": utc,
        "s": {"at": utc},
        "l": [utc],
        "ls": [{"at": utc, "n": 1}],
        "picked": [{"when": utc}],
        "as_text": utc,
    }


def test_decimals_are_sent_as_json_numbers_with_every_digit(tmp_path: Path) -> None:
    table = model(
        "SELECT 1 AS id, 12.50::DECIMAL(10,2) AS price,"
        " 12345678901234567890.123456789::DECIMAL(38,9) AS big,"
        " {'amt': 0.12345678901234567890123456789::DECIMAL(38,29)} AS s,"
        " [99999999999999999.99::DECIMAL(19,2)] AS l"
    )
    [row] = sent(tmp_path, table, {"price": "price", "big": "big", "s": "s", "l": "l"})
    assert row.problem is None
    assert '"price":12.50' in row.record  # the scale too, as the warehouse has it
    data = json.loads(row.record, parse_float=Decimal)["data"]
    assert data == {
        "price": Decimal("12.50"),
        "big": Decimal("12345678901234567890.123456789"),
        "s": {"amt": Decimal("0.12345678901234567890123456789")},
        "l": [Decimal("99999999999999999.99")],
    }


def test_decimals_as_string_send_the_digits_as_text_at_every_depth(tmp_path: Path) -> None:
    table = model(
        "SELECT 1 AS id, 12.50::DECIMAL(10,2) AS price,"
        " {'amt': 0.10::DECIMAL(5,2), 'n': 3} AS s,"
        " [{'amt': 12345678901234567890.123456789::DECIMAL(38,9)}] AS ls"
    )
    fields = {
        "price": {"column": "price", "decimals": "string"},
        "s": {"object": "s", "decimals": "string"},
        "ls": {"array": "ls", "properties": {"a": "amt"}, "decimals": "string"},
    }
    [data] = data_of(tmp_path, table, fields)
    assert data == {
        "price": "12.50",
        "s": {"amt": "0.10", "n": 3},
        "ls": [{"a": "12345678901234567890.123456789"}],
    }


def test_bytes_are_sent_as_base64_at_every_depth(tmp_path: Path) -> None:
    table = model(
        "SELECT 1 AS id, '\\xAA\\x01'::BLOB AS raw, {'b': '\\xFF'::BLOB} AS s,"
        " ['\\x00\\x01\\x02'::BLOB] AS l"
    )
    [data] = data_of(tmp_path, table, {"raw": "raw", "s": "s", "l": "l"})
    assert data == {"raw": "qgE=", "s": {"b": "/w=="}, "l": ["AAEC"]}


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_and_infinities_fail_their_row_naming_the_field_and_the_column(
    tmp_path: Path, value: str
) -> None:
    table = model(f"SELECT * FROM (VALUES (1, '{value}'::DOUBLE), (2, 1.5::DOUBLE)) v(id, score)")
    bad, good = sent(tmp_path, table, {"rating": "score"})
    assert bad.problem == "field 'rating': score is NaN or infinite, which JSON cannot carry"
    assert bad.data == {"rating": None}  # the record still parses as JSON
    assert (good.data, good.problem) == ({"rating": 1.5}, None)


def test_nan_nested_in_a_struct_or_a_list_fails_the_row(tmp_path: Path) -> None:
    table = model(
        "SELECT 1 AS id, {'n': 'nan'::DOUBLE, 'ok': 1} AS s, [1.0::DOUBLE, 'inf'::DOUBLE] AS l"
    )
    [struct_row] = sent(tmp_path / "s", table, {"stats": "s"})
    assert struct_row.problem == "field 'stats': s.n is NaN or infinite, which JSON cannot carry"
    assert struct_row.data == {"stats": {"n": None, "ok": 1}}
    [list_row] = sent(tmp_path / "l", table, {"values": "l"})
    assert list_row.problem == "field 'values': l[] is NaN or infinite, which JSON cannot carry"
    assert list_row.data == {"values": [1.0, None]}


def test_nan_in_a_customized_array_item_fails_the_row(tmp_path: Path) -> None:
    table = model(
        "SELECT * FROM (VALUES (1, [{'p': 'nan'::DOUBLE, 'n': 'x'}]), (2, [{'p': 1.5, 'n': 'y'}]))"
        " v(id, items)"
    )
    bad, good = sent(tmp_path, table, {"lines": {"array": "items", "properties": {"P": "p"}}})
    assert bad.problem == "field 'lines': items[].p is NaN or infinite, which JSON cannot carry"
    assert isinstance(bad.data["lines"], list)  # the record still parses as JSON
    assert (good.data, good.problem) == ({"lines": [{"P": 1.5}]}, None)


def test_the_first_problem_of_a_row_is_reported(tmp_path: Path) -> None:
    table = model("SELECT 1 AS id, 'nan'::DOUBLE AS a, 'inf'::DOUBLE AS b")
    [row] = sent(tmp_path, table, {"first": "a", "second": "b"})
    assert row.problem is not None
    assert row.problem.startswith("field 'first': a is NaN")


def test_nulls_are_sent_as_null(tmp_path: Path) -> None:
    table = model(
        "SELECT 1 AS id, NULL::VARCHAR AS email, NULL::INTEGER AS age,"
        " {'city': NULL::VARCHAR} AS address"
    )
    fields = {"email": "email", "age": "age", "city": "address.city", "address": "address"}
    [data] = data_of(tmp_path, table, fields)
    assert data == {"email": None, "age": None, "city": None, "address": {"city": None}}


def test_skip_nulls_leaves_a_null_field_out_and_keeps_a_present_one(tmp_path: Path) -> None:
    table = model(
        "SELECT * FROM (VALUES (1, NULL, 'a@x.io'), (2, 'Ada', 'b@x.io')) v(id, name, email)"
    )
    fields = {"name": {"column": "name", "skip_nulls": True}, "email": "email"}
    assert data_of(tmp_path, table, fields) == [
        {"email": "a@x.io"},
        {"name": "Ada", "email": "b@x.io"},
    ]


def test_skip_nulls_leaves_out_a_null_object_and_null_properties(tmp_path: Path) -> None:
    table = model(
        "SELECT * FROM (VALUES (1, {'city': 'Paris', 'zip': NULL}), (2, NULL)) v(id, address)"
    )
    fields = {
        "addr": {
            "object": "address",
            "properties": {"c": "city", "z": "zip"},
            "skip_nulls": True,
        }
    }
    assert data_of(tmp_path, table, fields) == [{"addr": {"c": "Paris"}}, {}]


@pytest.mark.parametrize(
    "fields",
    [
        {"x": {"column": "doc.k", "skip_nulls": True}},
        {"x": {"column": "text.k", "skip_nulls": True}},
        {"x": {"column": "empty", "skip_nulls": True}},
        {"x": {"object": "empty", "skip_nulls": True}},
    ],
    ids=["duckdb-json-path", "json-text-path", "json-null-column", "json-null-object"],
)
def test_skip_nulls_leaves_out_json_nulls(tmp_path: Path, fields: dict[str, Any]) -> None:
    table = model(
        "SELECT 1 AS id, '{\"k\":null}'::JSON AS doc, '{\"k\":null}' AS text,"
        " 'null'::JSON AS empty",
        json_columns=True,
    )
    assert data_of(tmp_path, table, fields) == [{}]


# -- typed fields: conversions row by row ------------------------------------------------------


def test_text_into_a_number_field_sends_json_numbers_and_fails_other_rows(
    tmp_path: Path,
) -> None:
    table = model(
        "SELECT * FROM (VALUES (1, '12.5'), (2, ' 4 '), (3, '-1e3'), (4, '12x'), (5, NULL))"
        " v(id, amount)"
    )
    rows = sent(tmp_path, table, {"amount": "amount"}, typed(("amount", FieldType.NUMBER)))
    assert [r.data for r in rows] == [
        {"amount": 12.5},
        {"amount": 4},
        {"amount": -1000.0},
        {"amount": None},
        {"amount": None},
    ]
    assert [r.problem for r in rows] == [
        None,
        None,
        None,
        "field 'amount': amount is not a number",
        None,  # null is null, not a problem
    ]


def test_values_into_an_integer_field_must_be_whole_numbers(tmp_path: Path) -> None:
    table = model(
        "SELECT * FROM (VALUES (1, '7', 3.0::DOUBLE), (2, '7.5', 2.5::DOUBLE),"
        " (3, '99999999999999999999', 4.00::DOUBLE), (4, '-7.00', -1.0::DOUBLE))"
        " v(id, text, number)"
    )
    action = typed(("from_text", FieldType.INTEGER), ("from_number", FieldType.INTEGER))
    rows = sent(tmp_path, table, {"from_text": "text", "from_number": "number"}, action)
    assert [r.data for r in rows] == [
        {"from_text": 7, "from_number": 3},
        {"from_text": None, "from_number": None},
        {"from_text": 99999999999999999999, "from_number": 4},
        {"from_text": -7, "from_number": -1},  # a whole number written with zero decimals
    ]
    assert [r.problem for r in rows] == [
        None,
        "field 'from_text': text is not a whole number",
        None,
        None,
    ]


def test_text_into_a_boolean_field(tmp_path: Path) -> None:
    table = model("SELECT * FROM (VALUES (1, 'true'), (2, 'FALSE'), (3, 'yes')) v(id, flag)")
    rows = sent(tmp_path, table, {"flag": "flag"}, typed(("flag", FieldType.BOOLEAN)))
    assert [r.data for r in rows] == [{"flag": True}, {"flag": False}, {"flag": None}]
    assert [r.problem for r in rows] == [None, None, "field 'flag': flag is not true or false"]
    assert [r.columns["flag"] for r in rows] == [True, False, None]  # the typed column


def test_text_and_timestamps_into_a_date_field(tmp_path: Path) -> None:
    table = model(
        "SELECT * FROM (VALUES (1, '2021-03-04', TIMESTAMP '2021-03-04 23:59:00'),"
        " (2, 'nope', NULL)) v(id, text, ts)"
    )
    action = typed(("day", FieldType.DATE), ("day_of_ts", FieldType.DATE))
    ok, bad = sent(tmp_path, table, {"day": "text", "day_of_ts": "ts"}, action)
    assert (ok.data, ok.problem) == ({"day": "2021-03-04", "day_of_ts": "2021-03-04"}, None)
    assert bad.problem == "field 'day': text is not a date"


def test_text_and_dates_into_a_datetime_field_are_sent_in_utc(tmp_path: Path) -> None:
    table = model(
        "SELECT * FROM (VALUES (1, '2021-03-04 05:06:07', DATE '2021-01-02'),"
        " (2, '2021-03-04T05:06:07+02:00', NULL), (3, 'later', NULL)) v(id, text, day)"
    )
    action = typed(("at", FieldType.DATETIME), ("day", FieldType.DATETIME))
    rows = sent(tmp_path, table, {"at": "text", "day": "day"}, action)
    assert [r.data for r in rows] == [
        {"at": "2021-03-04T05:06:07.000000Z", "day": "2021-01-02T00:00:00.000000Z"},
        {"at": "2021-03-04T03:06:07.000000Z", "day": None},
        {"at": None, "day": None},
    ]
    assert [r.problem for r in rows] == [None, None, "field 'at': text is not a date and time"]


def test_json_values_into_typed_fields_convert_by_their_json_type(tmp_path: Path) -> None:
    doc = (
        '\'{"n":"5","s":true,"b":false,"d":"2021-01-02"}\'::JSON',
        '\'{"n":"x","s":{"k":1},"b":"no","d":5}\'::JSON',
    )
    table = model(
        f"SELECT * FROM (VALUES (1, {doc[0]}), (2, {doc[1]})) v(id, doc)", json_columns=True
    )
    action = typed(
        ("n", FieldType.NUMBER),
        ("s", FieldType.STRING),
        ("b", FieldType.BOOLEAN),
        ("d", FieldType.DATE),
    )
    fields = {"n": "doc.n", "s": "doc.s", "b": "doc.b", "d": "doc.d"}
    good, bad = sent(tmp_path, table, fields, action)
    assert (good.data, good.problem) == ({"n": 5, "s": "true", "b": False, "d": "2021-01-02"}, None)
    assert bad.problem == "field 'n': doc.n is not a number"
    for field, says in [
        ("s", "is not text"),
        ("b", "is not true or false"),
        ("d", "is not a date"),
    ]:
        [row] = sent(tmp_path / field, table.slice(1), {field: f"doc.{field}"}, action)
        assert row.problem == f"field {field!r}: doc.{field} {says}"


@pytest.mark.parametrize("json_columns", [False, True], ids=["json-text", "duckdb-json"])
def test_json_of_the_wrong_shape_into_an_object_or_array_field_fails_the_row(
    tmp_path: Path, json_columns: bool
) -> None:
    cast = "::JSON" if json_columns else ""
    table = model(
        f"SELECT * FROM (VALUES (1, '{{\"a\":1}}'{cast}, '[1,2]'{cast}),"
        f" (2, '[1]'{cast}, '{{\"a\":1}}'{cast}), (3, 'null'{cast}, '3'{cast})) v(id, obj, arr)",
        json_columns=json_columns,
    )
    action = typed(("obj", FieldType.OBJECT), ("arr", FieldType.ARRAY))
    rows = sent(tmp_path / "obj", table, {"obj": "obj"}, action)
    assert [(r.data, r.problem) for r in rows] == [
        ({"obj": {"a": 1}}, None),
        ({"obj": [1]}, "field 'obj': obj is not an object"),
        ({"obj": None}, None),
    ]
    rows = sent(tmp_path / "arr", table, {"arr": "arr"}, action)
    assert [(r.data, r.problem) for r in rows] == [
        ({"arr": [1, 2]}, None),
        ({"arr": {"a": 1}}, "field 'arr': arr is not an array"),
        ({"arr": 3}, "field 'arr': arr is not an array"),
    ]


def test_typed_properties_of_array_items_are_converted_and_a_bad_item_fails_its_row(
    tmp_path: Path,
) -> None:
    item = FieldSpec(
        "lines",
        FieldType.ARRAY,
        properties=(FieldSpec("qty", FieldType.INTEGER), FieldSpec("at", FieldType.DATETIME)),
    )
    action = ActionSpec("send", "typed items", fields=(item,))
    table = model(
        'SELECT * FROM (VALUES (1, \'[{"q":"5","t":"2021-01-01 00:00:00"},{"q":2.0}]\'),'
        ' (2, \'[{"q":"five"}]\')) v(id, items)'
    )
    fields = {"lines": {"array": "items", "properties": {"qty": "q", "at": "t"}}}
    good, bad = sent(tmp_path, table, fields, action)
    assert good.problem is None
    assert good.data == {"lines": [{"qty": 5, "at": "2021-01-01T00:00:00.000000Z"}, {"qty": 2}]}
    assert bad.problem == "field 'lines': items[].q is not a whole number"


def test_text_that_is_not_json_into_an_object_field_fails_the_row(tmp_path: Path) -> None:
    table = model("SELECT 1 AS id, '{bad' AS obj")
    [row] = sent(tmp_path, table, {"obj": {"object": "obj"}})
    assert row.problem == "field 'obj': obj is not valid JSON"
    assert row.data == {"obj": None}


# -- the typed columns beside the record -------------------------------------------------------


def test_object_and_array_fields_are_json_columns_holding_what_the_record_sends(
    tmp_path: Path,
) -> None:
    table = model(
        "SELECT 1 AS id, {'id': 'sku1', 'color': 'red'} AS product,"
        f" '{PRODUCTS_JSON}' AS products, 'a@x.io' AS email"
    )
    fields = {
        "item": {"object": "product", "properties": {"sku": "id"}},
        "product": {"object": "product"},
        "lines": {"array": "products", "properties": PRODUCT_LINES},
        "email": "email",
    }
    spec = MappingSpec(model="rows", destination="hook", action="send", fields=fields)
    store = DuckDBSnapshotStore(tmp_path, compile_mapping("rows_out", spec, MODEL, ANY_FIELDS))
    store.stage(pa.RecordBatchReader.from_batches(table.schema, table.to_batches()))
    store.diff()
    batch = store.outbound(frozenset(Operation), batch_size=10).read_all()
    store.close()
    for name in ("item", "product", "lines"):
        column_type = batch.schema.field(name).type
        assert isinstance(column_type, pa.BaseExtensionType)
        assert column_type.extension_name == JSON_EXTENSION
    assert batch.schema.field("email").type == pa.string()
    record = json.loads(batch.column("__record")[0].as_py())["data"]
    for name in ("item", "product", "lines"):
        assert json.loads(batch.column(name)[0].as_py()) == record[name]
