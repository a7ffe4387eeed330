"""How fast, how lean and how exact each way of reading a PostgreSQL model into Arrow is.

    .venv/bin/python -m bench.postgres_extract [--rows N] [--no-sync]

Creates a six-column `users` table of N rows (default 1M) in a schema of its own in the
`test` database on 127.0.0.1:5432 (dropped at the end), then reads it with each candidate,
each in a fresh process so its peak RSS is its own:

- cursor: psycopg named cursor + rows -> Arrow (the PostgreSQL source before issue 15);
- copy-rows: psycopg binary COPY, rows decoded by psycopg's binary loaders -> Arrow;
- adbc-raw: ADBC (binary COPY in C++) as the driver gives it, no casts;
- connectorx: connectorx `arrow_stream` (Rust), and `arrow` (whole table) for reference;
- ebbtide: the PostgreSQL source as shipped (ADBC + casts on the server where needed).

"exact" means the rows of the big table AND of a table holding one value of every type the
source promises (in a session zone far from UTC) come out identical to the cursor's, which
is the behaviour the source promises (tests/conformance, tests/integration). Then, unless
--no-sync, a whole `ebbtide sync run` of the model to a file destination: a first full sync,
then a no-change sync with the old cursor reader and with the shipped one.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pyarrow as pa

DSN = os.environ.get("EBBTIDE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")

USERS = """
CREATE TABLE {schema}.users AS
SELECT i::int8 AS id,
       'user' || i || '@example.com' AS email,
       'User ' || i AS name,
       (ARRAY['free', 'starter', 'pro', 'enterprise'])[1 + i % 4] AS plan,
       ((i * 37) % 1000000 / 100.0)::numeric(12, 2) AS ltv,
       timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second' AS updated_at
FROM generate_series(1, {rows}) i
"""
# One value of every type the source promises, and the edges (NULLs, infinities aside).
EDGE = """
CREATE TABLE {schema}.edge AS
SELECT 1::int8 AS id, 9223372036854775807::int8 AS i8, (-2147483648)::int4 AS i4,
       (-32768)::int2 AS i2, 12345678901234567890.1234567890::numeric(38, 10) AS exact,
       123456789012345678901234567890.000000000000000000000000000001::numeric AS wide,
       0.0000001::numeric AS tiny, 1e20::numeric AS huge, 1234.5::numeric(50, 5) AS wider,
       0.1::float4 AS f4, 3.141592653589793::float8 AS f8, true AS yes,
       'it''s "quoted" — ñ, 中文, 😀' || chr(10) || 'tab' || chr(9) || '\\' AS note,
       ''::varchar(10) AS empty, 'ab'::char(4) AS padded, date '2024-02-29' AS day,
       timestamp '2024-02-29 13:14:15.123456' AS stamp,
       timestamptz '2024-02-29 13:14:15.123456+02' AS stamp_tz,
       '{{"b": 1, "a": [1, 2.50]}}'::json AS doc, '{{"b": 1, "a": [1, 2.50]}}'::jsonb AS docb,
       '\\x00ff10270a'::bytea AS blob, '6f1f6b0e-2c5c-4b7e-9d0a-3f4e5a6b7c8d'::uuid AS ident,
       interval '1 day 02:00:00' AS span, ARRAY['x', NULL, 'y'] AS tags, 42::oid AS o,
       'hello'::name AS nm
UNION ALL
SELECT 2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
"""
METHODS = ("cursor", "copy-rows", "adbc-raw", "connectorx-stream", "connectorx-table", "ebbtide")


def _url(schema: str) -> str:
    # A session zone far from UTC: timestamptz must come back in UTC all the same.
    return f"{DSN}?options={quote(f'-c search_path={schema} -c TimeZone=Asia/Kathmandu')}"


# --- the readers ---------------------------------------------------------------------------


def _legacy_reader(url: str) -> Callable[[str], pa.RecordBatchReader]:
    """The PostgreSQL source as it was before issue 15 (psycopg named cursor)."""
    import psycopg.postgres
    from psycopg.adapt import AdaptersMap
    from psycopg.types.bool import BoolLoader
    from psycopg.types.datetime import DateLoader, TimestampLoader, TimestamptzLoader
    from psycopg.types.numeric import FloatLoader, IntDumper, IntLoader, NumericLoader
    from psycopg.types.string import ByteaLoader, StrDumper, TextLoader

    from ebbtide.sources import BATCH_ROWS
    from ebbtide.sources.rows import batches_from_rows

    loaders: dict[str, Any] = {
        "bool": BoolLoader, "int2": IntLoader, "int4": IntLoader, "int8": IntLoader,
        "oid": IntLoader, "float4": FloatLoader, "float8": FloatLoader,
        "numeric": NumericLoader, "date": DateLoader, "timestamp": TimestampLoader,
        "timestamptz": TimestamptzLoader, "bytea": ByteaLoader,
    }  # fmt: skip
    arrow = {
        "bool": pa.bool_(), "int2": pa.int16(), "int4": pa.int32(), "int8": pa.int64(),
        "oid": pa.int64(), "float4": pa.float64(), "float8": pa.float64(),
        "date": pa.date32(), "timestamp": pa.timestamp("us"),
        "timestamptz": pa.timestamp("us", tz="UTC"), "bytea": pa.binary(),
        "json": pa.json_(), "jsonb": pa.json_(),
    }  # fmt: skip
    by_oid = {psycopg.postgres.types[name].oid: t for name, t in arrow.items()}
    numeric = psycopg.postgres.types["numeric"].oid
    adapters = AdaptersMap(types=psycopg.postgres.types)
    adapters.register_loader(0, TextLoader)
    for name, loader in loaders.items():
        adapters.register_loader(name, loader)
    adapters.register_dumper(int, IntDumper)
    adapters.register_dumper(str, StrDumper)
    con = psycopg.connect(url, context=adapters)
    con.read_only = True
    cursor_ids = itertools.count(1)

    def read(query: str) -> pa.RecordBatchReader:
        cursor = con.cursor(name=f"bench_{next(cursor_ids)}")
        cursor.execute(query)
        types: list[pa.DataType] = []
        text: list[int] = []
        for i, c in enumerate(cursor.description or []):
            if c.type_code == numeric:
                p, s = c.precision, c.scale
                if p is None or s is None or not 0 <= s <= p <= 38:
                    types.append(pa.string())
                    text.append(i)
                else:
                    types.append(pa.decimal128(p, s))
            else:
                types.append(by_oid.get(c.type_code, pa.string()))

        def fetch(size: int) -> list[Any]:
            rows = cursor.fetchmany(size)
            if not text:
                return rows
            out = []
            for row in rows:
                values = list(row)
                for i in text:
                    if isinstance(values[i], Decimal):
                        values[i] = format(values[i], "f")
                out.append(values)
            return out

        names = [c.name for c in cursor.description or []]
        return batches_from_rows(names, fetch, BATCH_ROWS, types)

    return read


def _copy_rows_reader(url: str) -> Callable[[str], pa.RecordBatchReader]:
    """psycopg binary COPY; psycopg's binary loaders make the Python values."""
    from ebbtide.sources import BATCH_ROWS
    from ebbtide.sources.rows import batches_from_rows

    legacy_types = _legacy_reader(url)
    con = psycopg.connect(url, autocommit=True)
    held: list[Any] = []  # a cursor collected cancels its COPY

    def read(query: str) -> pa.RecordBatchReader:
        schema = legacy_types(f"SELECT * FROM ({query}) q LIMIT 0").schema
        described = con.execute(f"SELECT * FROM ({query}) q LIMIT 0").description or []
        cursor = con.cursor()
        copy_cm = cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT binary)")
        copy = copy_cm.__enter__()
        held.append((cursor, copy_cm, copy))
        copy.set_types([c.type_code for c in described])
        rows = copy.rows()
        text = [i for i, f in enumerate(schema) if pa.types.is_string(f.type)]

        def fetch(size: int) -> list[Any]:
            out: list[Any] = []
            if copy_cm not in [h[1] for h in held]:
                return out
            for row in rows:
                values = list(row)
                for i in text:
                    if isinstance(values[i], Decimal):
                        values[i] = format(values[i], "f")
                    elif isinstance(values[i], (dict, list, int, uuid.UUID)):
                        values[i] = str(values[i])  # not the server's text: not exact
                out.append(values)
                if len(out) == size:
                    return out
            copy_cm.__exit__(None, None, None)  # the COPY is over: the connection is free
            held.pop()
            return out

        return batches_from_rows(schema.names, fetch, BATCH_ROWS, list(schema.types))

    return read


def _adbc_raw_reader(url: str) -> Callable[[str], pa.RecordBatchReader]:
    import adbc_driver_postgresql.dbapi as adbc  # type: ignore[import-untyped]

    con = adbc.connect(url, autocommit=True)
    cursors: list[Any] = []  # a cursor collected closes its stream

    def read(query: str) -> pa.RecordBatchReader:
        cursor = con.cursor()
        cursors.append(cursor)
        cursor.execute(query)
        reader: pa.RecordBatchReader = cursor.fetch_record_batch()
        return reader

    return read


def _connectorx_reader(url: str, stream: bool) -> Callable[[str], pa.RecordBatchReader]:
    import connectorx as cx  # type: ignore[import-untyped]

    from ebbtide.sources import BATCH_ROWS

    def read(query: str) -> pa.RecordBatchReader:
        if stream:
            reader: pa.RecordBatchReader = cx.read_sql(
                url, query, return_type="arrow_stream", batch_size=BATCH_ROWS
            )
            return reader
        table: pa.Table = cx.read_sql(url, query, return_type="arrow")
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())

    return read


def _ebbtide_reader(url: str) -> Callable[[str], pa.RecordBatchReader]:
    from ebbtide.sources.postgres import PostgresSource

    return PostgresSource(url).read


def _reader(method: str, url: str) -> Callable[[str], pa.RecordBatchReader]:
    if method == "cursor":
        return _legacy_reader(url)
    if method == "copy-rows":
        return _copy_rows_reader(url)
    if method == "adbc-raw":
        return _adbc_raw_reader(url)
    if method.startswith("connectorx"):
        return _connectorx_reader(url, stream=method.endswith("stream"))
    return _ebbtide_reader(url)


# --- one method, in a child process ----------------------------------------------------------


def _child(method: str, schema: str, out: Path) -> None:
    """Read the big table (timed, result written to `out` untimed) and the edge table."""
    url = _url(schema)
    report: dict[str, Any] = {"method": method}
    try:
        read = _reader(method, url)
        base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rows, spent = 0, 0.0
        writer = None
        start = time.perf_counter()
        reader = read("SELECT id, email, name, plan, ltv, updated_at FROM users ORDER BY id")
        batches = _batches(reader)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            spent += time.perf_counter() - start
            rows += batch.num_rows
            if writer is None:
                writer = pa.ipc.new_file(out.with_suffix(".big"), batch.schema)
            writer.write_batch(batch)
            start = time.perf_counter()
        spent += time.perf_counter() - start
        if writer is not None:
            writer.close()
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        report.update(
            wall=spent, rows=rows, peak_mb=peak_kb / 1024, grew_mb=(peak_kb - base_kb) / 1024
        )
        try:
            edge = read("SELECT * FROM edge ORDER BY id").read_all()
            with pa.ipc.new_file(out.with_suffix(".edge"), edge.schema) as w:
                w.write_table(edge)
        except BaseException as exc:  # noqa: BLE001 - inexact; connectorx panics (BaseException)
            report["edge_error"] = f"{type(exc).__name__}: {exc}"[:90]
    except BaseException as exc:  # noqa: BLE001 - reported as the candidate's result
        report["error"] = f"{type(exc).__name__}: {exc}"[:300]
    out.write_text(json.dumps(report))


def _batches(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return


def _same(candidate: pa.Table, expected: pa.Table) -> tuple[bool, str]:
    """Identical types and values; else which column differs, and whether a cast would do."""
    if candidate.column_names != expected.column_names:
        return False, "column names differ"
    wrong = []
    for name in expected.column_names:
        want = expected.column(name).combine_chunks()
        got = candidate.column(name).combine_chunks()
        if got.type == want.type and got.to_pylist() == want.to_pylist():
            continue
        if isinstance(got, pa.ExtensionArray):
            got = got.storage
        try:
            cast = got.cast(want.storage if isinstance(want, pa.ExtensionArray) else want.type)
            same = (
                cast.to_pylist()
                == (want.storage if isinstance(want, pa.ExtensionArray) else want).to_pylist()
            )
        except (pa.ArrowException, ValueError, OverflowError):
            same = False
        wrong.append(f"{name} {'type' if same else 'VALUES'}")
    return not wrong, ", ".join(wrong)


def _compare(path: Path, reference: Path, error: str = "") -> tuple[bool, str]:
    if not path.exists() or not reference.exists():
        return False, error or "no result"
    got = pa.ipc.open_file(path).read_all()
    want = pa.ipc.open_file(reference).read_all()
    return _same(got, want)


# --- the whole sync ------------------------------------------------------------------------

WORKSPACE = """\
sources:
  warehouse: {{type: postgres, url: "{url}"}}
models:
  users:
    source: warehouse
    primary_key: id
    sql: SELECT id, email, name, plan, ltv, updated_at FROM {schema}.users
destinations:
  out: {{type: file, path: out.jsonl}}
mappings:
  users_out:
    model: users
    destination: out
    action: append
    fields: {{email: email, name: name, plan: plan, ltv: ltv, updated_at: updated_at}}
"""


def _sync_child(folder: Path, mode: str, profile: Path | None) -> None:
    """`ebbtide sync run users_out` in this process. The source's reader is the shipped one
    ("ebbtide"), the old cursor ("cursor"), or the shipped one read to the end before the
    engine sees it ("preread": what is left of the run is the engine alone)."""
    from ebbtide.cli.app import main
    from ebbtide.sources import postgres

    shipped_init, shipped_read = postgres.PostgresSource.__init__, postgres.PostgresSource.read

    def keep_url(self: Any, url: str) -> None:
        shipped_init(self, url)
        self._bench_url = url

    def read(self: Any, query: str) -> pa.RecordBatchReader:
        if mode == "cursor":
            if not hasattr(self, "_legacy"):
                self._legacy = _legacy_reader(self._bench_url)
            return self._legacy(query)
        start = time.perf_counter()
        table = shipped_read(self, query).read_all()
        sys.stderr.write(f"\nBENCH_EXTRACT_S {time.perf_counter() - start}\n")
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())

    if mode != "ebbtide":
        postgres.PostgresSource.__init__ = keep_url  # type: ignore[method-assign]
        postgres.PostgresSource.read = read  # type: ignore[method-assign]
    os.chdir(folder)
    sys.argv = ["ebbtide", "sync", "run", "users_out", "--json"]
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    try:
        main()
    except SystemExit:
        pass
    finally:
        if profiler and profile:
            profiler.disable()
            profiler.dump_stats(str(profile))
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        sys.stderr.write(f"\nBENCH_PEAK_KB {peak_kb}\n")


def _time_sync(folder: Path, mode: str, profile: Path | None = None) -> tuple[float, float, str]:
    """Wall seconds and peak RSS MB of one sync, run in a fresh process (startup included)."""
    command = [sys.executable, "-m", "bench.postgres_extract", "--sync-child", str(folder)]
    command += ["--mode", mode]
    if profile:
        command += ["--profile", str(profile)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=_root())
    wall = time.perf_counter() - start
    peaks = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("BENCH_PEAK")]
    peak = int(peaks[-1]) / 1024 if peaks else float("nan")
    summary = done.stdout.strip() or done.stderr.strip()[-300:]
    extract = [line.split()[1] for line in done.stderr.splitlines() if "BENCH_EXTRACT" in line]
    if extract:
        summary += f"\n(extraction read to the end first: {float(extract[-1]):.2f} s)"
    return wall, peak, summary


def _root() -> Path:
    return Path(__file__).resolve().parent.parent


# --- the benchmark -------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--no-sync", action="store_true", help="skip the whole-sync runs")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--sync-child", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="ebbtide", help=argparse.SUPPRESS)
    parser.add_argument("--profile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], Path(args.child[2]))
        return
    if args.sync_child:
        _sync_child(Path(args.sync_child), args.mode, Path(args.profile) if args.profile else None)
        return

    schema = f"bench_extract_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(DSN, autocommit=True) as con:
        con.execute(f"CREATE SCHEMA {schema}")
    try:
        with psycopg.connect(DSN, autocommit=True) as con:
            con.execute(USERS.format(schema=schema, rows=args.rows))
            con.execute(f"ALTER TABLE {schema}.users ADD PRIMARY KEY (id)")
            con.execute(EDGE.format(schema=schema))
            con.execute(f"VACUUM ANALYZE {schema}.users")
        with tempfile.TemporaryDirectory(prefix="ebbtide-pg-bench-") as tmp:
            _run(schema, Path(tmp), args.rows, not args.no_sync)
    finally:
        with psycopg.connect(DSN, autocommit=True) as con:
            con.execute(f"DROP SCHEMA {schema} CASCADE")


def _run(schema: str, tmp: Path, rows: int, sync: bool) -> None:
    results = []
    for method in METHODS:
        out = tmp / f"{method}.json"
        subprocess.run(
            [sys.executable, "-m", "bench.postgres_extract", "--child", method, schema, str(out)],
            check=False,
            cwd=_root(),
            capture_output=True,  # connectorx prints its panics' backtraces
            timeout=600,
        )
        results.append(json.loads(out.read_text()))
    reference = tmp / "cursor"
    print(f"\nReading {rows:,} rows x 6 columns from PostgreSQL into Arrow (BATCH_ROWS batches)")
    print(f"{'method':<19}{'wall s':>8}{'rows/s':>12}{'peak RSS MB':>13}{'grew MB':>9}  exact")
    for result in results:
        method = result["method"]
        if "error" in result:
            print(f"{method:<19}  failed: {result['error']}")
            continue
        big_ok, big_why = _compare(tmp / f"{method}.big", reference.with_suffix(".big"))
        edge_ok, edge_why = _compare(
            tmp / f"{method}.edge", reference.with_suffix(".edge"), result.get("edge_error", "")
        )
        why = "; ".join(w for w in (big_why and f"big: {big_why}", edge_why) if w)
        exact = "yes" if big_ok and edge_ok else f"no ({why})"
        print(
            f"{method:<19}{result['wall']:>8.2f}{result['rows'] / result['wall']:>12,.0f}"
            f"{result['peak_mb']:>13.0f}{result['grew_mb']:>9.0f}  {exact}"
        )
    if sync:
        _syncs(schema, tmp, rows)


def _syncs(schema: str, tmp: Path, rows: int) -> None:
    folder = tmp / "workspace"
    folder.mkdir()
    (folder / "ebbtide.yml").write_text(WORKSPACE.format(url=_url(schema), schema=schema))
    print(f"\nWhole `ebbtide sync run` of {rows:,} PostgreSQL rows to a file (fresh process each)")
    print(f"{'sync':<30}{'process s':>10}{'run s':>7}{'peak RSS MB':>13}  result")
    profile = tmp / "sync.prof"
    for label, mode, prof in (
        ("first (full)", "ebbtide", None),
        ("no-change, before (cursor)", "cursor", None),
        ("no-change, after (ebbtide)", "ebbtide", None),
        ("no-change, source pre-read", "preread", None),
        ("no-change, after, profiled", "ebbtide", profile),
    ):
        wall, peak, summary = _time_sync(folder, mode, prof)
        run_s, result = _short(summary)
        print(f"{label:<30}{wall:>10.2f}{run_s:>7.2f}{peak:>13.0f}  {result}")
    stats = io.StringIO()
    pstats.Stats(str(profile), stream=stats).sort_stats("cumulative").print_stats(25)
    print("\nWhere the no-change sync's time goes (cProfile of the CLI's main, cumulative):")
    print(stats.getvalue())


def _short(summary: str) -> tuple[float, str]:
    """The run's own duration (the process's minus startup and imports), and its counts."""
    text, _, note = summary.partition("\n(")
    try:
        run = json.loads(text)[0]
    except (ValueError, IndexError, KeyError):
        return float("nan"), " ".join(summary.split())[:200]
    counts = {k: v for k, v in run.items() if isinstance(v, int) and k != "id" and v}
    return float(run.get("duration_s", "nan")), f"{run.get('status')} {counts}" + (
        f" ({note}" if note else ""
    )


if __name__ == "__main__":
    main()
