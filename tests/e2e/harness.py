"""Real processes for the end-to-end tests: a workspace, the receiver, the CLI, serve.

Everything runs as it would in production: `python -m ebbtide` subprocesses syncing a DuckDB
warehouse to `python -m ebbtide.demo.receiver` on 127.0.0.1, killed, stopped and signalled by
the test. What the receiver got is read back from its JSONL log (one line per record, written
on arrival, in arrival order; the idempotency key `<run id>-<batch>` names the sending run).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

import duckdb
import pyarrow as pa
import pytest

MAPPING = "users"
LEASE_TTL_S = 2.0
BATCH_SIZE = 100
CONCURRENCY = 3
IN_FLIGHT_RECORDS = BATCH_SIZE * CONCURRENCY  # the most a crash may resend
FAST_SQL = "select id, email, plan from users"
# About two seconds of CPU inside the model's query, so a test can kill the run mid-extract.
SLOW_SQL = (
    "select id, email, plan from users"
    " where (select sum(hash(x)) % 2 from range(150000000) t(x)) >= 0"
)

DUCKDB_SOURCE = "{type: duckdb, path: warehouse.duckdb}"
FIELDS = "{email: email, plan: plan}"
CONFIG = """\
sources:
  warehouse: {source}
models:
  users:
    source: warehouse
    primary_key: id
    sql: "{sql}"
destinations:
  hook:
    type: webhook
    url: "${{HOOK_URL}}"
    batch_size: {batch_size}
    concurrency: {concurrency}
    timeout_s: 120
mappings:
  users:
    model: users
    destination: hook
    action: upsert
    mode: mirror
    fields: {fields}
{more}"""
# `ebbtide serve` prints one such line on stderr as each run ends.
FINISHED = re.compile(r"finished (\S+) run (\d+): (\w+)")
# `ebbtide serve` prints this once its REST API listens (any free port with `--port 0`).
LISTENING = re.compile(r"api listening on (http://\S+)\n")


def wait_until(
    condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.01
) -> Any:
    """Poll until `condition()` is truthy and return it; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(interval_s)


# -- processes ------------------------------------------------------------------------------


class Processes:
    """Every process a test starts; all of them are killed at teardown, even stopped ones."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []

    def start(self, args: list[str], env: dict[str, str], out: Path) -> subprocess.Popen[str]:
        with (
            out.with_suffix(".out").open("w") as stdout,
            out.with_suffix(".err").open("w") as stderr,
        ):
            process = subprocess.Popen(
                args,
                env=env,
                stdout=stdout,
                stderr=stderr,
                text=True,
                # A CLI under test hears Ctrl-C as a person's would, whatever this process
                # inherited or some library set: an ignored SIGINT is inherited by children.
                preexec_fn=_default_sigint,
            )
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
            process.wait(timeout=10)


@dataclass
class ReceiverProcess:
    """`python -m ebbtide.demo.receiver` with a per-request delay, logging to a JSONL file."""

    process: subprocess.Popen[str]
    url: str
    log: Path
    _offset: int = 0
    _records: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, log: Path, delay_s: float, hold_after: int | None = None) -> ReceiverProcess:
        """`hold_after`: once that many records came in, nothing is answered until
        `release()`, so a sync is held at that point of its load however busy the machine."""
        args = [sys.executable, "-m", "ebbtide.demo.receiver", "--port", "0"]
        args += ["--log", str(log), "--delay-s", str(delay_s)]
        if hold_after is not None:
            args += ["--hold-after", str(hold_after)]
        process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        line = process.stdout.readline()  # EOF (and a failure here) if it could not start
        if not line.startswith("listening on "):
            process.kill()
            raise AssertionError(f"the receiver did not start: {line!r}")
        return cls(process, line.removeprefix("listening on ").strip(), log)

    def __enter__(self) -> ReceiverProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def release(self) -> None:
        """Answer again after `hold_after` held the answers back."""
        self.process.send_signal(signal.SIGUSR1)

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """The receiver stopped (SIGSTOP) for the block: requests wait unanswered, so a sync
        stays mid-load however long the test takes, on a busy machine too."""
        try:
            stop_and_wait(self.process, "the receiver")
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        _close(self.process.stdout)

    def records(self) -> list[dict[str, Any]]:
        """Every record received so far, in arrival order (complete lines only)."""
        if self.log.exists():
            with self.log.open("rb") as log:
                log.seek(self._offset)
                data = log.read()
            complete = data[: data.rfind(b"\n") + 1]
            self._offset += len(complete)
            self._records += [json.loads(line) for line in complete.splitlines()]
        return list(self._records)

    def count(self, run_id: int | None = None) -> int:
        return len(self.from_run(run_id) if run_id is not None else self.records())

    def from_run(self, run_id: int) -> list[dict[str, Any]]:
        return [r for r in self.records() if run_of(r) == run_id]


def receiver_fixture(delay_s: float) -> Any:
    """A `receiver` fixture for a test module (`receiver = receiver_fixture(0.05)`): a
    ReceiverProcess answering each request after `delay_s`, stopped at teardown."""

    @pytest.fixture
    def receiver(tmp_path: Path) -> Iterator[ReceiverProcess]:
        with ReceiverProcess.start(tmp_path / "received.jsonl", delay_s=delay_s) as running:
            yield running

    return receiver


def run_of(record: dict[str, Any]) -> int:
    """The run that sent a record: idempotency keys are `<run id>-<batch number>`."""
    return int(str(record["idempotency_key"]).split("-")[0])


def batch_of(record: dict[str, Any]) -> str:
    return str(record["idempotency_key"])


def duplicates(records: list[dict[str, Any]]) -> int:
    """How many deliveries were repeats of a key already delivered."""
    return sum(n - 1 for n in Counter(r["key"] for r in records).values())


def received_everything(workspace: Workspace, receiver: ReceiverProcess) -> None:
    """The receiver holds every key of the model, and no more repeats than a crash allows."""
    records = receiver.records()
    assert {r["key"] for r in records} == workspace.keys
    assert duplicates(records) <= IN_FLIGHT_RECORDS


def _close(stream: IO[str] | None) -> None:
    if stream is not None:
        stream.close()


# -- the workspace --------------------------------------------------------------------------


@dataclass
class Workspace:
    """A workspace with a DuckDB warehouse of `rows` users (ids 1..rows), one mirror mapping."""

    root: Path
    url: str
    rows: int
    lease_ttl_s: float = LEASE_TTL_S

    @classmethod
    def create(cls, root: Path, url: str, rows: int, sql: str = FAST_SQL) -> Workspace:
        root.mkdir(parents=True)
        with duckdb.connect(str(root / "warehouse.duckdb")) as con:
            con.execute(
                "CREATE TABLE users AS SELECT i::BIGINT AS id, 'user' || i || '@example.com'"
                " AS email, CASE WHEN i % 3 = 0 THEN 'pro' ELSE 'free' END AS plan"
                f" FROM range(1, {rows + 1}) t(i)"
            )
        workspace = cls(root, url, rows)
        workspace.use_model_sql(sql)
        return workspace

    def use_model_sql(self, sql: str) -> None:
        self.configure(sql)

    def configure(
        self,
        sql: str = FAST_SQL,
        *,
        source: str = DUCKDB_SOURCE,
        fields: str = FIELDS,
        schedule: str | None = None,
        more: str = "",
    ) -> None:
        """Write `ebbtide.yml`: the users model, `sql` on `source`, mirrored to the hook.
        `schedule` goes on the users mapping; `more` (YAML lines) after it."""
        if schedule is not None:
            more = f"    schedule: {schedule}\n{more}"
        text = CONFIG.format(
            source=source,
            sql=sql,
            fields=fields,
            more=more,
            batch_size=BATCH_SIZE,
            concurrency=CONCURRENCY,
        )
        # Replaced in one step, as editors save: serve never reads a half-written file.
        partial = self.root / "ebbtide.yml.partial"
        partial.write_text(text)
        partial.replace(self.root / "ebbtide.yml")

    @property
    def keys(self) -> set[int]:
        return set(range(1, self.rows + 1))

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "COLUMNS": "200",
            # A crash in native code (DuckDB, Arrow) leaves the Python stack in stderr.
            "PYTHONFAULTHANDLER": "1",
            "EBBTIDE_LEASE_TTL_S": f"{self.lease_ttl_s:g}",
            "HOOK_URL": self.url,
        }

    @property
    def journal_dir(self) -> Path:
        return self.root / ".ebbtide" / "snapshots" / f"{MAPPING}.journal"

    @property
    def snapshot_file(self) -> Path:
        return self.root / ".ebbtide" / "snapshots" / f"{MAPPING}.duckdb"

    @property
    def state_db(self) -> Path:
        return self.root / ".ebbtide" / "state.db"

    def scratch_databases(self) -> list[Path]:
        """Runs' scratch databases: one exists from the moment a run opens the snapshot store."""
        return sorted((self.root / ".ebbtide" / "work").glob(f"{MAPPING}-*/work.duckdb"))

    def journals(self) -> list[Path]:
        return sorted(self.journal_dir.glob("*.arrow")) if self.journal_dir.is_dir() else []

    def journaled_keys(self, run_id: int) -> set[int]:
        """Keys in a run's acknowledgement journal, complete batches only (as the engine reads)."""
        path = self.journal_dir / f"{run_id:012d}.arrow"
        keys: set[int] = set()
        try:
            for batch in pa.ipc.open_stream(pa.memory_map(str(path))):
                keys.update(cast(list[int], batch.column("__k0").to_pylist()))
        except (pa.ArrowInvalid, OSError):
            pass  # no journal (yet), or a batch torn by a kill
        return keys

    def snapshot_keys(self) -> set[int]:
        """Keys the snapshot says the destination has (none before the first diff)."""
        if not self.snapshot_file.exists():
            return set()
        with duckdb.connect(str(self.snapshot_file), read_only=True) as con:
            try:
                return {int(r[0]) for r in con.execute("SELECT id FROM snapshot").fetchall()}
            except duckdb.CatalogException:
                return set()

    def latest_run(self) -> tuple[int, str] | None:
        """(id, status) of the newest run, read from the state store without writing to it."""
        if not self.state_db.exists():
            return None
        con = sqlite3.connect(f"file:{self.state_db}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("SELECT id, status FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        except sqlite3.DatabaseError:  # the first run is still creating the tables
            return None
        finally:
            con.close()
        return (int(row[0]), str(row[1])) if row else None

    # -- the CLI -------------------------------------------------------------------------

    def cli_args(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ebbtide", "-w", str(self.root), *args]

    def start_sync(self, processes: Processes, name: str) -> subprocess.Popen[str]:
        """`ebbtide sync run users --json` in the background; output in `<name>.out/.err`."""
        args = self.cli_args("sync", "run", MAPPING, "--json")
        return processes.start(args, self.env, self.root.parent / name)

    def sync(self, processes: Processes, name: str, timeout_s: float = 60) -> Finished:
        process = self.start_sync(processes, name)
        process.wait(timeout=timeout_s)
        return self.finished(process, name)

    def finished(self, process: subprocess.Popen[str], name: str) -> Finished:
        base = self.root.parent / name
        out = base.with_suffix(".out").read_text()
        err = base.with_suffix(".err").read_text()
        assert process.returncode is not None
        return Finished(process.returncode, out, err)

    def cli(
        self, *args: str, timeout_s: float = 60, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`ebbtide <args>` run to its end, its output captured."""
        return subprocess.run(
            self.cli_args(*args),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=self.env if env is None else env,
        )

    def runs(self) -> dict[int, dict[str, Any]]:
        """`ebbtide runs list --json`, by run id."""
        done = self.cli("runs", "list", "--json")
        assert done.returncode == 0, done.stderr
        return {run["id"]: run for run in json.loads(done.stdout)}


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str

    @property
    def run(self) -> dict[str, Any]:
        [run] = json.loads(self.stdout)
        assert isinstance(run, dict)
        return run


# -- serve ----------------------------------------------------------------------------------


class Serve:
    """One `ebbtide serve` process and the lines it printed on stderr."""

    def __init__(self, workspace: Workspace, processes: Processes, name: str, *args: str):
        self.log = workspace.root.parent / f"{name}.err"
        # Any free port for the API: tests run in parallel, each with its own serve.
        port = () if "--port" in args else ("--port", "0")
        command = workspace.cli_args("serve", *port, *args)
        env = {**workspace.env, "EBBTIDE_LEASE_TTL_S": "10"}
        self.process = processes.start(command, env, workspace.root.parent / name)

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def finished(self, mapping: str = MAPPING) -> list[tuple[int, str]]:
        return [
            (int(run), status)
            for name, run, status in FINISHED.findall(self.text())
            if name == mapping
        ]

    def seen(self, look: Callable[[], Any]) -> Any:
        """What `look` finds in the log; once serve has exited, its complete log either has
        it or the wait fails at once, showing the log (an exit is no reason to wait on)."""
        found = look()
        if found or self.process.poll() is None:
            return found
        found = look()
        if not found:
            raise AssertionError(f"serve exited {self.process.returncode}:\n{self.text()}")
        return found

    def wait_finished(self, n: int, mapping: str = MAPPING) -> list[tuple[int, str]]:
        return wait_until(
            lambda: self.seen(lambda: len(self.finished(mapping)) >= n and self.finished(mapping)),
            120,
            f"{n} finished run(s) of {mapping} in {self.log}:\n{self.text()}",
        )

    def wait_line(self, text: str, after: int = 0) -> int:
        """Waits for `text` after position `after` of the log; returns where it ends."""
        found = wait_until(
            lambda: self.seen(lambda: self.text().find(text, after) + 1),
            120,
            f"{text!r} in {self.log}:\n{self.text()}",
        )
        return int(found) - 1 + len(text)

    def api_url(self) -> str:
        """The REST API's base URL, once serve has said where it listens."""
        found = wait_until(
            lambda: self.seen(lambda: LISTENING.search(self.text())),
            120,
            f"the API to listen, in {self.log}:\n{self.text()}",
        )
        return str(found.group(1))

    def stop(self, timeout_s: float = 120) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.log.name} still running {timeout_s:g}s after SIGTERM:\n{self.text()}"
            ) from None


@contextmanager
def holding_state_store(workspace: Workspace) -> Iterator[None]:
    """Hold the state store's write lock: a run blocks at its next write to the history."""
    con = sqlite3.connect(str(workspace.state_db), timeout=10, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        con.execute("ROLLBACK")
        con.close()


@contextmanager
def holding_snapshot(workspace: Workspace) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the snapshot file read-only: a run blocks when it next attaches it to write."""
    con = duckdb.connect(str(workspace.snapshot_file), read_only=True)
    try:
        yield con
    finally:
        con.close()


def process_state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat: R, S, T (stopped) …"""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def stop_and_wait(process: subprocess.Popen[str], what: str) -> None:
    """SIGSTOP `process` and wait until it is stopped (`what` names it in a timeout)."""
    process.send_signal(signal.SIGSTOP)
    wait_until(lambda: process_state(process.pid) == "T", 30, f"{what} to stop")


def state_store_writable(state_db: Path) -> bool:
    """Whether a write transaction can begin on a SQLite state store now, without waiting."""
    con = sqlite3.connect(str(state_db), timeout=0, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        con.close()


def stopped_outside_a_transaction(process: subprocess.Popen[str], state_db: Path) -> bool:
    """Stop a sync (SIGSTOP); True unless it stopped holding the state store's write lock.

    Stopped inside its heartbeat's transaction, it would keep every other process from
    writing until it resumes (SQLite cannot take a lock from a frozen process). Then let it
    out and return False: call again (with `wait_until`) to stop it elsewhere.
    """
    stop_and_wait(process, "the sync")
    if state_store_writable(state_db):
        return True
    process.send_signal(signal.SIGCONT)
    return False


def lease_expired(workspace: Workspace) -> bool:
    """Whether the mapping's lease, as the state store holds it, has run out."""
    con = sqlite3.connect(f"file:{workspace.state_db}?mode=ro", uri=True, timeout=5)
    try:
        row = con.execute("SELECT expires_at FROM leases WHERE mapping = ?", (MAPPING,)).fetchone()
    finally:
        con.close()
    if row is None:
        return False
    expires_at = datetime.fromisoformat(str(row[0]))
    if expires_at.tzinfo is None:  # SQLite keeps the UTC time without its offset
        expires_at = expires_at.replace(tzinfo=UTC)
    return expires_at <= datetime.now(UTC)


def running_run(workspace: Workspace) -> int | None:
    latest = workspace.latest_run()
    return latest[0] if latest and latest[1] == "running" else None


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
