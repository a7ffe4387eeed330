"""DuckDB SQL that turns model rows into payloads: one expression per field, built once per run.

Every value is rendered as JSON text by DuckDB itself (objects and arrays included), so a
payload is never assembled field by field in Python. Each field yields three expressions:
its JSON text (SQL NULL when the value is null), its value as a typed column (for destinations
that write columns) and, when its values can be wrong row by row, the problem that keeps a row
from being sent (NaN, text that is not a number, JSON of the wrong shape).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ebbtide.config.models import FieldType
from ebbtide.mapping.binding import (
    JSON_TYPE,
    Access,
    BoundField,
    BoundMapping,
    Converted,
    CustomArray,
    CustomObject,
    Kind,
    Static,
    Step,
    kind_of,
)
from ebbtide.ports import iter_batches
from ebbtide.snapshots.sql_text import literal, quote
from ebbtide.snapshots.value_sql import (
    Rendered,
    ValueSQL,
    convert,
    first,
    is_null,
    joined,
    object_sql,
    parsed,
    shape_problem,
    struct_sql,
    unless,
    unparsable,
)


@dataclass(frozen=True)
class FieldSQL:
    """One field of the payload as SQL."""

    name: str
    json: str
    value: str
    nested: bool  # its typed value is JSON text (an object or an array)
    skip_nulls: bool


@dataclass(frozen=True)
class PayloadSQL:
    """The SQL of a whole payload over one row alias."""

    fields: tuple[FieldSQL, ...]
    problem: str  # the first problem of the row, or NULL


def payload_sql(bound: BoundMapping, table: str) -> PayloadSQL:
    """The payload of each row of `table` (an alias holding the model's columns)."""
    renderer = _Renderer(table)
    fields, problems = [], []
    for field in bound.fields:
        rendered = renderer.field(field)
        fields.append(
            FieldSQL(field.name, rendered.json, rendered.value, field.nested, field.skip_nulls)
        )
        if rendered.problem:
            problems.append(rendered.problem)
    problem = f"coalesce({', '.join(problems)})" if len(problems) > 1 else "NULL::VARCHAR"
    if len(problems) == 1:
        problem = problems[0]
    return PayloadSQL(tuple(fields), problem)


def data_object(fields: list[tuple[str, str, bool]]) -> str:
    """The data object from (name, JSON text, skip_nulls) of each field."""
    return object_sql([(name, text, skip) for name, text, skip in fields])


class _Renderer(ValueSQL):
    def __init__(self, table: str) -> None:
        super().__init__()
        self.table = table

    def field(self, field: BoundField) -> Rendered:
        rendered = self.value(field.value)
        if rendered.problem is None:
            return rendered
        problem = f"{literal(f'field {field.name!r}: ')} || {rendered.problem}"
        return Rendered(rendered.json, rendered.value, problem)

    def value(self, value: Converted | CustomObject | CustomArray, item: str = "") -> Rendered:
        if isinstance(value, CustomObject):
            return self.custom_object(value)
        if isinstance(value, CustomArray):
            return self.custom_array(value)
        if isinstance(value.source, Static):
            return _static(value.source.value)
        ref, read_problem = self.access(value.source, item)
        rendered = convert(ref, value.source, value.target, value.decimals, self)
        return _with_problem(rendered, read_problem)

    # -- reading -------------------------------------------------------------------------

    def access(self, access: Access, item: str) -> tuple[str, str | None]:
        """SQL for the value, and the problem of a JSON text along the way that does not parse."""
        ref = item if access.column is None else f"{self.table}.{quote(access.column)}"
        problem = None
        for step in access.steps:
            if step.via is Kind.STRING:
                problem = unparsable(ref, access.label)
            ref = _step(ref, step)
        return ref, problem

    def custom_object(self, value: CustomObject) -> Rendered:
        problems: list[str | None] = []
        null_when = None
        if value.base is not None:
            base, problem = self.access(value.base, "")
            problems.append(
                unparsable(base, value.base.label) if value.base.kind is Kind.STRING else problem
            )
            parsed_base = parsed(base, value.base.kind)
            problems.append(shape_problem(parsed_base, value.base, FieldType.OBJECT))
            null_when = is_null(base, value.base.kind)
        members = []
        for name, prop in value.properties:
            rendered = self.value(prop)
            members.append((name, rendered.json, value.skip_nulls))
            problems.append(rendered.problem)
        text = object_sql(members)
        if null_when is not None:
            text = f"{text} || {unless(null_when)}"
        return Rendered(text, text, first(problems))

    def custom_array(self, value: CustomArray) -> Rendered:
        base, problem = self.access(value.base, "")
        items = base
        if value.base.kind in (Kind.STRING, Kind.JSON):
            items = f"json_extract({parsed(base, value.base.kind)}, '$[*]')"
        self.depth += 1
        var = f"v{self.depth}"
        props = [(name, self.value(prop, var)) for name, prop in value.properties]
        self.depth -= 1
        item_json = object_sql([(n, r.json, True) for n, r in props], keep_json_null=True)
        item_problems = [r.problem for _, r in props]
        if kind_of(value.base.type) is Kind.LIST:
            item_json = f"{item_json} || {unless(f'{var} IS NULL')}"
        else:
            not_object = f"json_type({var}) <> 'OBJECT'"
            item_json = f"{item_json} || {unless(not_object)}"
            item_problems.append(
                f"CASE WHEN json_type({var}) NOT IN ('OBJECT', 'NULL') THEN"
                f" {literal(value.base.label + '[] holds an item that is not an object')} END"
            )
        item_json = f"coalesce({item_json}, 'null')"
        items_json = joined(items, var, item_json, "[]")
        text = f"{items_json} || {unless(is_null(base, value.base.kind))}"
        problems = [
            unparsable(base, value.base.label) if value.base.kind is Kind.STRING else problem
        ]
        problems.append(shape_problem(parsed(base, value.base.kind), value.base, FieldType.ARRAY))
        item_problem = first(item_problems)
        if item_problem is not None:
            problems.append(
                f"list_any_value(list_transform({items}, lambda {var}: {item_problem}))"
            )
        return Rendered(text, text, first(problems))


def _step(ref: str, step: Step) -> str:
    if step.via is Kind.STRUCT:
        return struct_sql(ref, step.names[0])
    if step.via is Kind.MAP:
        return f"{ref}[{literal(step.names[0])}]"
    pointer = "".join("/" + n.replace("~", "~0").replace("/", "~1") for n in step.names)
    if step.via is Kind.STRING:
        ref = f"CASE WHEN json_valid({ref}) THEN {ref} END"
    return f"json_extract({ref}, {literal(pointer)})"


def _static(value: Any) -> Rendered:
    text = json.dumps(value, default=_iso, ensure_ascii=False)
    if isinstance(value, bool):
        typed = "true" if value else "false"
    elif isinstance(value, int | float):
        typed = repr(value)
    elif value is None:
        typed = "NULL"
    else:
        typed = literal(text if isinstance(value, dict | list) else str(_iso(value)))
    json_sql = "NULL::VARCHAR" if value is None else literal(text)
    return Rendered(json_sql, typed)


def _iso(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, str):
        return value
    raise TypeError(f"{value!r} cannot be sent as JSON")


def _with_problem(rendered: Rendered, problem: str | None) -> Rendered:
    if problem is None:
        return rendered
    return Rendered(rendered.json, rendered.value, first([problem, rendered.problem]))


def as_json_columns(reader: pa.RecordBatchReader, names: list[str]) -> pa.RecordBatchReader:
    """Mark the columns of object and array fields as JSON (Arrow's `arrow.json`), so a
    destination that writes columns stores them as JSON, not as text."""
    schema = reader.schema
    for name in names:
        at = schema.get_field_index(name)
        schema = schema.set(at, pa.field(name, JSON_TYPE))

    def marked() -> Iterator[pa.RecordBatch]:
        for batch in iter_batches(reader):
            columns = [
                pa.ExtensionArray.from_storage(JSON_TYPE, column.cast(pa.string()))
                if schema.field(i).type == JSON_TYPE
                else column
                for i, column in enumerate(batch.columns)
            ]
            yield pa.RecordBatch.from_arrays(columns, schema=schema)

    return pa.RecordBatchReader.from_batches(schema, marked())
