"""A mapping compiled once per run: the key, the columns it reads and the fields it sends."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pyarrow as pa

from ebbtide.config.models import MappingSpec, ModelSpec, SyncMode
from ebbtide.errors import MappingError, ModelError
from ebbtide.ports import ActionSpec, Operation
from ebbtide.suggest import did_you_mean

_SENT_BY_MODE: dict[SyncMode, frozenset[Operation]] = {
    SyncMode.UPSERT: frozenset({Operation.ADDED, Operation.UPDATED}),
    SyncMode.INSERT: frozenset({Operation.ADDED}),
    SyncMode.UPDATE: frozenset({Operation.ADDED, Operation.UPDATED}),
    SyncMode.MIRROR: frozenset(Operation),
}


@dataclass(frozen=True)
class FieldMapping:
    """One destination field filled from one model column."""

    field: str
    column: str


@dataclass(frozen=True)
class CompiledMapping:
    """Everything the engine needs to know about a mapping during a run."""

    name: str
    model: str
    destination: str
    action: str
    mode: SyncMode
    key_columns: tuple[str, ...]
    fields: tuple[FieldMapping, ...]
    sensitive: frozenset[str] = frozenset()

    @property
    def columns(self) -> tuple[str, ...]:
        """The model columns the run reads: the key, then each mapped column once."""
        seen = dict.fromkeys(self.key_columns)
        seen.update(dict.fromkeys(f.column for f in self.fields))
        return tuple(seen)

    @property
    def signature(self) -> str:
        """Changes whenever what is sent for a row would change (fields, names, key)."""
        shape = {"key": self.key_columns, "fields": [[f.field, f.column] for f in self.fields]}
        return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]

    @property
    def operations_sent(self) -> frozenset[Operation]:
        """Which changes this mapping's mode sends; the others only move the snapshot."""
        return _SENT_BY_MODE[self.mode]

    def check_columns(self, schema: pa.Schema) -> None:
        """Fail before anything is read in full when the model lacks a column we need."""
        reserved = [c for c in self.columns if c.startswith("__")]
        if reserved:
            raise ModelError(
                f"mapping {self.name!r}: model {self.model!r} column(s)"
                f" {', '.join(repr(c) for c in reserved)}: names starting with __ are reserved"
                " for ebbtide; rename them in the model's SQL"
            )
        missing = [c for c in self.columns if c not in schema.names]
        if missing:
            raise ModelError(
                f"mapping {self.name!r}: model {self.model!r} has no column"
                f" {', '.join(repr(c) for c in missing)} (it has: {', '.join(schema.names)})"
            )


def compile_mapping(
    name: str, spec: MappingSpec, model: ModelSpec, action: ActionSpec
) -> CompiledMapping:
    """Check a mapping against its action and freeze it for a run."""
    if spec.mode not in action.modes:
        modes = ", ".join(sorted(action.modes))
        raise MappingError(
            f"mapping {name!r}: action {action.name!r} does not support mode"
            f" {spec.mode!s} (it supports: {modes})"
        )
    for field in spec.fields:
        if field.startswith("__"):
            raise MappingError(
                f"mapping {name!r}: field {field!r}: names starting with __ are reserved"
            )
    _check_fields(name, spec, action)
    unknown = [f for f in spec.sensitive if f not in spec.fields]
    if unknown:
        raise MappingError(
            f"mapping {name!r}: sensitive field(s) {', '.join(map(repr, unknown))} are not mapped"
            + did_you_mean(unknown[0], sorted(spec.fields), "accepted")
        )
    return CompiledMapping(
        name=name,
        model=spec.model,
        destination=spec.destination,
        action=spec.action,
        mode=spec.mode,
        key_columns=tuple(model.primary_key),
        fields=tuple(FieldMapping(field, column) for field, column in spec.fields.items()),
        sensitive=frozenset(spec.sensitive),
    )


def _check_fields(name: str, spec: MappingSpec, action: ActionSpec) -> None:
    """Against an action with a fixed list of fields: nothing unknown, nothing required missing."""
    if action.fields is None:
        return
    accepted = {f.name for f in action.fields}
    for field in spec.fields:
        if field not in accepted:
            raise MappingError(
                f"mapping {name!r}: action {action.name!r} has no field {field!r}"
                + did_you_mean(field, sorted(accepted), "accepted")
            )
    missing = [f.name for f in action.fields if f.required and f.name not in spec.fields]
    if missing:
        raise MappingError(
            f"mapping {name!r}: action {action.name!r} requires field(s) {', '.join(missing)}"
        )
