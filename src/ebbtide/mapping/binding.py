"""A compiled mapping bound to the model's columns: every path resolved, every type checked.

Binding happens once per run, as soon as the model's schema is known and before anything is
sent. What can only be told row by row (text that is not a number, NaN, JSON of the wrong
shape) is left to the payload renderer, which fails those rows alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pyarrow as pa

from ebbtide.config.models import DecimalsAs, FieldSource, FieldType, PropertySource
from ebbtide.errors import MappingError, ModelError
from ebbtide.mapping.compiler import CompiledField, CompiledMapping, check_static
from ebbtide.ports import FieldSpec
from ebbtide.suggest import did_you_mean

JSON_TYPE = pa.json_()


class Kind(StrEnum):
    """What a value is, as far as sending it goes."""

    NULL = "null"
    BOOLEAN = "boolean"
    INTEGER = "integer"
    FLOAT = "float"
    DECIMAL = "decimal"
    STRING = "string"
    BINARY = "binary"
    DATE = "date"
    TIME = "time"
    TIMESTAMP = "timestamp"
    STRUCT = "struct"
    MAP = "map"
    LIST = "list"
    JSON = "json"  # a JSON document whose shape is only known row by row
    OTHER = "other"  # intervals, UUIDs, …: sent as DuckDB renders them in JSON


def kind_of(arrow_type: pa.DataType) -> Kind:
    """The kind of an Arrow type (dictionary-encoded columns count as their values)."""
    if isinstance(arrow_type, pa.BaseExtensionType):
        if arrow_type.extension_name == "arrow.json":
            return Kind.JSON
        return kind_of(arrow_type.storage_type)
    if pa.types.is_dictionary(arrow_type):
        return kind_of(arrow_type.value_type)
    for test, kind in _KIND_TESTS:
        if test(arrow_type):
            return kind
    return Kind.OTHER


def struct_fields(arrow_type: pa.DataType) -> list[pa.Field[Any]]:
    """The properties of a STRUCT type, in order."""
    struct: Any = arrow_type
    return [struct.field(i) for i in range(struct.num_fields)]


def element_type(arrow_type: pa.DataType) -> pa.DataType:
    """The type of each item of a LIST, or of each value of a MAP."""
    container: Any = arrow_type
    element: pa.DataType = (
        container.item_type if kind_of(arrow_type) is Kind.MAP else container.value_type
    )
    return element


def timezone_of(arrow_type: pa.DataType) -> str | None:
    """The time zone of a TIMESTAMP type (None: a naive timestamp)."""
    timestamp: Any = arrow_type
    return timestamp.tz  # type: ignore[no-any-return]


_KIND_TESTS: list[tuple[Any, Kind]] = [
    (pa.types.is_null, Kind.NULL),
    (pa.types.is_boolean, Kind.BOOLEAN),
    (pa.types.is_integer, Kind.INTEGER),
    (pa.types.is_floating, Kind.FLOAT),
    (pa.types.is_decimal, Kind.DECIMAL),
    (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), Kind.STRING),
    (pa.types.is_string_view, Kind.STRING),
    (
        lambda t: (
            pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
        ),
        Kind.BINARY,
    ),
    (pa.types.is_date, Kind.DATE),
    (pa.types.is_time, Kind.TIME),
    (pa.types.is_timestamp, Kind.TIMESTAMP),
    (pa.types.is_struct, Kind.STRUCT),
    (pa.types.is_map, Kind.MAP),
    (
        lambda t: (
            pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
        ),
        Kind.LIST,
    ),
]

_SCALARS = frozenset(
    {
        Kind.BOOLEAN,
        Kind.INTEGER,
        Kind.FLOAT,
        Kind.DECIMAL,
        Kind.STRING,
        Kind.BINARY,
        Kind.DATE,
        Kind.TIME,
        Kind.TIMESTAMP,
        Kind.OTHER,
    }
)
# Which kinds a field of each type can be filled from. STRING and JSON sources are checked row
# by row for the types that need it (a text that is not a number fails that row alone).
CONVERTIBLE: dict[FieldType, frozenset[Kind]] = {
    FieldType.ANY: frozenset(Kind),
    FieldType.STRING: _SCALARS | {Kind.JSON},
    FieldType.NUMBER: frozenset({Kind.INTEGER, Kind.FLOAT, Kind.DECIMAL, Kind.STRING, Kind.JSON}),
    FieldType.INTEGER: frozenset({Kind.INTEGER, Kind.FLOAT, Kind.DECIMAL, Kind.STRING, Kind.JSON}),
    FieldType.BOOLEAN: frozenset({Kind.BOOLEAN, Kind.STRING, Kind.JSON}),
    FieldType.DATETIME: frozenset({Kind.TIMESTAMP, Kind.DATE, Kind.STRING, Kind.JSON}),
    FieldType.DATE: frozenset({Kind.DATE, Kind.TIMESTAMP, Kind.STRING, Kind.JSON}),
    FieldType.OBJECT: frozenset({Kind.STRUCT, Kind.MAP, Kind.STRING, Kind.JSON}),
    FieldType.ARRAY: frozenset({Kind.LIST, Kind.STRING, Kind.JSON}),
}
_OBJECTS = CONVERTIBLE[FieldType.OBJECT]


@dataclass(frozen=True)
class Step:
    """Going one level into an object: a STRUCT field, a MAP key, or a path in JSON text."""

    via: Kind  # STRUCT, MAP, JSON, or STRING (JSON text, parsed row by row)
    names: tuple[str, ...]


@dataclass(frozen=True)
class Access:
    """A value read from a row: a column (None: the array item being customized), then steps."""

    column: str | None
    steps: tuple[Step, ...]
    type: pa.DataType
    label: str  # how messages name it: "address.city", "products[].price"

    @property
    def kind(self) -> Kind:
        return kind_of(self.type)


@dataclass(frozen=True)
class Static:
    """A value written in the workspace, the same for every row."""

    value: Any


@dataclass(frozen=True)
class Converted:
    """A value sent as the type the destination field takes."""

    source: Access | Static
    target: FieldType
    decimals: DecimalsAs = DecimalsAs.NUMBER


@dataclass(frozen=True)
class CustomObject:
    """An object built property by property; null when the object it draws on is null.
    Without a base, it is built from the model's columns (and never null)."""

    base: Access | None
    properties: tuple[tuple[str, Converted], ...]
    skip_nulls: bool


@dataclass(frozen=True)
class CustomArray:
    """Chosen properties of each item; an item without one leaves it out."""

    base: Access
    properties: tuple[tuple[str, Converted], ...]  # accesses relative to the item


Value = Converted | CustomObject | CustomArray


@dataclass(frozen=True)
class BoundField:
    name: str
    value: Value
    skip_nulls: bool

    @property
    def nested(self) -> bool:
        """Sent as a JSON object or array rather than a scalar."""
        if isinstance(self.value, CustomObject | CustomArray):
            return True
        source = self.value.source
        if isinstance(source, Static):
            return isinstance(source.value, dict | list)
        return self.value.target in (FieldType.OBJECT, FieldType.ARRAY) or source.kind in (
            Kind.STRUCT,
            Kind.MAP,
            Kind.LIST,
            Kind.JSON,
        )


@dataclass(frozen=True)
class BoundMapping:
    """A mapping ready to render payloads from the model's rows."""

    mapping: CompiledMapping
    fields: tuple[BoundField, ...]
    hashed: tuple[str, ...]  # per field, the columns it reads: a change there is an update

    @property
    def columns(self) -> tuple[str, ...]:
        """The model columns the run reads: the key, then each column a field reads, once."""
        return tuple(dict.fromkeys((*self.mapping.key_columns, *self.hashed)))


def bind(mapping: CompiledMapping, schema: pa.Schema) -> BoundMapping:
    """Resolve every field of `mapping` against the model's schema, or say what does not fit."""
    _check_key(mapping, schema)
    binder = _Binder(mapping, schema)
    fields = tuple(binder.field(f) for f in mapping.fields)
    bound = BoundMapping(mapping, fields, tuple(binder.read))
    _check_reserved(mapping, bound.columns)
    return bound


def _check_reserved(mapping: CompiledMapping, columns: tuple[str, ...]) -> None:
    reserved = [c for c in columns if c.startswith("__")]
    if reserved:
        raise ModelError(
            f"mapping {mapping.name!r}: model {mapping.model!r} column(s)"
            f" {', '.join(repr(c) for c in reserved)}: names starting with __ are reserved"
            " for ebbtide; rename them in the model's SQL"
        )


def _check_key(mapping: CompiledMapping, schema: pa.Schema) -> None:
    missing = [c for c in mapping.key_columns if c not in schema.names]
    if missing:
        raise ModelError(
            f"mapping {mapping.name!r}: model {mapping.model!r} has no column"
            f" {', '.join(repr(c) for c in missing)} (it has: {', '.join(schema.names)})"
        )


class _Binder:
    def __init__(self, mapping: CompiledMapping, schema: pa.Schema) -> None:
        self.mapping, self.schema = mapping, schema
        self.read: list[str] = []  # columns in the order the fields read them
        self.where = ""  # the field (and property) being bound, for messages
        self.path: tuple[str, ...] = ()  # the same, as a key path in the workspace

    def field(self, field: CompiledField) -> BoundField:
        source, spec = field.source, field.spec
        self.where = f"mapping {self.mapping.name!r}: field {field.name!r}"
        self.path = ("fields", field.name)
        value: Value
        if source.kind == "value":
            value = Converted(Static(source.value), spec.type, source.decimals)
        elif source.properties is None:
            target = spec.type
            if target is FieldType.ANY and source.kind in ("object", "array"):
                target = FieldType(source.kind)
            value = self.converted(self.column(_reference(source)), target, source.decimals)
        elif source.kind == "object":
            value = self.custom_object(source, spec)
        else:
            value = self.custom_array(source, spec)
        return BoundField(field.name, value, source.skip_nulls)

    @contextmanager
    def property(self, name: str) -> Iterator[None]:
        where, path = self.where, self.path
        self.where, self.path = f"{where}, property {name!r}", (*path, "properties", name)
        try:
            yield
        finally:
            self.where, self.path = where, path

    def column(self, reference: str) -> Access:
        """A model column, or a dotted path into one (`address.city`)."""
        if reference in self.schema.names:
            self.read.append(reference)
            return Access(reference, (), self.schema.field(reference).type, reference)
        parts = reference.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            root = ".".join(parts[:cut])
            if root in self.schema.names:
                self.read.append(root)
                start = Access(root, (), self.schema.field(root).type, root)
                return self.into(start, tuple(parts[cut:]))
        raise MappingError(
            f"{self.where}: model {self.mapping.model!r} has no column {parts[0]!r}"
            f" (it has: {', '.join(self.schema.names)})",
            path=self.path,
        )

    def into(self, start: Access, path: tuple[str, ...]) -> Access:
        """Follow `path` into an object value; JSON takes the rest of the path in one step."""
        at = start
        for i, name in enumerate(path):
            kind = at.kind
            label = f"{at.label}.{name}"
            if kind in (Kind.JSON, Kind.STRING):
                rest = path[i:]
                label = ".".join((at.label, *rest))
                return Access(at.column, (*at.steps, Step(kind, rest)), JSON_TYPE, label)
            if kind is Kind.STRUCT:
                children = {f.name: f.type for f in struct_fields(at.type)}
                if name not in children:
                    raise MappingError(
                        f"{self.where}: {at.label} has no property {name!r}"
                        + did_you_mean(name, list(children), "it has"),
                        path=self.path,
                    )
                child = children[name]
            elif kind is Kind.MAP:
                child = element_type(at.type)
            else:
                raise MappingError(
                    f"{self.where}: {at.label} is {_a(kind)}, not an object: {label} names nothing",
                    path=self.path,
                )
            at = Access(at.column, (*at.steps, Step(kind, (name,))), child, label)
        return at

    def converted(self, access: Access, target: FieldType, decimals: DecimalsAs) -> Converted:
        if access.kind is not Kind.NULL and access.kind not in CONVERTIBLE[target]:
            raise MappingError(
                f"{self.where}: {access.label} is {_a(access.kind)}, which cannot be sent as"
                f" {_a(target)}",
                path=self.path,
            )
        return Converted(access, target, decimals)

    def custom_object(self, source: FieldSource, spec: FieldSpec) -> CustomObject:
        base = None if source.object is None else self.column(source.object)
        if base is not None:
            self._check_object(base, "an object")
        props = []
        for name, prop in (source.properties or {}).items():
            prop_spec = spec.property_named(name) or FieldSpec(name)
            with self.property(name):
                props.append((name, self.object_property(base, prop, prop_spec, source.decimals)))
        return CustomObject(base, tuple(props), source.skip_nulls)

    def object_property(
        self, base: Access | None, prop: PropertySource, spec: FieldSpec, decimals: DecimalsAs
    ) -> Converted:
        if "value" in prop.model_fields_set:
            check_static(self.where, prop.value, spec.type, self.path)
            return Converted(Static(prop.value), spec.type, decimals)
        if prop.column is not None:
            return self.converted(self.column(prop.column), spec.type, decimals)
        assert prop.path is not None
        if base is None:  # an object of model columns: a name is a column (or a path in one)
            return self.converted(self.column(prop.path), spec.type, decimals)
        path = tuple(prop.path.split("."))
        outside = base.kind is Kind.STRUCT and path[0] not in {
            f.name for f in struct_fields(base.type)
        }
        if outside and (prop.path in self.schema.names or path[0] in self.schema.names):
            # Not a property of the object: a column of the model, as Segment allows.
            return self.converted(self.column(prop.path), spec.type, decimals)
        return self.converted(self.into(base, path), spec.type, decimals)

    def custom_array(self, source: FieldSource, spec: FieldSpec) -> CustomArray:
        base = self.column(_reference(source))
        if base.kind not in CONVERTIBLE[FieldType.ARRAY]:
            raise MappingError(
                f"{self.where}: {base.label} is {_a(base.kind)}, not an array", path=self.path
            )
        item_type = element_type(base.type) if base.kind is Kind.LIST else JSON_TYPE
        item = Access(None, (), item_type, f"{base.label}[]")
        self._check_object(item, "an array of objects")
        props = []
        for name, prop in (source.properties or {}).items():
            assert prop.path is not None
            prop_spec = spec.property_named(name) or FieldSpec(name)
            with self.property(name):
                path = tuple(prop.path.split("."))
                props.append(
                    (name, self.converted(self.into(item, path), prop_spec.type, source.decimals))
                )
        return CustomArray(base, tuple(props))

    def _check_object(self, access: Access, what: str) -> None:
        if access.kind not in _OBJECTS:
            raise MappingError(
                f"{self.where}: {access.label} is {_a(access.kind)}, not {what}",
                path=self.path,
            )


def _reference(source: FieldSource) -> str:
    assert source.reference is not None
    return source.reference


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"
