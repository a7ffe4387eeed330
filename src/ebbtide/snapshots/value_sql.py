"""DuckDB SQL for one value: its JSON text, and its conversion to a destination field's type.

Each value yields its JSON text (SQL NULL when the value is null), its typed value, and, where
a row's value can be wrong (NaN, text that is not a number, JSON of the wrong shape), the
problem that keeps the row from being sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa

from ebbtide.config.models import DecimalsAs, FieldType
from ebbtide.mapping.binding import Access, Kind, element_type, kind_of, struct_fields, timezone_of
from ebbtide.snapshots.sql_text import literal

_ISO_TIMESTAMP = '"%Y-%m-%dT%H:%M:%S.%f"'
_ISO_TIMESTAMP_UTC = '"%Y-%m-%dT%H:%M:%S.%fZ"'
_JSON_NUMBER = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"
_JSON_INTEGER = r"-?(0|[1-9][0-9]*)(\.0+)?"  # 7 and 7.0 are whole numbers
NULL = "'null'"
_JSON_TYPES = {FieldType.OBJECT: "OBJECT", FieldType.ARRAY: "ARRAY"}


@dataclass(frozen=True)
class Rendered:
    """A value as SQL: its JSON text, its typed value and what may keep a row from going out."""

    json: str
    value: str
    problem: str | None = None


# Built with one concat() per object: a chain of || copies the growing text at every step,
# and a CASE around a large expression makes DuckDB evaluate it row by row; a value that must
# be null instead gets `|| unless(...)` appended, which turns it into NULL cheaply.


def object_sql(members: list[tuple[str, str, bool]], *, keep_json_null: bool = False) -> str:
    """A JSON object from (name, JSON text, skip_nulls) members; a skipped null is left out.

    A JSON null counts as null, unless `keep_json_null`: array items leave out only what
    they lack, and keep the nulls they have.
    """
    if not members:
        return "'{}'"
    if not any(skip for _, _, skip in members):
        pieces = []
        for i, (name, text, _) in enumerate(members):
            pieces += [
                literal(("{" if i == 0 else ",") + member_key(name)),
                f"coalesce({text}, 'null')",
            ]
        return f"concat({', '.join(pieces)}, '}}')"
    parts = [
        f"{literal(member_key(name))} || {text if keep_json_null else f'nullif({text}, {NULL})'}"
        if skip
        else f"concat({literal(member_key(name))}, coalesce({text}, 'null'))"
        for name, text, skip in members
    ]
    return f"concat('{{', concat_ws(',', {', '.join(parts)}), '}}')"


def member_key(name: str) -> str:
    return json.dumps(name, ensure_ascii=False) + ":"


def unless(null_test: str) -> str:
    """Appended with || to a text: NULL where `null_test` holds, else nothing."""
    return f"CASE WHEN {null_test} THEN NULL ELSE '' END"


class ValueSQL:
    """Renders values; nested lists get lambda variables of their own depth."""

    def __init__(self) -> None:
        self.depth = 0  # lambda nesting, for variable names

    def json_text(self, ref: str, arrow_type: pa.DataType, decimals: DecimalsAs) -> str:
        """`ref` as JSON text, NULL when it is null; ISO dates, base64 bytes, no NaN."""
        kind = kind_of(arrow_type)
        if kind in (Kind.STRUCT, Kind.MAP, Kind.LIST) and not _needs_care(arrow_type, decimals):
            return f"CAST(to_json({ref}) AS VARCHAR)"
        if kind is Kind.STRUCT:
            members = [
                (
                    child.name,
                    self.json_text(struct_sql(ref, child.name), child.type, decimals),
                    False,
                )
                for child in struct_fields(arrow_type)
            ]
            return f"{object_sql(members)} || {unless(f'{ref} IS NULL')}"
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
            body = joined(f"map_entries({ref})", var, entry, "{}")
        else:
            value = self.json_text(var, element_type(arrow_type), decimals)
            body = joined(ref, var, f"coalesce({value}, 'null')", "[]")
        self.depth -= 1
        return body  # NULL for a NULL list: the || of _joined carries it

    def non_finite(self, ref: str, arrow_type: pa.DataType, label: str) -> str | None:
        """A problem when a float anywhere in the value is NaN or infinite."""
        kind = kind_of(arrow_type)
        if kind is Kind.FLOAT:
            return _not_finite(ref, label)
        if kind is Kind.STRUCT:
            return first(
                [
                    self.non_finite(struct_sql(ref, c.name), c.type, f"{label}.{c.name}")
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


def convert(
    ref: str, access: Access, target: FieldType, decimals: DecimalsAs, renderer: ValueSQL
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
        doc = parsed(ref, kind)
        problems = [unparsable(ref, label) if kind is Kind.STRING else None]
        problems.append(shape_problem(doc, access, target))
        text = f"CAST({doc} AS VARCHAR)"
        return Rendered(text, text, first(problems))
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
        digits = f"split_part({text}, '.', 1)"
        whens.append(f"WHEN {whole} THEN TRY_CAST({digits} AS HUGEINT)")
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


def shape_problem(doc: str, access: Access, target: FieldType) -> str | None:
    if access.kind not in (Kind.JSON, Kind.STRING):
        return None
    types = f"{literal(_JSON_TYPES[target])}, 'NULL'"
    message = literal(f"{access.label} is not {'an' if target[0] in 'aeiou' else 'a'} {target}")
    return f"CASE WHEN json_type({doc}) NOT IN ({types}) THEN {message} END"


def is_null(ref: str, kind: Kind) -> str:
    """SQL NULL, or a JSON null (as ORMs write into jsonb columns)."""
    if kind is Kind.JSON:
        return f"({ref} IS NULL OR json_type({ref}) = 'NULL')"
    if kind is Kind.STRING:
        return f"({ref} IS NULL OR (json_valid({ref}) AND json_type({ref}) = 'NULL'))"
    return f"{ref} IS NULL"


def parsed(ref: str, kind: Kind) -> str:
    """JSON text held in a string column, as JSON; NULL where it does not parse."""
    if kind is Kind.STRING:
        return f"CASE WHEN json_valid({ref}) THEN CAST({ref} AS JSON) END"
    return ref


def unparsable(ref: str, label: str) -> str:
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


def struct_sql(ref: str, name: str) -> str:
    return f"struct_extract({ref}, {literal(name)})"


def joined(items: str, var: str, each: str, brackets: str) -> str:
    """The JSON texts `each` (over `var`) of every item of a list, joined as an array or
    object; NULL when the list is."""
    joined = f"array_to_string(list_transform({items}, lambda {var}: {each}), ',')"
    return f"'{brackets[0]}' || {joined} || '{brackets[1]}'"


def first(problems: list[str | None]) -> str | None:
    found = [p for p in problems if p]
    if not found:
        return None
    return found[0] if len(found) == 1 else f"coalesce({', '.join(found)})"
