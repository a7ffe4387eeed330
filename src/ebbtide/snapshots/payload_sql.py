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

from ebbtide.config.models import DecimalsAs, FieldType
from ebbtide.engine.binding import (
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
    element_type,
    kind_of,
    struct_fields,
    timezone_of,
)
from ebbtide.ports import iter_batches
from ebbtide.snapshots.sql_text import literal, quote

_ISO_TIMESTAMP = '"%Y-%m-%dT%H:%M:%S.%f"'
_ISO_TIMESTAMP_UTC = '"%Y-%m-%dT%H:%M:%S.%fZ"'
_JSON_NUMBER = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"
_JSON_INTEGER = r"-?(0|[1-9][0-9]*)"
_JSON_TYPES = {FieldType.OBJECT: "OBJECT", FieldType.ARRAY: "ARRAY"}


@dataclass(frozen=True)
class Rendered:
    """A value as SQL: its JSON text, its typed value and what may keep a row from going out."""

    json: str
    value: str
    problem: str | None = None


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
    return _object([(name, text, skip) for name, text, skip in fields])


# Built with one concat() per object: a chain of || copies the growing text at every step,
# and a CASE around a large expression makes DuckDB evaluate it row by row; a value that must
# be null instead gets `|| _unless(...)` appended, which turns it into NULL cheaply.


def _object(members: list[tuple[str, str, bool]]) -> str:
    """A JSON object from (name, JSON text, skip_nulls) members; a skipped null is left out."""
    if not members:
        return "'{}'"
    if not any(skip for _, _, skip in members):
        pieces = []
        for i, (name, text, _) in enumerate(members):
            pieces += [literal(("{" if i == 0 else ",") + _key(name)), f"coalesce({text}, 'null')"]
        return f"concat({', '.join(pieces)}, '}}')"
    parts = [
        f"{literal(_key(name))} || {text}"
        if skip
        else f"concat({literal(_key(name))}, coalesce({text}, 'null'))"
        for name, text, skip in members
    ]
    return f"concat('{{', concat_ws(',', {', '.join(parts)}), '}}')"


def _key(name: str) -> str:
    return json.dumps(name, ensure_ascii=False) + ":"


def _unless(null_test: str) -> str:
    """Appended with || to a text: NULL where `null_test` holds, else nothing."""
    return f"CASE WHEN {null_test} THEN NULL ELSE '' END"


class _Renderer:
    def __init__(self, table: str) -> None:
        self.table = table
        self.depth = 0  # lambda nesting, for variable names

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
        rendered = _convert(ref, value.source, value.target, value.decimals, self)
        return _with_problem(rendered, read_problem)

    # -- reading -------------------------------------------------------------------------

    def access(self, access: Access, item: str) -> tuple[str, str | None]:
        """SQL for the value, and the problem of a JSON text along the way that does not parse."""
        ref = item if access.column is None else f"{self.table}.{quote(access.column)}"
        problem = None
        for step in access.steps:
            if step.via is Kind.STRING:
                problem = _unparsable(ref, access.label)
            ref = _step(ref, step)
        return ref, problem

    def custom_object(self, value: CustomObject) -> Rendered:
        base, problem = self.access(value.base, "")
        problems = [
            _unparsable(base, value.base.label) if value.base.kind is Kind.STRING else problem
        ]
        problems.append(
            _shape_problem(_parsed(base, value.base.kind), value.base, FieldType.OBJECT)
        )
        members = []
        for name, prop in value.properties:
            rendered = self.value(prop)
            members.append((name, rendered.json, value.skip_nulls))
            problems.append(rendered.problem)
        text = f"{_object(members)} || {_unless(_is_null(base, value.base.kind))}"
        return Rendered(text, text, _first(problems))

    def custom_array(self, value: CustomArray) -> Rendered:
        base, problem = self.access(value.base, "")
        items = base
        if value.base.kind in (Kind.STRING, Kind.JSON):
            items = f"json_extract({_parsed(base, value.base.kind)}, '$[*]')"
        self.depth += 1
        var = f"v{self.depth}"
        props = [(name, self.value(prop, var)) for name, prop in value.properties]
        self.depth -= 1
        item_json = _object([(n, r.json, True) for n, r in props])
        item_problems = [r.problem for _, r in props]
        if kind_of(value.base.type) is Kind.LIST:
            item_json = f"{item_json} || {_unless(f'{var} IS NULL')}"
        else:
            not_object = f"json_type({var}) <> 'OBJECT'"
            item_json = f"{item_json} || {_unless(not_object)}"
            item_problems.append(
                f"CASE WHEN json_type({var}) NOT IN ('OBJECT', 'NULL') THEN"
                f" {literal(value.base.label + '[] holds an item that is not an object')} END"
            )
        item_json = f"coalesce({item_json}, 'null')"
        items_json = _joined(items, var, item_json, "[]")
        text = f"{items_json} || {_unless(_is_null(base, value.base.kind))}"
        problems = [
            _unparsable(base, value.base.label) if value.base.kind is Kind.STRING else problem
        ]
        problems.append(_shape_problem(_parsed(base, value.base.kind), value.base, FieldType.ARRAY))
        item_problem = _first(item_problems)
        if item_problem is not None:
            problems.append(
                f"list_any_value(list_transform({items}, lambda {var}: {item_problem}))"
            )
        return Rendered(text, text, _first(problems))

    # -- JSON text of any Arrow type -----------------------------------------------------

    def json_text(self, ref: str, arrow_type: pa.DataType, decimals: DecimalsAs) -> str:
        """`ref` as JSON text, NULL when it is null; ISO dates, base64 bytes, no NaN."""
        kind = kind_of(arrow_type)
        if kind in (Kind.STRUCT, Kind.MAP, Kind.LIST) and not _needs_care(arrow_type, decimals):
            return f"CAST(to_json({ref}) AS VARCHAR)"
        if kind is Kind.STRUCT:
            members = [
                (
                    child.name,
                    self.json_text(_struct(ref, child.name), child.type, decimals),
                    False,
                )
                for child in struct_fields(arrow_type)
            ]
            return f"{_object(members)} || {_unless(f'{ref} IS NULL')}"
        if kind in (Kind.LIST, Kind.MAP):
            return self._json_list(ref, arrow_type, decimals)
        return _scalar_json(ref, arrow_type, kind, decimals)

    def _json_list(self, ref: str, arrow_type: pa.DataType, decimals: DecimalsAs) -> str:
        self.depth += 1
        var = f"v{self.depth}"
        if kind_of(arrow_type) is Kind.MAP:
            value = self.json_text(f"{var}.value", element_type(arrow_type), decimals)
            name = f"CAST(to_json(CAST({var}.key AS VARCHAR)) AS VARCHAR)"
            entry = f"{name} || ':' || coalesce({value}, 'null')"
            body = _joined(f"map_entries({ref})", var, entry, "{}")
        else:
            value = self.json_text(var, element_type(arrow_type), decimals)
            body = _joined(ref, var, f"coalesce({value}, 'null')", "[]")
        self.depth -= 1
        return body  # NULL for a NULL list: the || of _joined carries it

    def non_finite(self, ref: str, arrow_type: pa.DataType, label: str) -> str | None:
        """A problem when a float anywhere in the value is NaN or infinite."""
        kind = kind_of(arrow_type)
        if kind is Kind.FLOAT:
            return _not_finite(ref, label)
        if kind is Kind.STRUCT:
            return _first(
                [
                    self.non_finite(_struct(ref, c.name), c.type, f"{label}.{c.name}")
                    for c in struct_fields(arrow_type)
                ]
            )
        if kind in (Kind.LIST, Kind.MAP):
            inner = element_type(arrow_type)
            values = f"map_values({ref})" if kind is Kind.MAP else ref
            self.depth += 1
            var = f"v{self.depth}"
            problem = self.non_finite(var, inner, f"{label}[]")
            self.depth -= 1
            if problem is not None:
                return f"list_any_value(list_transform({values}, lambda {var}: {problem}))"
        return None


def _convert(
    ref: str, access: Access, target: FieldType, decimals: DecimalsAs, renderer: _Renderer
) -> Rendered:
    """The value read at `ref` sent as `target` (the binder checked the pair is allowed)."""
    kind = access.kind
    label = access.label
    if kind is Kind.NULL:
        return Rendered("NULL::VARCHAR", "NULL")
    if target is FieldType.ANY or _native(kind, target):
        text = renderer.json_text(ref, access.type, decimals)
        problem = renderer.non_finite(ref, access.type, label)
        value = text if kind in (Kind.STRUCT, Kind.MAP, Kind.LIST, Kind.JSON) else ref
        return Rendered(text, value, problem)
    if kind in (Kind.JSON, Kind.STRING) and target in (FieldType.OBJECT, FieldType.ARRAY):
        doc = _parsed(ref, kind)
        problems = [_unparsable(ref, label) if kind is Kind.STRING else None]
        problems.append(_shape_problem(doc, access, target))
        text = f"CAST({doc} AS VARCHAR)"
        return Rendered(text, text, _first(problems))
    return _CONVERSIONS[target](_Source(ref, kind, access))


def _native(kind: Kind, target: FieldType) -> bool:
    """Sent as it is: the kind already is what the field takes."""
    return (kind, target) in {
        (Kind.STRING, FieldType.STRING),
        (Kind.INTEGER, FieldType.NUMBER),
        (Kind.FLOAT, FieldType.NUMBER),
        (Kind.DECIMAL, FieldType.NUMBER),
        (Kind.INTEGER, FieldType.INTEGER),
        (Kind.BOOLEAN, FieldType.BOOLEAN),
        (Kind.TIMESTAMP, FieldType.DATETIME),
        (Kind.DATE, FieldType.DATE),
        (Kind.STRUCT, FieldType.OBJECT),
        (Kind.MAP, FieldType.OBJECT),
        (Kind.LIST, FieldType.ARRAY),
    }


@dataclass(frozen=True)
class _Source:
    """A value to convert where the conversion may fail row by row (the value is NULL and the
    problem says why). A JSON value converts as a column of its JSON type would: a JSON string
    like a text column, a JSON number like a number column."""

    ref: str
    kind: Kind
    access: Access

    @property
    def is_json(self) -> bool:
        return self.kind is Kind.JSON

    @property
    def text(self) -> str:
        return _json_text_value(self.ref) if self.is_json else f"trim({self.ref})"

    @property
    def present(self) -> str:
        """The source has a value (JSON null counts as none)."""
        json_null = f" AND json_type({self.ref}) <> 'NULL'" if self.is_json else ""
        return f"{self.ref} IS NOT NULL{json_null}"

    def json_type_in(self, *types: str) -> str:
        return f"json_type({self.ref}) IN ({', '.join(literal(t) for t in types)})"

    def checked(self, json_sql: str, value: str, says: str) -> Rendered:
        """Where the source has a value but the conversion gave none, the row has a problem."""
        message = literal(f"{self.access.label} {says}")
        problem = f"CASE WHEN {self.present} AND ({value}) IS NULL THEN {message} END"
        return Rendered(json_sql, value, problem)


def _to_string(src: _Source) -> Rendered:
    if src.is_json:
        scalar = src.json_type_in("BIGINT", "UBIGINT", "DOUBLE", "BOOLEAN")
        value = f"CASE WHEN {scalar} THEN CAST({src.ref} AS VARCHAR) ELSE {src.text} END"
        return src.checked(f"CAST(to_json({value}) AS VARCHAR)", value, "is not text")
    value = _as_text(src.ref, src.access.type, src.kind)
    problem = _not_finite(src.ref, src.access.label) if src.kind is Kind.FLOAT else None
    return Rendered(f"CAST(to_json({value}) AS VARCHAR)", value, problem)


def _to_number(src: _Source) -> Rendered:
    text = src.text
    value = f"CASE WHEN regexp_full_match({text}, {literal(_JSON_NUMBER)}) THEN {text} END"
    if src.is_json:
        numeric = src.json_type_in("BIGINT", "UBIGINT", "DOUBLE")
        value = f"CASE WHEN {numeric} THEN CAST({src.ref} AS VARCHAR) ELSE {value} END"
    return src.checked(value, value, "is not a number")


def _to_integer(src: _Source) -> Rendered:
    text, whens = src.text, []
    if src.kind in (Kind.STRING, Kind.JSON):
        whole = f"regexp_full_match({text}, {literal(_JSON_INTEGER)})"
        whens.append(f"WHEN {whole} THEN TRY_CAST({text} AS HUGEINT)")
    if src.kind is not Kind.STRING:
        number = f"CAST({src.ref} AS DOUBLE)" if src.is_json else src.ref
        numeric = src.json_type_in("BIGINT", "UBIGINT", "DOUBLE") + " AND " if src.is_json else ""
        whens.append(f"WHEN {numeric}{number} = trunc({number}) THEN TRY_CAST({number} AS HUGEINT)")
    value = f"CASE {' '.join(whens)} END"
    return src.checked(f"CAST({value} AS VARCHAR)", value, "is not a whole number")


def _to_boolean(src: _Source) -> Rendered:
    value = f"CASE lower({src.text}) WHEN 'true' THEN true WHEN 'false' THEN false END"
    if src.is_json:
        boolean = src.json_type_in("BOOLEAN")
        value = f"CASE WHEN {boolean} THEN CAST({src.ref} AS BOOLEAN) ELSE {value} END"
    return src.checked(f"CAST({value} AS VARCHAR)", value, "is not true or false")


def _to_datetime(src: _Source) -> Rendered:
    if src.kind is Kind.DATE:
        value = f"CAST({src.ref} AS TIMESTAMPTZ)"
    else:
        value = f"TRY_CAST({src.text} AS TIMESTAMPTZ)"
    iso = f"strftime({value}, {literal(_ISO_TIMESTAMP_UTC)})"
    return src.checked(iso, value, "is not a date and time")


def _to_date(src: _Source) -> Rendered:
    if src.kind is Kind.TIMESTAMP:
        value = f"CAST({src.ref} AS DATE)"
    else:
        value = f"TRY_CAST({src.text} AS DATE)"
    iso = f"strftime({value}, {literal(chr(34) + '%Y-%m-%d' + chr(34))})"
    return src.checked(iso, value, "is not a date")


_CONVERSIONS = {
    FieldType.STRING: _to_string,
    FieldType.NUMBER: _to_number,
    FieldType.INTEGER: _to_integer,
    FieldType.BOOLEAN: _to_boolean,
    FieldType.DATETIME: _to_datetime,
    FieldType.DATE: _to_date,
}


def _json_text_value(ref: str) -> str:
    """The text of a JSON string (NULL for any other JSON value)."""
    return f"CASE WHEN json_type({ref}) = 'VARCHAR' THEN trim(json_extract_string({ref}, '$')) END"


def _shape_problem(doc: str, access: Access, target: FieldType) -> str | None:
    if access.kind not in (Kind.JSON, Kind.STRING):
        return None
    types = f"{literal(_JSON_TYPES[target])}, 'NULL'"
    message = literal(f"{access.label} is not {'an' if target[0] in 'aeiou' else 'a'} {target}")
    return f"CASE WHEN json_type({doc}) NOT IN ({types}) THEN {message} END"


def _is_null(ref: str, kind: Kind) -> str:
    """SQL NULL, or a JSON null (as ORMs write into jsonb columns)."""
    if kind is Kind.JSON:
        return f"({ref} IS NULL OR json_type({ref}) = 'NULL')"
    if kind is Kind.STRING:
        return f"({ref} IS NULL OR (json_valid({ref}) AND json_type({ref}) = 'NULL'))"
    return f"{ref} IS NULL"


def _parsed(ref: str, kind: Kind) -> str:
    """JSON text held in a string column, as JSON; NULL where it does not parse."""
    if kind is Kind.STRING:
        return f"CASE WHEN json_valid({ref}) THEN CAST({ref} AS JSON) END"
    return ref


def _unparsable(ref: str, label: str) -> str:
    message = literal(f"{label} is not valid JSON")
    return f"CASE WHEN {ref} IS NOT NULL AND NOT json_valid({ref}) THEN {message} END"


def _not_finite(ref: str, label: str) -> str:
    message = literal(f"{label} is NaN or infinite, which JSON cannot carry")
    return f"CASE WHEN NOT isfinite({ref}) THEN {message} END"


def _as_text(ref: str, arrow_type: pa.DataType, kind: Kind) -> str:
    """A scalar as the text a string field gets: ISO dates, base64 bytes."""
    if kind is Kind.TIMESTAMP:
        fmt = _ISO_TIMESTAMP_UTC if timezone_of(arrow_type) else _ISO_TIMESTAMP
        value = f"timezone('UTC', {ref})" if timezone_of(arrow_type) else ref
        return f"strftime({value}, {literal(fmt.strip(chr(34)))})"
    if kind is Kind.DATE:
        return f"strftime({ref}, '%Y-%m-%d')"
    if kind is Kind.BINARY:
        return f"base64({ref})"
    if kind is Kind.FLOAT:
        return f"CASE WHEN isfinite({ref}) THEN CAST({ref} AS VARCHAR) END"
    return f"CAST({ref} AS VARCHAR)"


def _scalar_json(ref: str, arrow_type: pa.DataType, kind: Kind, decimals: DecimalsAs) -> str:
    if kind in (Kind.BOOLEAN, Kind.INTEGER, Kind.JSON):
        return f"CAST({ref} AS VARCHAR)"
    if kind is Kind.FLOAT:
        return f"CASE WHEN isfinite({ref}) THEN CAST({ref} AS VARCHAR) END"
    if kind is Kind.DECIMAL:
        text = f"CAST({ref} AS VARCHAR)"
        return f"'\"' || {text} || '\"'" if decimals is DecimalsAs.STRING else text
    if kind is Kind.TIMESTAMP:
        if timezone_of(arrow_type):
            return f"strftime(timezone('UTC', {ref}), {literal(_ISO_TIMESTAMP_UTC)})"
        return f"strftime({ref}, {literal(_ISO_TIMESTAMP)})"
    if kind is Kind.DATE:
        return f"strftime({ref}, {literal(chr(34) + '%Y-%m-%d' + chr(34))})"
    if kind in (Kind.BINARY, Kind.TIME):
        return f"CAST(to_json({_as_text(ref, arrow_type, kind)}) AS VARCHAR)"
    if kind is Kind.NULL:
        return "NULL::VARCHAR"
    return f"CAST(to_json({ref}) AS VARCHAR)"  # strings (escaped) and the rest


def _needs_care(arrow_type: pa.DataType, decimals: DecimalsAs) -> bool:
    """Whether DuckDB's own to_json would get a nested value wrong for us.

    It writes timestamps with a space, bytes as escaped text and NaN as a bare word.
    """
    kind = kind_of(arrow_type)
    if kind in (Kind.TIMESTAMP, Kind.BINARY, Kind.FLOAT):
        return True
    if kind is Kind.DECIMAL:
        return decimals is DecimalsAs.STRING
    if kind is Kind.STRUCT:
        return any(_needs_care(c.type, decimals) for c in struct_fields(arrow_type))
    if kind is Kind.MAP:
        return _needs_care(element_type(arrow_type), decimals)
    if kind is Kind.LIST:
        return _needs_care(element_type(arrow_type), decimals)
    return False


def _struct(ref: str, name: str) -> str:
    return f"struct_extract({ref}, {literal(name)})"


def _step(ref: str, step: Step) -> str:
    if step.via is Kind.STRUCT:
        return _struct(ref, step.names[0])
    if step.via is Kind.MAP:
        return f"{ref}[{literal(step.names[0])}]"
    pointer = "".join("/" + n.replace("~", "~0").replace("/", "~1") for n in step.names)
    if step.via is Kind.STRING:
        ref = f"CASE WHEN json_valid({ref}) THEN {ref} END"
    return f"json_extract({ref}, {literal(pointer)})"


def _joined(items: str, var: str, each: str, brackets: str) -> str:
    """The JSON texts `each` (over `var`) of every item of a list, joined as an array or
    object; NULL when the list is."""
    joined = f"array_to_string(list_transform({items}, lambda {var}: {each}), ',')"
    return f"'{brackets[0]}' || {joined} || '{brackets[1]}'"


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
    return Rendered(rendered.json, rendered.value, _first([problem, rendered.problem]))


def _first(problems: list[str | None]) -> str | None:
    found = [p for p in problems if p]
    if not found:
        return None
    return found[0] if len(found) == 1 else f"coalesce({', '.join(found)})"


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
