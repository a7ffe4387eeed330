"""DB-API rows to Arrow record batches, for drivers that do not speak Arrow themselves."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyarrow as pa


def batches_from_rows(
    names: Sequence[str],
    fetch: Callable[[int], Sequence[Sequence[Any]]],
    batch_rows: int,
    types: Sequence[pa.DataType | None] | None = None,
) -> pa.RecordBatchReader:
    """Stream rows fetched `batch_rows` at a time as Arrow batches with one stable schema.

    Where a column's type is not given it is inferred from the first batch; a column that is
    null throughout the first batch is inferred from the first batch that has a value.
    """
    first = fetch(batch_rows)
    known: list[pa.DataType | None] = list(types) if types is not None else [None] * len(names)
    schema = _schema(names, first, known)

    def batches() -> Iterator[pa.RecordBatch]:
        rows = first
        while rows:
            yield _to_batch(rows, schema)
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


def _to_batch(rows: Sequence[Sequence[Any]], schema: pa.Schema) -> pa.RecordBatch:
    columns = [
        pa.array([row[i] for row in rows], type=field.type, from_pandas=False)
        for i, field in enumerate(schema)
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)
