"""A mapping that cannot fit its action or its model is refused before anything is sent.

What the workspace alone tells (fields, properties, static values, kinds of source) is checked
by `compile_mapping` against the action's fields; what needs the model's column types (paths
into STRUCTs, conversions) by `bind` when a run stages the model. Every refusal is a
`MappingError` naming the mapping and the field, with the key path of the fault under the
mapping so the workspace check can point at its line.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from ebbtide.config.models import FieldType, MappingSpec, ModelSpec
from ebbtide.config.workspace import WORKSPACE_FILE, load_workspace
from ebbtide.errors import ConfigErrors, MappingError
from ebbtide.mapping.binding import bind
from ebbtide.mapping.compiler import CompiledMapping, compile_mapping
from ebbtide.ports import ActionSpec, FieldSpec
from ebbtide.snapshots.duckdb import DuckDBSnapshotStore

MODEL = ModelSpec(source="warehouse", primary_key="id", sql="SELECT * FROM orders")
F = FieldSpec
T = FieldType

# What a shop's order endpoint accepts: a fixed list of fields, objects with fixed properties.
ORDER_ACTION = ActionSpec(
    "upsert",
    "upsert an order",
    fields=(
        F("email", T.STRING, required=True),
        F("age", T.INTEGER),
        F("name", T.STRING),
        F("total", T.NUMBER),
        F(
            "item",
            T.OBJECT,
            properties=(F("sku", T.STRING, True), F("color"), F("price", T.NUMBER)),
        ),
        F("lines", T.ARRAY, properties=(F("name", T.STRING), F("qty", T.INTEGER))),
        F("extra"),
    ),
)


def compiled(fields: dict[str, Any], action: ActionSpec = ORDER_ACTION) -> CompiledMapping:
    spec = MappingSpec(model="orders", destination="shop", action=action.name, fields=fields)
    return compile_mapping("orders_to_shop", spec, MODEL, action)


def refused(fields: dict[str, Any], action: ActionSpec = ORDER_ACTION) -> MappingError:
    with pytest.raises(MappingError) as info:
        compiled(fields, action)
    return info.value


def orders() -> pa.Table:
    """One order row with real DuckDB STRUCT and LIST<STRUCT> columns."""
    con = duckdb.connect()
    table = con.execute(
        "SELECT 1 AS id, 'a@x.io' AS email, 42 AS age,"
        " {'id': 'sku1', 'color': 'red', 'dims': {'width': 3}} AS product,"
        " [{'productName': 'jacket', 'quantity': 1}] AS products"
    ).to_arrow_table()
    con.close()
    return table


def refused_at_stage(tmp_path: Path, fields: dict[str, Any]) -> MappingError:
    """Compiles, then fails when the store binds it to the model's rows; stages nothing."""
    table = orders()
    store = DuckDBSnapshotStore(tmp_path, compiled(fields))
    try:
        with pytest.raises(MappingError) as info:
            store.stage(pa.RecordBatchReader.from_batches(table.schema, table.to_batches()))
        assert store.stage_schema is None
    finally:
        store.close()
    return info.value


# -- against the action's fields (compile_mapping) --------------------------------------------


def test_the_valid_mapping_compiles_with_each_field_given_its_action_spec() -> None:
    mapping = compiled(
        {
            "email": "email",
            "item": {"object": "product", "properties": {"sku": "id", "price": {"value": 9}}},
            "lines": {"array": "products", "properties": {"name": "productName"}},
        }
    )
    specs = {f.name: f.spec for f in mapping.fields}
    assert specs["item"].type is T.OBJECT
    assert specs["lines"].properties is not None
    assert [p.name for p in specs["lines"].properties] == ["name", "qty"]


def test_a_required_field_left_unmapped_is_refused() -> None:
    error = refused({"name": "email"})
    assert str(error) == (
        "mapping 'orders_to_shop': action 'upsert' requires field(s) email: map them under fields"
    )
    assert error.path == ("fields",)


def test_an_unknown_field_is_refused_with_a_suggestion() -> None:
    error = refused({"email": "email", "emial": "email"})
    assert str(error) == (
        "mapping 'orders_to_shop': action 'upsert' has no field 'emial' (did you mean 'email'?)"
    )
    assert error.path == ("fields", "emial")


def test_an_unknown_field_without_a_close_match_lists_the_accepted_fields() -> None:
    error = refused({"email": "email", "zzz": "email"})
    assert "has no field 'zzz' (accepted: age, email, extra, item, lines, name, total)" in str(
        error
    )


def test_an_object_property_the_destination_does_not_accept_is_refused_with_a_suggestion() -> None:
    fields = {
        "email": "email",
        "item": {"object": "product", "properties": {"sku": "id", "colour": "color"}},
    }
    error = refused(fields)
    assert str(error) == (
        "mapping 'orders_to_shop': field 'item': the destination accepts no property 'colour'"
        " (did you mean 'color'?)"
    )
    assert error.path == ("fields", "item", "properties", "colour")


def test_an_array_item_property_the_destination_does_not_accept_is_refused() -> None:
    fields = {"email": "email", "lines": {"array": "products", "properties": {"nmae": "x"}}}
    error = refused(fields)
    assert "field 'lines': the destination accepts no property 'nmae'" in str(error)
    assert "(did you mean 'name'?)" in str(error)
    assert error.path == ("fields", "lines", "properties", "nmae")


def test_a_required_property_left_unmapped_is_refused() -> None:
    error = refused({"email": "email", "item": {"object": "product", "properties": {"color": "c"}}})
    assert str(error) == (
        "mapping 'orders_to_shop': field 'item': the destination requires property(ies) sku"
    )
    assert error.path == ("fields", "item", "properties")


def test_a_field_without_a_fixed_property_list_takes_any_property() -> None:
    mapping = compiled(
        {"email": "email", "extra": {"object": "product", "properties": {"anything": "id"}}}
    )
    assert [f.name for f in mapping.fields] == ["email", "extra"]


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("age", "old", "takes an integer, not 'old'"),
        ("age", True, "takes an integer, not True"),
        ("age", 3.5, "takes an integer, not 3.5"),
        ("total", "12", "takes a number, not '12'"),
        ("name", 5, "takes a string, not 5"),
        ("item", [1], "takes an object, not [1]"),
    ],
)
def test_a_static_value_of_the_wrong_type_is_refused(field: str, value: Any, says: str) -> None:
    error = refused({"email": "email", field: {"value": value}})
    assert str(error) == f"mapping 'orders_to_shop': field {field!r} {says}"
    assert error.path == ("fields", field, "value")


def test_a_static_date_written_as_iso_text_is_accepted_by_a_date_field() -> None:
    action = ActionSpec("upsert", "dated", fields=(F("email"), F("on", T.DATE)))
    mapping = compiled({"email": "email", "on": {"value": "2021-03-04"}}, action)
    assert [(f.name, f.spec.type) for f in mapping.fields] == [("email", T.ANY), ("on", T.DATE)]


@pytest.mark.parametrize(("field_type", "says"), [(T.DATE, "a date"), (T.DATETIME, "a datetime")])
def test_a_static_text_that_is_not_a_date_is_refused_by_a_date_field(
    field_type: FieldType, says: str
) -> None:
    action = ActionSpec("upsert", "dated", fields=(F("email"), F("on", field_type)))
    error = refused({"email": "email", "on": {"value": "banana"}}, action)
    assert str(error) == f"mapping 'orders_to_shop': field 'on' takes {says}, not 'banana'"
    assert error.path == ("fields", "on", "value")


def test_a_static_property_value_of_the_wrong_type_is_refused() -> None:
    fields = {
        "email": "email",
        "item": {"object": "product", "properties": {"sku": "id", "price": {"value": "cheap"}}},
    }
    error = refused(fields)
    assert str(error) == (
        "mapping 'orders_to_shop': field 'item', property 'price' takes a number, not 'cheap'"
    )
    assert error.path == ("fields", "item", "properties", "price")


def test_a_static_nan_is_refused_even_where_any_type_goes() -> None:
    error = refused({"email": "email", "extra": {"value": float("nan")}})
    assert "NaN and infinities cannot be sent as JSON" in str(error)
    assert error.path == ("fields", "extra", "value")


@pytest.mark.parametrize(
    ("source", "kind"),
    [({"object": "product"}, "object"), ({"array": "products"}, "array")],
)
def test_an_object_or_array_source_into_a_string_field_is_refused(
    source: dict[str, str], kind: str
) -> None:
    error = refused({"email": "email", "name": source})
    assert str(error) == (
        f"mapping 'orders_to_shop': field 'name' takes a string, not an {kind}:"
        " map a column instead"
    )
    assert error.path == ("fields", "name", kind)


def test_an_array_source_into_an_object_field_is_refused() -> None:
    error = refused({"email": "email", "item": {"array": "products"}})
    assert "field 'item' takes an object, not an array" in str(error)


# -- against the model's columns (bind, when the model is staged) ------------------------------


def test_a_struct_column_into_a_number_field_is_refused_when_staged(tmp_path: Path) -> None:
    error = refused_at_stage(tmp_path, {"email": "email", "total": "product"})
    assert str(error) == (
        "mapping 'orders_to_shop': field 'total': product is a struct, which cannot be sent as"
        " a number"
    )
    assert error.path == ("fields", "total")


def test_a_number_column_into_an_object_field_is_refused_when_staged(tmp_path: Path) -> None:
    error = refused_at_stage(tmp_path, {"email": "email", "item": {"object": "age"}})
    assert "field 'item': age is an integer, which cannot be sent as an object" in str(error)


def test_a_list_of_numbers_cannot_be_customized_as_an_array_of_objects(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.int64()), ("email", pa.string()), ("tags", pa.list_(pa.int64()))])
    mapping = compiled({"email": "email", "lines": {"array": "tags", "properties": {"name": "n"}}})
    with pytest.raises(MappingError) as info:
        bind(mapping, schema)
    assert "field 'lines': tags[] is an integer, not an array of objects" in str(info.value)
    assert info.value.path == ("fields", "lines")


@pytest.mark.parametrize(
    ("path", "where", "suggested"),
    [("product.colr", "product", "color"), ("product.dims.widht", "product.dims", "width")],
)
def test_a_dotted_path_naming_a_property_the_struct_lacks_is_refused_with_a_suggestion(
    tmp_path: Path, path: str, where: str, suggested: str
) -> None:
    error = refused_at_stage(tmp_path, {"email": "email", "name": path})
    missing = path.rsplit(".", 1)[1]
    assert str(error) == (
        f"mapping 'orders_to_shop': field 'name': {where} has no property {missing!r}"
        f" (did you mean {suggested!r}?)"
    )
    assert error.path == ("fields", "name")


def test_an_object_property_the_struct_and_the_model_lack_is_refused(tmp_path: Path) -> None:
    fields = {
        "email": "email",
        "item": {"object": "product", "properties": {"sku": "id", "color": "colr"}},
    }
    error = refused_at_stage(tmp_path, fields)
    assert str(error) == (
        "mapping 'orders_to_shop': field 'item', property 'color': product has no property"
        " 'colr' (did you mean 'color'?)"
    )
    assert error.path == ("fields", "item", "properties", "color")


def test_an_item_property_the_struct_list_lacks_is_refused(tmp_path: Path) -> None:
    fields = {"email": "email", "lines": {"array": "products", "properties": {"name": "prodName"}}}
    error = refused_at_stage(tmp_path, fields)
    assert "field 'lines', property 'name': products[] has no property 'prodName'" in str(error)
    assert "(did you mean 'productName'?)" in str(error)
    assert error.path == ("fields", "lines", "properties", "name")


def test_a_column_the_model_lacks_is_refused_naming_the_columns_it_has(tmp_path: Path) -> None:
    error = refused_at_stage(tmp_path, {"email": "email", "name": "full_name"})
    assert str(error) == (
        "mapping 'orders_to_shop': field 'name': model 'orders' has no column 'full_name'"
        " (it has: id, email, age, product, products)"
    )


def test_a_path_into_a_number_column_names_nothing(tmp_path: Path) -> None:
    error = refused_at_stage(tmp_path, {"email": "email", "name": "age.years"})
    assert "field 'name': age is an integer, not an object: age.years names nothing" in str(error)


def test_binding_reads_every_column_a_field_needs_once() -> None:
    mapping = compiled(
        {
            "email": "email",
            "name": "product.color",
            "item": {"object": "product", "properties": {"sku": "id", "price": "age"}},
        }
    )
    bound = bind(mapping, orders().schema)
    assert bound.columns == ("id", "email", "product", "age")


# -- in the workspace: file, line and key path -------------------------------------------------

# A webhook that declares what its receiver accepts; line 35 is `colour: color`.
WORKSPACE = """\
state: sqlite:///.ebbtide/state.db

sources:
  warehouse: {type: duckdb, path: warehouse.duckdb}

models:
  orders:
    source: warehouse
    primary_key: id
    sql: SELECT id, email, product FROM orders

destinations:
  shop:
    type: webhook
    url: https://shop.example/hook
    fields:
      - {name: email, type: string, required: true}
      - name: item
        type: object
        properties:
          - {name: sku, type: string}
          - {name: color, type: string}

mappings:
  orders_to_shop:
    model: orders
    destination: shop
    action: upsert
    fields:
      email: email
      item:
        object: product
        properties:
          sku: id
          colour: color
"""


def test_a_property_the_webhook_does_not_declare_is_reported_at_its_line(tmp_path: Path) -> None:
    file = tmp_path / WORKSPACE_FILE
    file.write_text(textwrap.dedent(WORKSPACE), encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_workspace(tmp_path)
    [error] = info.value.errors
    assert error.file == str(file)
    assert error.line == 35
    assert error.path == "mappings.orders_to_shop.fields.item.properties.colour"
    assert error.message == (
        "mapping 'orders_to_shop': field 'item': the destination accepts no property 'colour'"
        " (did you mean 'color'?)"
    )


def test_the_workspace_loads_once_the_property_is_spelled_as_declared(tmp_path: Path) -> None:
    fixed = WORKSPACE.replace("colour: color", "color: color")
    (tmp_path / WORKSPACE_FILE).write_text(fixed, encoding="utf-8")
    workspace = load_workspace(tmp_path)
    item = workspace.spec.mappings["orders_to_shop"].fields["item"]
    assert item.properties is not None
    assert list(item.properties) == ["sku", "color"]
