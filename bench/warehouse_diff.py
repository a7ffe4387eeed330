"""`diff: local` against `diff: warehouse`: seconds and the bytes that leave the database.

    .venv/bin/python -m bench.warehouse_diff [--pg-rows N] [--mysql-rows N]
                                             [--only postgres|mysql] [--json FILE] [--keep]

(also `python -m bench warehouse …`). Builds a six-column `users` table (id, email, name, plan,
ltv decimal, updated_at timestamp) of N rows (default 10M on PostgreSQL at 127.0.0.1:5432, db
`test`; 1M on MariaDB at 127.0.0.1:3306) in a schema/database of its own. Then, for each of
`diff: local` and `diff: warehouse`, a fresh workspace mirrors the model to a webhook (the
loopback receiver in count-only mode, as bench/ does) and three syncs run, each in a fresh
child process (`python -m bench.child`): the first full sync, a no-change sync, and, after
`UPDATE users … WHERE id % 100 = 0`, a 1%-changed sync. The update is undone afterwards, so
the next mode starts from the same table.

The bytes are counted independently of ebbtide: the workspace's source URL points at a small
TCP forwarding proxy (asyncio, in a thread of this process) in front of the server, which
counts the bytes each way per sync. The parent process does nothing else while a sync runs,
so its CPU time over a sync is the proxy's cost, shown too. The table is dropped at the end
unless --keep, which keeps it for the next run (reused when it is still pristine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table

from bench.receiver import ReceiverProcess
from bench.report import WIDTH, load_note, machine, receiver_note
from bench.workspace import BATCH_SIZE, CONCURRENCY, MAPPING

REPO = Path(__file__).resolve().parent.parent
PG_DSN = os.environ.get("EBBTIDE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("EBBTIDE_BENCH_MYSQL", "mysql://root:@127.0.0.1:3306/test")
SHAPE_VERSION = 1  # bump when the table changes, so a kept table of the old shape is rebuilt
CHILD_TIMEOUT_S = 4 * 3600
MODES = ("local", "warehouse")
FULL, NO_CHANGE, CHANGED = "full sync", "no-change sync", "1% changed"
TARGET_BYTES = 0.02  # warehouse bytes / local bytes, 1%-changed sync
TARGET_SPEEDUP = 3.0  # local seconds / warehouse seconds, 1%-changed sync

PG_USERS = """
CREATE TABLE {schema}.users AS
SELECT i::int8 AS id,
       'user' || i || '@example.com' AS email,
       'User ' || i AS name,
       (ARRAY['free', 'starter', 'pro', 'enterprise'])[1 + i % 4] AS plan,
       ((i * 37) % 1000000 / 100.0)::numeric(12, 2) AS ltv,
       timestamp '2026-01-01 00:00:00' + i * interval '1 second' AS updated_at
FROM generate_series(1, {rows}) i
"""
MYSQL_USERS = """
CREATE TABLE users (
    id BIGINT PRIMARY KEY, email VARCHAR(64), name VARCHAR(64), plan VARCHAR(16),
    ltv DECIMAL(12, 2), updated_at DATETIME(6)
) ENGINE=InnoDB
"""
MYSQL_FILL = """
INSERT INTO users
SELECT seq, CONCAT('user', seq, '@example.com'), CONCAT('User ', seq),
       ELT(1 + seq % 4, 'free', 'starter', 'pro', 'enterprise'), (seq * 37) % 1000000 / 100,
       TIMESTAMP('2026-01-01') + INTERVAL seq SECOND
FROM seq_1_to_{rows}
"""

WORKSPACE = """\
state: sqlite:///.ebbtide/state.db
sources:
  warehouse: {{type: {type}, url: "{url}", state_schema: {state_schema}}}
models:
  users:
    source: warehouse
    primary_key: id
    sql: SELECT id, email, name, plan, ltv, updated_at FROM {table}
destinations:
  hook:
    type: webhook
    url: "{hook}"
    batch_size: {batch_size}
    concurrency: {concurrency}
mappings:
  {mapping}:
    model: users
    destination: hook
    action: upsert
    mode: mirror
    diff: {diff}
    fields:
      email: email
      name: name
      plan: plan
      ltv: ltv
      updated_at: updated_at
"""


# --- the counting proxy ----------------------------------------------------------------------


class ByteProxy:
    """A TCP forwarder on 127.0.0.1 in front of one server, counting the bytes each way.

    Its event loop runs in a thread of its own; `start()` returns the port to connect to.
    """

    CHUNK = 1 << 18

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.down = 0  # server → client: what left the database
        self.up = 0  # client → server
        self.connections = 0
        self.open = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def start(self) -> int:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        )
        self._server = future.result(timeout=10)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def reset(self) -> None:
        self.down = self.up = self.connections = 0

    def wait_idle(self, timeout_s: float = 10.0) -> int:
        """Until every connection is closed (the child has exited; its last bytes counted);
        returns how many are still open."""
        deadline = time.monotonic() + timeout_s
        while self.open and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.open

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            self.open -= 1
            client_w.close()
            return
        try:
            await asyncio.gather(
                self._pump(client_r, server_w, upstream=True),
                self._pump(server_r, client_w, upstream=False),
            )
        finally:
            for writer in (client_w, server_w):
                writer.close()
            self.open -= 1

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        try:
            while data := await reader.read(self.CHUNK):
                if upstream:
                    self.up += len(data)
                else:
                    self.down += len(data)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            writer.close()


# --- the warehouses --------------------------------------------------------------------------


class Server:
    """One database server: the users table, the 1% update and its undo, the state schema."""

    name = ""
    kind = ""  # the ebbtide source type

    def __init__(self, rows: int, keep: bool) -> None:
        self.rows = rows
        self.keep = keep
        self.data = f"ebb_bench_wdiff_v{SHAPE_VERSION}_{rows}"
        self.states: list[str] = []

    def execute(self, *statements: str) -> int:
        """Run the statements in autocommit; the rows the last one touched."""
        raise NotImplementedError

    def scalar(self, query: str) -> Any:
        raise NotImplementedError

    def upstream(self) -> tuple[str, int]:
        """Where the server listens (the proxy forwards there)."""
        raise NotImplementedError

    def source_url(self, port: int) -> str:
        """The workspace's source URL: the proxy on `port`."""
        raise NotImplementedError

    def table(self) -> str:
        """The users table as the model's SQL names it."""
        raise NotImplementedError

    def build(self) -> None:
        raise NotImplementedError

    def drop_data(self) -> None:
        raise NotImplementedError

    def drop_state(self, name: str) -> None:
        raise NotImplementedError

    def change(self) -> int:
        """`UPDATE … WHERE id % 100 = 0`; the rows updated."""
        raise NotImplementedError

    def undo(self) -> None:
        """The update undone: the table is pristine again."""
        raise NotImplementedError

    def prepare(self, log: Callable[[str], None]) -> None:
        """The pristine table: reused when kept from an earlier run, else built."""
        try:
            pristine = self.scalar(f"SELECT pristine FROM {self.meta()} WHERE rows_ = {self.rows}")
        except Exception:  # noqa: BLE001 - no such schema/table: build it
            pristine = None
        if pristine:
            log(f"{self.name}: reusing the kept table {self.data}.users ({self.rows:,} rows)")
            return
        started = time.perf_counter()
        self.drop_data()
        self.build()
        self.execute(
            f"CREATE TABLE {self.meta()} (rows_ BIGINT, pristine INT)",
            f"INSERT INTO {self.meta()} VALUES ({self.rows}, 1)",
        )
        log(f"{self.name}: built {self.rows:,} rows in {time.perf_counter() - started:.1f} s")

    def meta(self) -> str:
        return f"{self.data}.bench_meta"

    def set_pristine(self, pristine: bool) -> None:
        self.execute(f"UPDATE {self.meta()} SET pristine = {int(pristine)}")

    def new_state_schema(self) -> str:
        name = f"ebb_bench_state_{uuid.uuid4().hex[:8]}"
        self.states.append(name)
        return name

    def cleanup(self) -> None:
        for name in self.states:
            self.drop_state(name)
        if not self.keep:
            self.drop_data()


class Postgres(Server):
    name, kind = "PostgreSQL", "postgres"

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(PG_DSN, autocommit=True)

    def execute(self, *statements: str) -> int:
        touched = 0
        with self._connect() as con:
            for statement in statements:
                touched = con.execute(statement).rowcount
        return touched

    def scalar(self, query: str) -> Any:
        with self._connect() as con:
            row = con.execute(query).fetchone()
        return row[0] if row else None

    def upstream(self) -> tuple[str, int]:
        parts = urlsplit(PG_DSN)
        return parts.hostname or "127.0.0.1", parts.port or 5432

    def source_url(self, port: int) -> str:
        parts = urlsplit(PG_DSN)
        user = f"{parts.username}@" if parts.username else ""
        if parts.password:
            user = f"{parts.username}:{parts.password}@"
        return f"postgresql://{user}127.0.0.1:{port}{parts.path}"

    def table(self) -> str:
        return f"{self.data}.users"

    def build(self) -> None:
        self.execute(
            f"CREATE SCHEMA {self.data}",
            PG_USERS.format(schema=self.data, rows=self.rows),
            f"ALTER TABLE {self.data}.users ADD PRIMARY KEY (id)",
            f"VACUUM ANALYZE {self.data}.users",
        )

    def drop_data(self) -> None:
        self.execute(f"DROP SCHEMA IF EXISTS {self.data} CASCADE")

    def drop_state(self, name: str) -> None:
        self.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")

    def change(self) -> int:
        self.set_pristine(False)
        return self.execute(
            f"UPDATE {self.data}.users SET ltv = ltv + 1,"
            " updated_at = updated_at + interval '1 day' WHERE id % 100 = 0"
        )

    def undo(self) -> None:
        self.execute(
            f"UPDATE {self.data}.users SET ltv = ltv - 1,"
            " updated_at = updated_at - interval '1 day' WHERE id % 100 = 0",
            f"VACUUM ANALYZE {self.data}.users",
        )
        self.set_pristine(True)


class MariaDB(Server):
    name, kind = "MariaDB", "mysql"

    def _connect(self) -> Any:
        import pymysql

        from ebbtide.sources.mysql import connect_options

        options = connect_options(MYSQL_URL)
        options["database"] = None
        return pymysql.connect(**options, autocommit=True)

    def execute(self, *statements: str) -> int:
        touched = 0
        con = self._connect()
        try:
            with con.cursor() as cursor:
                for statement in statements:
                    touched = cursor.execute(statement)
        finally:
            con.close()
        return touched

    def scalar(self, query: str) -> Any:
        con = self._connect()
        try:
            with con.cursor() as cursor:
                cursor.execute(query)
                row = cursor.fetchone()
        finally:
            con.close()
        return row[0] if row else None

    def upstream(self) -> tuple[str, int]:
        parts = urlsplit(MYSQL_URL)
        return parts.hostname or "127.0.0.1", parts.port or 3306

    def source_url(self, port: int) -> str:
        parts = urlsplit(MYSQL_URL)
        user = f"{parts.username or 'root'}:{parts.password or ''}"
        return f"mysql://{user}@127.0.0.1:{port}/{self.data}"

    def table(self) -> str:
        return "users"

    def build(self) -> None:
        self.execute(
            f"CREATE DATABASE {self.data} CHARACTER SET utf8mb4",
            f"USE {self.data}",
            MYSQL_USERS,
            MYSQL_FILL.format(rows=self.rows),
            "ANALYZE TABLE users",
        )

    def drop_data(self) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {self.data}")

    def drop_state(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {name}")

    def change(self) -> int:
        self.set_pristine(False)
        return self.execute(
            f"UPDATE {self.data}.users SET ltv = ltv + 1,"
            " updated_at = updated_at + INTERVAL 1 DAY WHERE id % 100 = 0"
        )

    def undo(self) -> None:
        self.execute(
            f"UPDATE {self.data}.users SET ltv = ltv - 1,"
            " updated_at = updated_at - INTERVAL 1 DAY WHERE id % 100 = 0"
        )
        self.set_pristine(True)


# --- one sync ----------------------------------------------------------------------------


@dataclass
class Row:
    """One sync: what the run reports, and what the proxy counted."""

    server: str
    rows: int
    mode: str
    scenario: str
    expected: int
    status: str = "crashed"
    error: str | None = None
    wall_s: float = 0.0  # load_workspace + run, inside the child
    process_s: float = 0.0  # the child process, interpreter start and imports included
    phases: dict[str, float] = field(default_factory=dict)
    extracted: int = 0
    added: int = 0
    updated: int = 0
    deleted: int = 0
    sent: int = 0
    max_rss_mb: float = 0.0
    bytes_down: int = 0  # server → client
    bytes_up: int = 0  # client → server
    connections: int = 0
    proxy_cpu_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "success" and self.sent == self.expected and not self.error


def run_sync(proxy: ByteProxy, root: Path, row: Row) -> Row:
    """One sync in a fresh `python -m bench.child`, the proxy's counts taken around it."""
    proxy.reset()
    cpu = _cpu_s()
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.child", str(root), MAPPING],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        row.error = f"timed out after {exc.timeout} s"
        return row
    row.process_s = time.perf_counter() - started
    if lingering := proxy.wait_idle():
        row.error = f"{lingering} connection(s) through the proxy still open after the sync"
    row.proxy_cpu_s = _cpu_s() - cpu
    row.bytes_down, row.bytes_up, row.connections = proxy.down, proxy.up, proxy.connections
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        row.error = f"bench.child exited with {done.returncode}:\n{done.stderr[-3000:]}"
        return row
    run = json.loads(lines[-1])
    row.status, row.error = str(run["status"]), run["error"] or row.error
    row.wall_s = float(run["wall_s"])
    row.phases = {k: float(v or 0.0) for k, v in run["phases"].items()}
    for name in ("extracted", "added", "updated", "deleted", "sent"):
        setattr(row, name, int(run[name] or 0))
    row.max_rss_mb = float(run["max_rss_mb"])
    return row


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the benchmark -----------------------------------------------------------------------


def bench_server(
    server: Server, hook: str, work: Path, log: Callable[[str], None], keep: bool
) -> list[Row]:
    """Both modes on one server: full, no-change and 1%-changed syncs each."""
    rows: list[Row] = []
    server.prepare(log)
    proxy = ByteProxy(*server.upstream())
    port = proxy.start()
    try:
        for mode in MODES:
            root = work / f"{server.kind}-{mode}"
            root.mkdir(parents=True)
            state = server.new_state_schema()
            text = WORKSPACE.format(
                type=server.kind,
                url=server.source_url(port),
                state_schema=state,
                table=server.table(),
                hook=hook,
                batch_size=BATCH_SIZE,
                concurrency=CONCURRENCY,
                mapping=MAPPING,
                diff=mode,
            )
            (root / "ebbtide.yml").write_text(text, encoding="utf-8")
            changed = server.rows // 100
            try:
                for scenario, expected in ((FULL, server.rows), (NO_CHANGE, 0)):
                    log(f"{server.name} {server.rows:,} rows, diff: {mode}: {scenario}")
                    rows.append(
                        run_sync(
                            proxy, root, Row(server.name, server.rows, mode, scenario, expected)
                        )
                    )
                touched = server.change()
                log(f"{server.name} diff: {mode}: {CHANGED} ({touched:,} rows updated)")
                rows.append(
                    run_sync(proxy, root, Row(server.name, server.rows, mode, CHANGED, changed))
                )
            finally:
                server.undo()
                server.drop_state(state)
                if not keep:
                    shutil.rmtree(root, ignore_errors=True)
    finally:
        proxy.stop()
    return rows


def ratios(rows: list[Row]) -> list[dict[str, Any]]:
    """Per server, the 1%-changed sync: warehouse bytes / local bytes, local s / warehouse s."""
    out = []
    for server in dict.fromkeys(r.server for r in rows):
        by_mode = {r.mode: r for r in rows if r.server == server and r.scenario == CHANGED}
        local, ware = by_mode.get("local"), by_mode.get("warehouse")
        if not local or not ware:
            continue
        share = ware.bytes_down / local.bytes_down if local.bytes_down else float("nan")
        speedup = local.wall_s / ware.wall_s if ware.wall_s else float("nan")
        out.append(
            {
                "server": server,
                "rows": local.rows,
                "bytes_share": share,
                "bytes_passed": share < TARGET_BYTES and local.ok and ware.ok,
                "speedup": speedup,
                "speedup_passed": speedup >= TARGET_SPEEDUP and local.ok and ware.ok,
            }
        )
    return out


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f}" if n >= 10_000 else f"{n / 1e6:,.4f}"


def table(rows: list[Row], note: str) -> Table:
    grid = Table(
        title="diff: local vs diff: warehouse — users model, mirror → webhook"
        f" (batch {BATCH_SIZE}, conc. {CONCURRENCY}); bytes counted by a TCP proxy",
        caption=f"{machine()}. {note}",
    )
    for name in (
        "server",
        "rows",
        "mode",
        "scenario",
        "seconds",
        "extract/diff/load/commit (s)",
        "MB from DB",
        "MB to DB",
        "extracted",
        "rows sent",
        "peak MB",
        "proxy CPU s",
        "result",
    ):
        left = name in ("server", "mode", "scenario", "result")
        grid.add_column(name, justify="left" if left else "right", no_wrap=True)
    for r in rows:
        phases = "/".join(
            f"{r.phases.get(p, 0.0):.2f}" for p in ("extract", "diff", "load", "commit")
        )
        result = "[green]ok" if r.ok else f"[red]{r.status}, sent {r.sent:,} of {r.expected:,}"
        grid.add_row(
            r.server,
            f"{r.rows:,}",
            r.mode,
            r.scenario,
            f"{r.wall_s:.2f}",
            phases if r.phases else "—",
            _mb(r.bytes_down),
            _mb(r.bytes_up),
            f"{r.extracted:,}",
            f"{r.sent:,}",
            f"{r.max_rss_mb:,.0f}",
            f"{r.proxy_cpu_s:.2f}",
            result,
        )
    return grid


def ratio_lines(found: list[dict[str, Any]]) -> list[str]:
    lines = []
    for f in found:
        lines.append(
            f"{f['server']} {f['rows']:,} rows, 1% changed: warehouse bytes / local bytes ="
            f" {f['bytes_share']:.2%} (target < {TARGET_BYTES:.0%}:"
            f" {'pass' if f['bytes_passed'] else 'FAIL'}); local time / warehouse time ="
            f" {f['speedup']:.2f}× (target ≥ {TARGET_SPEEDUP:.0f}×:"
            f" {'pass' if f['speedup_passed'] else 'FAIL'})"
        )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.warehouse_diff", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--pg-rows", type=int, default=10_000_000, help="PostgreSQL rows (default: 10,000,000)"
    )
    parser.add_argument(
        "--mysql-rows", type=int, default=1_000_000, help="MariaDB rows (default: 1,000,000)"
    )
    parser.add_argument("--only", choices=("postgres", "mysql"), help="one server only")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the users tables (reused by the next run) and the workspaces",
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def _work_folder(keep: bool) -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="ebbtide-bench-wdiff-"))
    try:
        yield work
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=WIDTH)
    servers: list[Server] = []
    if args.only in (None, "postgres"):
        servers.append(Postgres(args.pg_rows, args.keep))
    if args.only in (None, "mysql"):
        servers.append(MariaDB(args.mysql_rows, args.keep))
    load_before = os.getloadavg()[0]
    rows: list[Row] = []
    with _work_folder(args.keep) as work, ReceiverProcess(REPO) as receiver:
        console.log(f"receiver at {receiver.url}; work folder {work}")
        for server in servers:
            try:
                rows += bench_server(server, receiver.url, work, console.log, args.keep)
            finally:
                server.cleanup()
    note = receiver_note(receiver.records, receiver.requests, sum(r.sent for r in rows))
    note = f"{note} {load_note(load_before, os.getloadavg()[0])}"
    found = ratios(rows)
    console.print(table(rows, note))
    for line in ratio_lines(found):
        console.print(line, markup=False, highlight=False)
    for r in rows:
        if r.error:
            console.print(f"[red]{r.server} diff: {r.mode}: {r.scenario}: {r.status}[/]")
            console.print(r.error[-2000:], markup=False, highlight=False)
    if args.json:
        document = {
            "machine": machine(),
            "note": note,
            "results": [asdict(r) | {"ok": r.ok} for r in rows],
            "ratios": found,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        console.log(f"results written to {args.json}")


if __name__ == "__main__":
    main()
