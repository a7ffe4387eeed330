"""DB-API rows to Arrow record batches, for drivers that do not speak Arrow themselves."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyarrow as pa

from ebbtide.errors import SourceError


def batches_from_rows(
    names: Sequence[str],
    fetch: Callable[[int], Sequence[Sequence[Any]]],
    batch_rows: int,
    types: Sequence[pa.DataType | None] | None = None,
    *,
    source: str = "the source",
) -> pa.RecordBatchReader:
    """Stream rows fetched `batch_rows` at a time as Arrow batches with one stable schema.

    Where a column's type is not given it is inferred from the first batch; a column that is
    null throughout the first batch is inferred from the first batch that has a value. A value
    that does not fit its column's type (SQLite lets a column hold any) is a SourceError that
    names `source`, the column and the value.
    """
    first = fetch(batch_rows)
    known: list[pa.DataType | None] = list(types) if types is not None else [None] * len(names)
    schema = _schema(names, first, known)

    def batches() -> Iterator[pa.RecordBatch]:
        rows = first
        while rows:
            yield _to_batch(rows, schema, source)
            rows = fetch(batch_rows)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _schema(
    names: Sequence[str], rows: Sequence[Sequence[Any]], types: list[pa.DataType | None]
) -> pa.Schema:
    fields = []
    for i, name in enumerate(names):
        declared = types[i]
        if declared is None:
            inferred = pa.array([row[i] for row in rows]).type if rows else pa.null()
            declared = pa.string() if pa.types.is_null(inferred) else inferred
        fields.append(pa.field(name, declared))
    return pa.schema(fields)


def _to_batch(rows: Sequence[Sequence[Any]], schema: pa.Schema, source: str) -> pa.RecordBatch:
    columns = [_column([row[i] for row in rows], field, source) for i, field in enumerate(schema)]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _column(values: list[Any], field: pa.Field[Any], source: str) -> pa.Array[Any]:
    try:
        # Arrow would truncate 1.5 to 1 without a word.
        if pa.types.is_integer(field.type) and any(type(v) is float for v in values):
            raise pa.ArrowInvalid("a fractional number in an integer column")
        column: pa.Array[Any] = pa.array(values, type=field.type, from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        misfit = next((repr(v) for v in values if not _fits(v, field.type)), str(exc))
        raise SourceError(
            f"column {field.name!r} from {source} holds {misfit}, which does not fit the"
            f" column's type ({field.type}): cast or fix it in the model's SQL"
        ) from exc
    return column


def _fits(value: Any, arrow: pa.DataType) -> bool:
    if pa.types.is_integer(arrow) and type(value) is float:
        return False
    try:
        pa.array([value], type=arrow, from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return True
