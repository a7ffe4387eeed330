"""The mapping compiler: a mapping checked against its action and frozen once per run."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from ebbtide.config.models import (
    ChangeDetectionSpec,
    FieldSource,
    FieldType,
    MappingSpec,
    ModelSpec,
    SyncMode,
)
from ebbtide.config.schedule import duration
from ebbtide.errors import MappingError
from ebbtide.ports import ActionSpec, FieldSpec, Operation
from ebbtide.suggest import did_you_mean
from ebbtide.values import CursorSettings

_SENT_BY_MODE: dict[SyncMode, frozenset[Operation]] = {
    SyncMode.UPSERT: frozenset({Operation.ADDED, Operation.UPDATED}),
    SyncMode.INSERT: frozenset({Operation.ADDED}),
    SyncMode.UPDATE: frozenset({Operation.ADDED, Operation.UPDATED}),
    SyncMode.MIRROR: frozenset(Operation),
}


@dataclass(frozen=True)
class CompiledField:
    """One destination field: where its value comes from and what the action takes."""

    name: str
    source: FieldSource
    spec: FieldSpec


def column_field(name: str, column: str) -> CompiledField:
    """A field filled from one model column, as `name: column` in the workspace."""
    return CompiledField(name, FieldSource(column=column), FieldSpec(name))


@dataclass(frozen=True)
class CompiledMapping:
    """Everything the engine needs to know about a mapping during a run."""

    name: str
    model: str
    destination: str
    action: str
    mode: SyncMode
    key_columns: tuple[str, ...]
    fields: tuple[CompiledField, ...]
    sensitive: frozenset[str] = frozenset()
    field_columns: bool = True  # the destination reads typed field columns, not only records
    cursor: CursorSettings | None = None  # `change_detection:`; None: every row is hashed

    @property
    def signature(self) -> str:
        """Changes whenever what is sent for a row would change (fields, names, key)."""
        if all(_plain(f.source) for f in self.fields):
            # The shape mappings had before objects and arrays: their snapshots stay valid.
            fields: Any = [[f.name, f.source.column] for f in self.fields]
        else:
            fields = {
                f.name: [f.source.model_dump(mode="json", exclude_defaults=True), f.spec.type]
                for f in self.fields
            }
        shape = {"key": self.key_columns, "fields": fields}
        return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]

    @property
    def operations_sent(self) -> frozenset[Operation]:
        """Which changes this mapping's mode sends; the others only move the snapshot."""
        return _SENT_BY_MODE[self.mode]


def _plain(source: FieldSource) -> bool:
    return source.kind == "column" and source == FieldSource(column=source.column)


def compile_mapping(
    name: str, spec: MappingSpec, model: ModelSpec, action: ActionSpec
) -> CompiledMapping:
    """Check a mapping against its action and freeze it for a run.

    What needs the model's column types (paths into objects, conversions) is checked when a
    run binds the mapping to the model's schema (`engine.binding`).
    """
    if spec.mode not in action.modes:
        modes = ", ".join(sorted(action.modes))
        raise MappingError(
            f"mapping {name!r}: action {action.name!r} does not support mode"
            f" {spec.mode!s} (it supports: {modes})",
            path=("mode",),
        )
    fields = tuple(
        CompiledField(field, source, _field_spec(name, action, field))
        for field, source in spec.fields.items()
    )
    _check_required(name, action, spec)
    for field in fields:
        _check_source(name, field)
    unknown = [f for f in spec.sensitive if f not in spec.fields]
    if unknown:
        raise MappingError(
            f"mapping {name!r}: sensitive field(s) {', '.join(map(repr, unknown))} are not mapped"
            + did_you_mean(unknown[0], sorted(spec.fields), "accepted"),
            path=("sensitive",),
        )
    return CompiledMapping(
        name=name,
        model=spec.model,
        destination=spec.destination,
        action=spec.action,
        mode=spec.mode,
        key_columns=tuple(model.primary_key),
        fields=fields,
        sensitive=frozenset(spec.sensitive),
        field_columns=action.field_columns,
        cursor=_cursor_settings(spec.change_detection),
    )


def _field_spec(mapping: str, action: ActionSpec, field: str) -> FieldSpec:
    """What the action takes in `field`; an action without a fixed list takes anything."""
    if field.startswith("__"):
        raise MappingError(
            f"mapping {mapping!r}: field {field!r}: names starting with __ are reserved",
            path=("fields", field),
        )
    if action.fields is None:
        return FieldSpec(field)
    found = next((f for f in action.fields if f.name == field), None)
    if found is None:
        accepted = sorted(f.name for f in action.fields)
        raise MappingError(
            f"mapping {mapping!r}: action {action.name!r} has no field {field!r}"
            + did_you_mean(field, accepted, "accepted"),
            path=("fields", field),
        )
    return found


def _check_required(mapping: str, action: ActionSpec, spec: MappingSpec) -> None:
    if action.fields is None:
        return
    missing = [f.name for f in action.fields if f.required and f.name not in spec.fields]
    if missing:
        raise MappingError(
            f"mapping {mapping!r}: action {action.name!r} requires field(s)"
            f" {', '.join(missing)}: map them under fields",
            path=("fields",),
        )


def _check_source(mapping: str, field: CompiledField) -> None:
    """What can be told without the model: the kind of source against the field's type."""
    source, spec = field.source, field.spec
    where = f"mapping {mapping!r}: field {field.name!r}"
    path: tuple[str, ...] = ("fields", field.name)
    wanted = {"object": FieldType.OBJECT, "array": FieldType.ARRAY}.get(source.kind)
    if wanted is not None and spec.type not in (FieldType.ANY, wanted):
        raise MappingError(
            f"{where} takes {_a(spec.type)}, not {_a(wanted)}: map a column instead",
            path=path + (source.kind,),
        )
    if source.kind == "value":
        check_static(where, source.value, spec.type, path + ("value",))
    if source.properties is None:
        return
    for prop, prop_source in source.properties.items():
        prop_spec = spec.property_named(prop)
        prop_path = path + ("properties", prop)
        if prop_spec is None:
            accepted = sorted(p.name for p in spec.properties or ())
            raise MappingError(
                f"{where}: the destination accepts no property {prop!r}"
                + did_you_mean(prop, accepted, "accepted"),
                path=prop_path,
            )
        if "value" in prop_source.model_fields_set:
            check_static(
                f"{where}, property {prop!r}", prop_source.value, prop_spec.type, prop_path
            )
    missing = [
        p.name for p in spec.properties or () if p.required and p.name not in source.properties
    ]
    if missing:
        raise MappingError(
            f"{where}: the destination requires property(ies) {', '.join(missing)}",
            path=path + ("properties",),
        )


_STATIC_TYPES: dict[FieldType, tuple[type, ...]] = {
    FieldType.STRING: (str,),
    FieldType.NUMBER: (int, float),
    FieldType.INTEGER: (int,),
    FieldType.BOOLEAN: (bool,),
    FieldType.OBJECT: (dict,),
    FieldType.ARRAY: (list,),
}


def check_static(where: str, value: Any, target: FieldType, path: tuple[str, ...]) -> None:
    """A static value must already be what the field takes (and valid JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise MappingError(f"{where}: NaN and infinities cannot be sent as JSON", path=path)
    if value is None or target is FieldType.ANY:
        return
    if target in (FieldType.DATE, FieldType.DATETIME):
        if not _is_iso_date(value, target):
            raise MappingError(f"{where} takes {_a(target)}, not {value!r}", path=path)
        return
    allowed = _STATIC_TYPES[target]
    is_bool = isinstance(value, bool)
    if not isinstance(value, allowed) or (is_bool and target is not FieldType.BOOLEAN):
        raise MappingError(f"{where} takes {_a(target)}, not {value!r}", path=path)


def _is_iso_date(value: Any, target: FieldType) -> bool:
    """A date (or date and time) as YAML reads it, or as ISO 8601 text."""
    if isinstance(value, dt.date):
        return True
    if not isinstance(value, str):
        return False
    parse = dt.date.fromisoformat if target is FieldType.DATE else dt.datetime.fromisoformat
    try:
        parse(value)
    except ValueError:
        return False
    return True


def _a(kind: FieldType) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _cursor_settings(spec: ChangeDetectionSpec | None) -> CursorSettings | None:
    if spec is None:
        return None
    lookback = spec.lookback
    return CursorSettings(
        column=spec.cursor,
        lookback=duration(lookback) if isinstance(lookback, str) else lookback,
        full_diff_every=spec.full_diff_every,
        full_diff_interval=duration(spec.full_diff_interval),
    )
