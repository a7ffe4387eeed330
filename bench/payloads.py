"""Payload rendering alone: `python -m bench.payloads ROWS` prints one JSON line.

A model of ROWS orders with an object column (`product`, a STRUCT with a nested STRUCT) and an
array column (`products`, a LIST of 1 to 3 STRUCTs, some without a purchase time), both mapped
in customize mode, for a destination that reads JSON records (the webhook). The rows are
staged and diffed (not timed), then every outbound batch is read: the time of that read is the
time DuckDB takes to build the payloads. The fastest of three reads is reported (the first
pays for DuckDB's warm-up).
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from ebbtide.config.models import MappingSpec, ModelSpec
from ebbtide.mapping.compiler import compile_mapping
from ebbtide.ports import PROBLEM_COLUMN, RECORD_COLUMN, ActionSpec, Operation, iter_batches
from ebbtide.snapshots.duckdb import DuckDBSnapshotStore

BATCH_SIZE = 500
READS = 3
MODEL_SQL = """
    SELECT i AS id,
           {{'id': 'SKU-' || i % 5000, 'color': ['red', 'blue', 'green'][1 + i % 3],
             'price': (i % 400 + 0.99)::DECIMAL(10, 2),
             'dims': {{'w': (i % 50)::DOUBLE, 'h': (i % 70)::DOUBLE}}}} AS product,
           list_transform(range(1 + i % 3), lambda j: {{
               'currency': 'USD',
               'price': (5 + (i + j) % 40)::DECIMAL(8, 2),
               'productName': ['jacket', 'socks', 'boots', 'scarf'][1 + (i + j) % 4],
               'purchaseTime': CASE WHEN j = 1 THEN NULL
                                    ELSE TIMESTAMP '2026-01-01' + to_seconds(i + j) END,
               'quantity': 1 + j}}) AS products
    FROM range({rows}) t(i)
"""
FIELDS = {
    "item": {
        "object": "product",
        "properties": {"sku": "id", "colour": "color", "price": "price", "width": "dims.w"},
    },
    "lines": {
        "array": "products",
        "properties": {
            "name": "productName",
            "time": "purchaseTime",
            "qty": "quantity",
            "price": "price",
        },
    },
}


def read_all(store: DuckDBSnapshotStore) -> tuple[float, int, int, int]:
    """Seconds, records, records with a problem, and bytes of JSON records, of one read."""
    started = time.perf_counter()
    rendered = problems = size = 0
    for batch in iter_batches(store.outbound(frozenset(Operation), BATCH_SIZE)):
        rendered += batch.num_rows
        problems += batch.num_rows - batch.column(PROBLEM_COLUMN).null_count
        size += batch.column(RECORD_COLUMN).nbytes
    return time.perf_counter() - started, rendered, problems, size


def main(rows: int) -> None:
    spec = MappingSpec(model="orders", destination="hook", action="upsert", fields=FIELDS)
    model = ModelSpec(source="warehouse", primary_key="id", sql="-")
    webhook = ActionSpec("upsert", "bench", field_columns=False)  # as the webhook declares it
    mapping = compile_mapping("orders_to_hook", spec, model, webhook)
    with duckdb.connect() as warehouse, tempfile.TemporaryDirectory() as state:
        store = DuckDBSnapshotStore(Path(state), mapping)
        store.stage(warehouse.execute(MODEL_SQL.format(rows=rows)).to_arrow_reader(100_000))
        store.diff()
        reads = [read_all(store) for _ in range(READS)]
        store.close()
    render_s, rendered, problems, size = min(reads)
    result = {
        "sent": rendered - problems,
        "wall_s": round(render_s, 3),
        "problems": problems,
        "record_mb": round(size / 2**20, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(int(sys.argv[1]))
