"""Feeding a model's rows to DuckDB in bounded statements, keeping the source's own errors."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from ebbtide.errors import EbbtideError
from ebbtide.ports import iter_batches


def chunked(rows: pa.RecordBatchReader, chunk_rows: int) -> Iterator[pa.RecordBatchReader]:
    """Consecutive readers of at most about `chunk_rows` rows, read lazily.

    Always yields at least one reader (empty for an empty model). Each reader must be read to
    its end before the next is taken.
    """
    batches = iter_batches(rows)
    lookahead = next(batches, None)

    def take(batch: pa.RecordBatch | None) -> Iterator[pa.RecordBatch]:
        nonlocal lookahead
        taken = 0
        while batch is not None:
            yield batch
            taken += batch.num_rows
            batch = next(batches, None)
            if batch is not None and taken + batch.num_rows > chunk_rows:
                break
        lookahead = batch

    yield pa.RecordBatchReader.from_batches(rows.schema, take(lookahead))
    while lookahead is not None:
        yield pa.RecordBatchReader.from_batches(rows.schema, take(lookahead))


def remember_errors(
    rows: pa.RecordBatchReader, failure: list[EbbtideError]
) -> Iterator[pa.RecordBatch]:
    """The source's batches; an error of the source is kept, since DuckDB would reword it."""
    try:
        yield from iter_batches(rows)
    except EbbtideError as error:
        failure.append(error)
        raise
