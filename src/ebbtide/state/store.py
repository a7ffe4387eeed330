"""The SQL state store (SQLAlchemy Core): SQLite by default, PostgreSQL for teams."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ebbtide.errors import (
    DiskFullError,
    ErrorClass,
    LeaseLostError,
    MappingBusyError,
    StorageError,
    UsageError,
)
from ebbtide.ports import Operation
from ebbtide.state.alerts import AlertBook
from ebbtide.state.holder import Holder, lock_holders
from ebbtide.state.ledger import RunLedger, failed_counts
from ebbtide.state.pending import PendingFailures
from ebbtide.state.progress import ProgressBook
from ebbtide.state.schedules import ScheduleBook
from ebbtide.state.schema import leases, run_failures, runs, store_identity
from ebbtide.values import (
    FailureGroup,
    Lease,
    RecordFailure,
    RunFilter,
    RunRecord,
    RunResult,
    RunStatus,
    Trigger,
)

_MIGRATING = threading.Lock()


def utcnow() -> datetime:
    return datetime.now(UTC)


# ebbtide's statements on its state store take milliseconds; these bound the pathological.
_POSTGRES_STATEMENT_TIMEOUT_S = 120.0
_POSTGRES_IDLE_IN_TRANSACTION_S = 60.0
_POSTGRES_LOCK_NOT_AVAILABLE = "55P03"
_SERVER_GONE = frozenset({"57P01", "57P02", "57P03"})  # shut down, crashed, not yet accepting


class StateStoreError(StorageError):
    """The state store cannot be reached, written or upgraded, or was deleted."""


class StateStoreGoneError(StateStoreError):
    """The SQLite state store's file was deleted or replaced while a command used it."""


class StateStoreLockedError(StateStoreError):
    """Another process kept the SQLite state store's write lock past the bounded wait."""

    exit_code = 4  # busy, as a mapping another run holds: trying again later succeeds


class SqlStateStore:
    """Runs, failures and leases; the schema is upgraded with Alembic when opened."""

    def __init__(self, url: str, root: Path) -> None:
        self.url = _resolve_sqlite_path(url, root)
        connect_args: dict[str, Any] = {}
        # How long a write waits for another process's write lock on a SQLite state store;
        # EBBTIDE_STATE_LOCK_WAIT_S shortens it for tests.
        self.lock_wait_s = float(os.environ.get("EBBTIDE_STATE_LOCK_WAIT_S", "30"))
        self.file = _sqlite_file(self.url)
        self.read_only = self.file is not None and _read_only_file(self.file)
        engine_url = self.url
        if self.file is not None:
            connect_args = {"timeout": self.lock_wait_s}
            if self.read_only:
                # SQLite cannot open a WAL file whose folder it cannot write (no -shm can be
                # created) unless told that nobody writes it: the history can still be read.
                engine_url = f"sqlite:///file:{self.file}?mode=ro&immutable=1&uri=true"
        self.engine = sa.create_engine(engine_url, connect_args=connect_args)
        if self.read_only:
            pass  # no pragma that writes (journal mode) on a file that cannot be written
        elif self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        elif self.engine.dialect.name == "postgresql":
            sa.event.listen(self.engine, "connect", self._postgres_timeouts)
        sa.event.listen(self.engine, "handle_error", self._explain)
        self._migrate()
        self._identity = self._file_identity()
        self.pending_failures = PendingFailures(self.engine)
        self.alerts = AlertBook(self.engine)
        self.ledger = RunLedger(self.engine)
        self.progress = ProgressBook(self.engine)
        self.schedules = ScheduleBook(self.engine)

    def _postgres_timeouts(self, dbapi_connection: Any, _record: Any) -> None:
        """A process frozen or hung inside one of its transactions must not wedge the others:
        waits for locks are bounded like SQLite's, and the server ends a transaction left
        idle (its locks go with it). ebbtide's own statements are short; none may run away."""
        with dbapi_connection.cursor() as cursor:
            for setting, seconds in (
                ("lock_timeout", self.lock_wait_s),
                ("statement_timeout", _POSTGRES_STATEMENT_TIMEOUT_S),
                ("idle_in_transaction_session_timeout", _POSTGRES_IDLE_IN_TRANSACTION_S),
            ):
                cursor.execute(f"SET {setting} = {round(seconds * 1000)}")
        dbapi_connection.commit()

    def _explain(self, context: sa.engine.ExceptionContext) -> None:
        """What the database driver says, said as what it means and what to do about it."""
        error = context.original_exception
        text = str(error).lower()
        sqlstate = getattr(error, "sqlstate", None) or ""
        sqlite = isinstance(error, sqlite3.Error)
        if (sqlite and "locked" in text) or sqlstate == _POSTGRES_LOCK_NOT_AVAILABLE:
            raise StateStoreLockedError(
                f"the state store {self._where()} stayed locked for"
                f" {self.lock_wait_s:g} s: {self._lock_holders()} a write lock on it. This"
                " command stopped there; run it again once that process has finished."
            ) from error
        if sqlite and ("disk is full" in text or "disk quota" in text):
            raise DiskFullError(
                f"out of disk space for the state store {self._where()} ({error}): free some"
                " space there and run the command again."
            ) from error
        if sqlite and "readonly" in text:
            raise StateStoreError(
                f"the state store {self._where()} is read-only ({error}): the history can be"
                " read, but syncs, resets and alerts write to it. Make the file and its folder"
                " writable, or point `state:` in ebbtide.yml at a writable store."
            ) from error
        if sqlite and ("unable to open" in text or "no such table" in text or "i/o" in text):
            raise StateStoreError(
                f"the state store {self._where()} cannot be used ({error}): it was deleted,"
                " moved or damaged, or its folder cannot be written. ebbtide creates a new one"
                " when the file is missing at start."
            ) from error
        if self.engine.dialect.name == "postgresql" and _unreachable(
            context, sqlstate, self.engine.dialect.loaded_dbapi.OperationalError
        ):
            raise StateStoreError(
                f"cannot reach the state store {self._where()}:"
                f" {' '.join(str(error).split())}. Check that the server runs and accepts"
                " connections, then run the command again."
            ) from error

    def _lock_holders(self) -> str:
        """Who holds the SQLite file's locks, as far as this machine can tell."""
        file = self.file
        holders = lock_holders(file, file.with_name(f"{file.name}-shm")) if file else []
        if not holders:
            return (
                "another process (another ebbtide sync, reset or serve, perhaps stopped or"
                " hung) holds"
            )
        return f"{', '.join(holders)} {'holds' if len(holders) == 1 else 'hold'}"

    def _file_identity(self) -> tuple[int, int] | None:
        if self.file is None:
            return None
        try:
            stat = self.file.stat()
        except OSError:
            return None
        return stat.st_dev, stat.st_ino

    @functools.cached_property
    def name(self) -> str:
        """This store's own name (drawn when it was created): runs of two stores, or of a
        store deleted and created anew, never send the same idempotency key."""
        with self.engine.connect() as conn:
            return str(conn.execute(sa.select(store_identity.c.name)).scalar_one())

    def check_present(self) -> None:
        """A SQLite state store deleted or replaced under a running command: what it writes
        from now on would go nowhere (or into another store), so it stops here."""
        if self._identity is not None and self._file_identity() != self._identity:
            raise StateStoreGoneError(
                f"the state store {self._where()} was deleted or replaced while this command"
                " ran: it stopped, since nothing it did could be recorded. What the"
                " destination acknowledged is kept in the mapping's journal; the next sync"
                " starts a new history there and sends only what is missing."
            )

    def _where(self) -> str:
        """The state store as a person finds it: its file, or its URL without the password."""
        if self.file is not None:
            return str(self.file)
        return self.engine.url.render_as_string(hide_password=True)

    def _migrate(self) -> None:
        try:
            if self._up_to_date():
                return  # nothing to write: a read-only store still shows its history
            # Alembic takes a fifth of a second to import: only a store to upgrade needs it.
            from alembic import command
            from alembic.config import Config as AlembicConfig

            config = AlembicConfig()
            config.set_main_option("script_location", str(_MIGRATIONS))
            # Alembic swaps module-level proxies while it runs: one upgrade at a time in this
            # process, and one at a time across processes opening a new store together.
            with _MIGRATING, self._across_processes(), self.engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    # Keyed by schema: stores in other schemas of the database migrate freely.
                    connection.execute(
                        sa.text(
                            "SELECT pg_advisory_xact_lock("
                            "hashtextextended(current_schema(), 7216240513))"
                        )
                    )
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except sa.exc.DBAPIError as exc:
            raise StateStoreError(
                f"cannot open the state store {self._where()}: {exc.orig}"
            ) from exc
        except OSError as exc:  # the lock file beside it cannot be created
            raise StateStoreError(
                f"cannot open the state store {self._where()}: {exc.strerror}:"
                f" {exc.filename}. Its folder must be writable to create or upgrade it."
            ) from exc

    def _up_to_date(self) -> bool:
        """Whether the store is at this version's schema; an older one is upgraded after this,
        one written by a newer ebbtide is refused (this code would misread its tables)."""
        with self.engine.connect() as connection:
            current: set[str] = set()
            if sa.inspect(connection).has_table("alembic_version"):
                rows = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
                current = {str(row[0]) for row in rows}
        known = known_revisions()
        unknown = sorted(current - known)
        if unknown:
            raise StateStoreError(
                f"the state store {self._where()} was written by a newer ebbtide (revision"
                f" {', '.join(unknown)}); upgrade ebbtide to use it. Nothing was changed."
            )
        return current == {max(known)}

    @contextlib.contextmanager
    def _across_processes(self) -> Iterator[None]:
        """A file lock beside a SQLite database (PostgreSQL takes an advisory lock)."""
        if self.file is None:
            yield
            return
        with open(f"{self.file}.migrate-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- runs and leases -----------------------------------------------------------------

    def start_run(
        self,
        mapping: str,
        trigger: str,
        lease_ttl_s: float,
        *,
        actor: str | None = None,
        replay_of: int | None = None,
        forced: bool = False,
    ) -> tuple[RunRecord, Lease]:
        """Claim the mapping and record a new running run, or raise MappingBusyError.

        A lease whose holder is gone (its process exited on this machine) or whose time ran
        out belongs to a dead run: it is taken over and that run is marked interrupted. A run
        whose mapping was reset since its last run says so.
        """
        now = utcnow()
        token = uuid.uuid4().hex
        holder = Holder.this_process()
        with self.engine.begin() as conn:
            held = conn.execute(
                sa.select(leases).where(leases.c.mapping == mapping).with_for_update()
            ).first()
            claim = _claim(token, holder, now + timedelta(seconds=lease_ttl_s))
            if held is not None:
                self._take_over(conn, held, claim, now)
            else:
                try:
                    with conn.begin_nested():
                        conn.execute(leases.insert().values(mapping=mapping, **claim))
                except sa.exc.IntegrityError as exc:
                    raise MappingBusyError(
                        f"mapping {mapping!r} is busy: another run just started"
                    ) from exc
            previous = conn.execute(
                sa.select(runs.c.trigger)
                .where(runs.c.mapping == mapping)
                .order_by(runs.c.id.desc())
                .limit(1)
            ).scalar()
            inserted = conn.execute(
                runs.insert().values(
                    mapping=mapping,
                    trigger=trigger,
                    actor=actor,
                    replay_of=replay_of,
                    forced=forced,
                    after_reset=previous == Trigger.RESET and trigger != Trigger.RESET,
                    status=RunStatus.RUNNING.value,
                    started_at=now,
                    heartbeat_at=now,
                    failed_by_class={},
                    host=holder.host,
                    pid=holder.pid,
                )
            )
            run_id = int(inserted.inserted_primary_key[0])  # type: ignore[index]
            conn.execute(leases.update().where(leases.c.mapping == mapping).values(run_id=run_id))
        return self.get_run(int(run_id)), Lease(mapping, token, int(run_id))

    def _take_over(
        self, conn: sa.Connection, held: Any, claim: dict[str, Any], now: datetime
    ) -> None:
        """Take a lease whose holder is gone or whose time ran out; refuse one that may live."""
        reason = _vacancy(held, now)
        if reason is None:
            raise MappingBusyError(_busy_message(held))
        claimed = conn.execute(
            leases.update()
            .where(leases.c.mapping == held.mapping, leases.c.token == held.token)
            .values(run_id=None, **claim)
        ).rowcount
        if claimed != 1:
            raise MappingBusyError(f"mapping {held.mapping!r} is busy: another run took it over")
        if held.run_id is not None:
            conn.execute(
                runs.update()
                .where(runs.c.id == held.run_id, runs.c.status == RunStatus.RUNNING.value)
                .values(
                    status=RunStatus.INTERRUPTED.value,
                    finished_at=now,
                    error=f"the run stopped without finishing ({reason}); the next run"
                    " re-sent what it had not delivered",
                    **failed_counts(conn, held.run_id),
                )
            )

    def heartbeat(self, lease: Lease, lease_ttl_s: float) -> None:
        """Extend the lease; LeaseLostError when another run has taken it over."""
        self.check_present()
        now = utcnow()
        with self.engine.begin() as conn:
            kept = conn.execute(
                leases.update()
                .where(leases.c.mapping == lease.mapping, leases.c.token == lease.token)
                .values(expires_at=now + timedelta(seconds=lease_ttl_s))
            ).rowcount
            if kept != 1:
                raise LeaseLostError(f"run {lease.run_id} lost its lease on {lease.mapping!r}")
            conn.execute(runs.update().where(runs.c.id == lease.run_id).values(heartbeat_at=now))

    def holds(self, lease: Lease) -> bool:
        with self.engine.connect() as conn:
            token = conn.execute(
                sa.select(leases.c.token).where(leases.c.mapping == lease.mapping)
            ).scalar()
        return token == lease.token

    def check_lease(self, lease: Lease) -> None:
        """Fencing: raise LeaseLostError when another run has taken this one's lease."""
        self.check_present()
        if not self.holds(lease):
            raise LeaseLostError(
                f"run {lease.run_id} lost its lease on {lease.mapping!r} (it stalled past the"
                " lease and another run took over); it commits nothing more"
            )

    def finish_run(self, lease: Lease, status: RunStatus, result: RunResult) -> RunRecord:
        """Record the run's outcome and release its lease; refused if the lease was lost."""
        counts, timings = result.counts, result.timings
        with self.engine.begin() as conn:
            released = conn.execute(
                leases.delete().where(
                    leases.c.mapping == lease.mapping, leases.c.token == lease.token
                )
            ).rowcount
            if released != 1:
                raise LeaseLostError(
                    f"run {lease.run_id} lost its lease on {lease.mapping!r}; its late"
                    " results were not recorded"
                )
            conn.execute(
                runs.update()
                .where(runs.c.id == lease.run_id)
                .values(
                    status=status.value,
                    finished_at=utcnow(),
                    error=result.error,
                    extract_s=timings.extract_s,
                    diff_s=timings.diff_s,
                    load_s=timings.load_s,
                    commit_s=timings.commit_s,
                    extracted=counts.extracted,
                    added=counts.added,
                    updated=counts.updated,
                    deleted=counts.deleted,
                    skipped=counts.skipped,
                    loaded_new=counts.loaded_new,
                    loaded_updated=counts.loaded_updated,
                    loaded_deleted=counts.loaded_deleted,
                    failed=counts.failed,
                    retried=counts.retried,
                    failed_by_class=dict(counts.failed_by_class),
                    detection=result.detection or None,
                )
            )
        return self.get_run(lease.run_id)

    def add_failures(self, run_id: int, failures: Sequence[RecordFailure]) -> None:
        if not failures:
            return
        with self.engine.begin() as conn:
            conn.execute(
                run_failures.insert(),
                [
                    {
                        "run_id": run_id,
                        "record_key": f.key,
                        "operation": f.operation.value,
                        "error_class": f.error_class.value,
                        "code": f.code,
                        "http_status": f.http_status,
                        "message": f.message,
                        "payload": f.payload,
                    }
                    for f in failures
                ],
            )

    # -- history -------------------------------------------------------------------------

    def get_run(self, run_id: int) -> RunRecord:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
        if row is None:
            raise UsageError(f"there is no run {run_id}")
        return _run_record(row)

    def list_runs(
        self, mapping: str | None = None, limit: int = 50, *, where: RunFilter | None = None
    ) -> list[RunRecord]:
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        if mapping is not None:
            query = query.where(runs.c.mapping == mapping)
        if where is not None:
            query = _filtered(query, where)
        with self.engine.connect() as conn:
            return [_run_record(row) for row in conn.execute(query)]

    def failures(
        self,
        run_id: int,
        limit: int = 100,
        *,
        error_class: str | None = None,
        key_contains: str | None = None,
    ) -> list[RecordFailure]:
        """A run's failed records in the order they failed; `key_contains` searches keys."""
        query = (
            sa.select(run_failures)
            .where(run_failures.c.run_id == run_id)
            .order_by(run_failures.c.id)
            .limit(limit)
        )
        if error_class is not None:
            query = query.where(run_failures.c.error_class == error_class)
        if key_contains:
            query = query.where(run_failures.c.record_key.contains(key_contains, autoescape=True))
        with self.engine.connect() as conn:
            return [_record_failure(row) for row in conn.execute(query)]

    def key_failures(self, mapping: str, keys: Sequence[str]) -> dict[int, RecordFailure]:
        """Per run of `mapping`, how the record with one of these key texts failed in it."""
        query = (
            sa.select(run_failures)
            .join(runs, runs.c.id == run_failures.c.run_id)
            .where(runs.c.mapping == mapping, run_failures.c.record_key.in_(list(keys)))
        )
        with self.engine.connect() as conn:
            return {row.run_id: _record_failure(row) for row in conn.execute(query)}

    def failure_groups(self, run_id: int, samples: int = 5) -> list[FailureGroup]:
        """Failures grouped by error class and message, largest group first."""
        grouped = (
            sa.select(
                run_failures.c.error_class, run_failures.c.message, sa.func.count().label("n")
            )
            .where(run_failures.c.run_id == run_id)
            .group_by(run_failures.c.error_class, run_failures.c.message)
            .order_by(sa.desc("n"))
        )
        groups = []
        with self.engine.connect() as conn:
            for error_class, message, n in conn.execute(grouped):
                samples_rows = conn.execute(
                    sa.select(run_failures.c.record_key, run_failures.c.payload)
                    .where(
                        run_failures.c.run_id == run_id,
                        run_failures.c.error_class == error_class,
                        run_failures.c.message == message,
                    )
                    .order_by(run_failures.c.id)
                    .limit(samples)
                )
                rows = list(samples_rows)
                groups.append(
                    FailureGroup(
                        error_class,
                        message,
                        int(n),
                        [r[0] for r in rows],
                        [r[1] for r in rows if r[1]],
                    )
                )
        return groups

    def dispose(self) -> None:
        self.engine.dispose()


def _record_failure(row: Any) -> RecordFailure:
    return RecordFailure(
        key=row.record_key,
        operation=Operation(row.operation),
        error_class=ErrorClass(row.error_class),
        message=row.message,
        code=row.code,
        http_status=row.http_status,
        payload=row.payload,
    )


def _claim(token: str, holder: Holder, expires_at: datetime) -> dict[str, Any]:
    """A lease's columns for a new holder."""
    return {
        "token": token,
        "expires_at": expires_at,
        "host": holder.host,
        "pid": holder.pid,
        "boot_id": holder.boot_id,
        "pid_ns": holder.pid_ns,
        "process_start": holder.started,
    }


def _holder(held: Any) -> Holder | None:
    """Who holds a lease; None for a lease written before holders were recorded."""
    if held.host is None or held.pid is None:
        return None
    return Holder(held.host, held.pid, held.boot_id, held.pid_ns, held.process_start)


def _vacancy(held: Any, now: datetime) -> str | None:
    """Why a held lease may be taken over now, or None while its holder may be alive.

    A holder that this machine sees gone is taken over at once: waiting out its lease would
    only delay the next run. One that may live (elsewhere, or stopped) keeps it until expiry.
    """
    holder = _holder(held)
    if holder is not None and holder.is_gone():
        return f"its process is gone: {holder.describe()}"
    if held.expires_at <= now:
        return "its lease expired"
    return None


def _busy_message(held: Any) -> str:
    holder = _holder(held)
    by = f"{holder.describe()}, " if holder is not None else ""
    return (
        f"mapping {held.mapping!r} is busy: run {held.run_id} holds it"
        f" ({by}lease until {held.expires_at:%H:%M:%S} UTC)"
    )


def _run_record(row: Any) -> RunRecord:
    values = dict(row._mapping)
    for unused in ("heartbeat_at", "host", "pid"):
        values.pop(unused)
    values["status"] = RunStatus(values["status"])
    values["failed_by_class"] = dict(values["failed_by_class"] or {})
    return RunRecord(**values)


def _resolve_sqlite_path(url: str, root: Path) -> str:
    """`sqlite:///.ebbtide/state.db` is relative to the workspace, not the working directory.

    `postgresql://` URLs use psycopg 3, the driver ebbtide ships with.
    """
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == "sqlite:///:memory:":
        return url
    path = Path(url[len(prefix) :])
    if not path.is_absolute():
        path = root / path
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"{prefix}{path}"


def _filtered(query: sa.Select[Any], where: RunFilter) -> sa.Select[Any]:
    """Each condition the filter sets, on indexed or primary-key columns where it matters."""
    if where.status is not None:
        query = query.where(runs.c.status == where.status.value)
    if where.trigger is not None:
        query = query.where(runs.c.trigger == where.trigger)
    if where.since is not None:
        query = query.where(runs.c.started_at >= where.since)
    if where.until is not None:
        query = query.where(runs.c.started_at < where.until)
    if where.before is not None:
        query = query.where(runs.c.id < where.before)
    return query


_MIGRATIONS = resources.files("ebbtide.state") / "migrations"


def known_revisions() -> set[str]:
    """The schema revisions this version knows: each migration file is named after its
    revision (`0008_store_identity.py` is revision 0008), the newest being the head."""
    versions = _MIGRATIONS / "versions"
    return {
        entry.name.split("_", 1)[0]
        for entry in versions.iterdir()
        if entry.name.endswith(".py") and entry.name[:4].isdigit()
    }


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite state store (None for PostgreSQL or an in-memory store)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == "sqlite:///:memory:":
        return None
    return Path(url[len(prefix) :])


def _read_only_file(file: Path) -> bool:
    """An existing store whose folder cannot be written (a read-only mount, permissions)."""
    return file.exists() and not os.access(file.parent, os.W_OK)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        # Switching a new file to WAL does not wait out the busy timeout when another process
        # does the same: retry briefly, and skip it once the file already is in WAL.
        for attempt in range(50):
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError:
                time.sleep(0.05 * (attempt + 1))
    finally:
        cursor.close()


def _unreachable(
    context: sa.engine.ExceptionContext, sqlstate: str, operational: type[Exception]
) -> bool:
    """The PostgreSQL server could not be reached, or the connection to it was lost."""
    if context.is_disconnect or sqlstate.startswith("08") or sqlstate in _SERVER_GONE:
        return True
    # Refused or timed out before any session existed: the driver has no SQLSTATE then.
    return not sqlstate and isinstance(context.original_exception, operational)
