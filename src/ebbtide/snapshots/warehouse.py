"""The diff pushed down into the warehouse (`diff: warehouse`).

The snapshot (primary key → row hash) lives in a table of ebbtide's own schema in the
warehouse. Each sync stages (key, hash of the mapped columns) there in one statement, computes
added/updated/deleted with SQL there, and brings out only the changed rows, with the
snapshot's hashes for their keys. Locally, those rows and hashes fill the same scratch DuckDB
the default store works in, so the outbound records, the journals, the failed-record
bookkeeping and replays are the very code of the local diff.

Every acknowledged batch is journaled locally at once, and written into the warehouse snapshot
checkpoint by checkpoint (WarehouseJournal), each in one transaction that first checks the run
still holds the mapping's fence there (a run that took the lease over raised it): a fenced run
cannot commit.
"""

from __future__ import annotations

import contextlib
import decimal
import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ebbtide.errors import LeaseLostError, ModelError, SnapshotMismatchError, SourceError
from ebbtide.mapping.binding import bind
from ebbtide.mapping.compiler import CompiledMapping
from ebbtide.ports import (
    HASH_COLUMN,
    KEY_PART_PREFIX,
    OP_COLUMN,
    ChangeCounts,
    ColumnKind,
    Operation,
    Source,
    WarehouseSession,
    is_key_part,
)
from ebbtide.snapshots import warehouse_sql as wsql
from ebbtide.snapshots.duckdb import SAMPLE_KEYS, UNSENT_SEQ, DuckDBSnapshotStore
from ebbtide.snapshots.journal import AckJournal, journal_files, read_journal
from ebbtide.snapshots.sql_text import bare_query
from ebbtide.snapshots.warehouse_sql import Column

EMPTY = "ebbtide_empty"


class WarehouseSnapshotStore(DuckDBSnapshotStore):
    """The snapshot in the warehouse; the scratch work beside it local, as by default."""

    def __init__(
        self,
        state_dir: Path,
        mapping: CompiledMapping,
        session: WarehouseSession,
        *,
        run_id: int | None = None,
        read_only: bool = False,
        max_record_bytes: int | None = None,
    ) -> None:
        self.session = session
        self.sql = wsql.dialect(session.dialect)
        self.run_id = run_id
        self.warehouse_read_only = read_only
        self.schema = session.state_schema
        self.table = self.sql.table(self.schema, wsql.snapshot_table_name(mapping.name))
        self._lock = threading.Lock()  # acknowledged batches arrive from the loader's threads
        self._keys: list[Column] = []
        super().__init__(state_dir, mapping, max_record_bytes=max_record_bytes)
        try:
            self._meta = self._warehouse_meta()
            if self._meta is not None and run_id is not None and not read_only:
                self._claim_fence()
        except BaseException:
            self.close()
            raise

    @property
    def _hash_version(self) -> str:
        return f"{wsql.HASH_VERSION}:{self.sql.name}"

    def _snapshot_file(self, base: Path) -> Path:
        # The local file holds only this run's slice of the snapshot: the changed keys.
        return self._scratch / "changed_keys.duckdb"

    # -- extract and diff ----------------------------------------------------------------

    def extract(
        self,
        source: Source,
        query: str,
        include: pa.Table | None = None,
        pending: Sequence[str] = (),
    ) -> int:
        """Stage and diff in the warehouse; bring out the changed rows and their old hashes.

        Keys asked for by name (a replay's, and those of records that failed before) come out
        too when their row did not change: a replay resends them, and a failed record whose
        row went back to what the destination has is known to be still in the model."""
        model = bare_query(query)
        kinds = dict(self.session.describe(model))
        probe = self.session.read(f"SELECT * FROM ({model}\n) m WHERE 1 = 0")
        schema = probe.schema
        probe.read_all()
        self.bound = bound = bind(self.mapping, schema)
        self._check_snapshot_meta()
        self._keys = keys = [Column(k, kinds[k]) for k in self.mapping.key_columns]
        hashed = [Column(c, kinds[c]) for c in bound.hashed]
        include = _named_keys(include, pending, schema, self.mapping.key_columns)
        run = self.session.execute
        if self.sql.parallel_stage and not self.warehouse_read_only:
            run(self.sql.create_schema(self.schema))
            self.sql.stage_table = self.sql.table(
                self.schema, wsql.stage_table_name(self.mapping.name)
            )
        try:
            with self._transaction(self.sql.begin_consistent()):
                for statement in self.sql.stage(model, self.mapping.signature, keys, hashed):
                    run(statement)
                self._check_warehouse_keys()
                self._analyze(self.sql.stage_ref)
                extracted = self._scalar(f"SELECT count(*) FROM {self.sql.stage_ref}")
                snapshot = self._snapshot_relation()
                if include is not None:
                    self._upload_include(include)
                for statement in self.sql.changes(snapshot, keys, include is not None):
                    run(statement)
                changed = self.session.read(self.sql.changed_rows(model, keys))
                self._stage(changed, f"CAST({wsql.HASH} AS UBIGINT)")
                old = self.session.read(self.sql.old_hashes(keys)).read_all()
        finally:
            if self.sql.stage_table is not None:
                with contextlib.suppress(SourceError):  # the next run drops it first anyway
                    run(f"DROP TABLE IF EXISTS {self.sql.stage_table}")
        self.stage_schema = (
            self.con.execute("SELECT * FROM work.stage LIMIT 0").to_arrow_table().schema
        )
        if self._meta is not None:
            self._fill_local_snapshot(old)
        return extracted

    def stage(self, rows: pa.RecordBatchReader) -> int:
        raise NotImplementedError("the warehouse diff stages in the warehouse: use extract()")

    def _check_snapshot_meta(self) -> None:
        """Before any statement joins the snapshot: it was hashed as this version hashes, and
        keyed on the model's primary key."""
        if self._meta is None:
            return
        if self._meta.get("hash_version") != self._hash_version:
            raise SnapshotMismatchError(
                f"mapping {self.mapping.name!r}: its snapshot in {self.session.where} was"
                f" hashed by another version of ebbtide ({self._meta.get('hash_version')});"
                " its hashes cannot be compared with this one's. Run"
                f" `ebbtide reset {self.mapping.name}` to sync it anew."
            )
        stored = json.loads(self._meta.get("primary_key", "[]"))
        if stored != list(self.mapping.key_columns):
            raise SnapshotMismatchError(
                f"mapping {self.mapping.name!r}: the snapshot was taken with primary key"
                f" {', '.join(stored)}, the model now has {', '.join(self.mapping.key_columns)};"
                " syncing would delete and re-add every record. Run"
                f" `ebbtide reset {self.mapping.name}` to sync it anew."
            )

    def _check_warehouse_keys(self) -> None:
        """Null or duplicate keys fail the run, with counts and samples, before anything is
        sent: where a unique index is cheaper, it is tried first, and counted only if it fails."""
        unique = self.sql.unique_key(self._keys)
        if unique:
            try:
                for statement in unique:
                    self.session.execute(statement)
                return
            except SourceError:
                for statement in self.sql.undo_unique_key():
                    self.session.execute(statement)
                # Not a bad key (a key too wide for an index): counted, found fine, no index.
        self._count_bad_keys()

    def _count_bad_keys(self) -> None:
        q = self.sql.quote
        names = [q(k.name) for k in self._keys]
        stage = self.sql.stage_ref
        nulls = self._scalar(
            f"SELECT count(*) FROM {stage} WHERE " + " OR ".join(f"{n} IS NULL" for n in names)
        )
        if nulls:
            raise ModelError(
                f"model {self.mapping.model!r}: {nulls} row(s) have a null primary key"
                f" ({', '.join(self.mapping.key_columns)}); nothing was sent.",
                [],
            )
        key_list = ", ".join(names)
        rendered = self.sql.concat(
            [
                self.sql.quote_nullable(self.sql.render(n, k.kind))
                for n, k in zip(names, self._keys, strict=True)
            ]
        )
        dupes = self.session.execute(
            f"SELECT {rendered}, count(*) FROM {stage} GROUP BY {key_list}"
            f" HAVING count(*) > 1 ORDER BY count(*) DESC LIMIT {SAMPLE_KEYS}"
        )
        if dupes:
            total = self._scalar(
                f"SELECT count(*) FROM (SELECT 1 AS one FROM {stage} GROUP BY {key_list}"
                " HAVING count(*) > 1) d"
            )
            raise ModelError(
                f"model {self.mapping.model!r}: {total} primary key value(s) appear more"
                f" than once ({', '.join(self.mapping.key_columns)}), compared byte for byte;"
                " nothing was sent.",
                [f"{key} ({n} rows)" for key, n in dupes],
            )

    def _snapshot_relation(self) -> str:
        """The snapshot table, or (never synced, or reset) an empty one like it."""
        if self._meta is not None:
            return self.table
        names = ", ".join(self.sql.quote(k.name) for k in self._keys)
        return self._empty_temp(EMPTY, f"{names}, {wsql.HASH}", self.sql.stage_ref)

    def _upload_include(self, include: pa.Table) -> None:
        names = [k.name for k in self._keys]
        columns = ", ".join(self.sql.quote(n) for n in names)
        table = self._empty_temp(wsql.INCLUDE, columns, self.sql.stage_ref)
        if include.num_rows:
            self.session.insert(table, include.rename_columns(names))

    def _empty_temp(self, name: str, columns: str, like: str) -> str:
        """A temporary table `name` with these columns of `like`, typed as there, empty."""
        table = self.sql.quote(name)
        self.session.execute(self.sql.drop_temp(name))
        self.session.execute(
            f"{self.sql.temp_table} {table} AS SELECT {columns} FROM {like} WHERE 1 = 0"
        )
        return table

    def _fill_local_snapshot(self, old: pa.Table) -> None:
        """The snapshot's hashes of the changed keys, as the local diff's snapshot."""
        assert self.stage_schema is not None
        keys = self.mapping.key_columns
        self.con.register("old_hashes", old)
        try:
            parts = ", ".join(
                f"CAST(o.{_q(k)} AS {self._duck_type('work.stage', k)}) AS {_q(k)}" for k in keys
            )
            self.con.execute(
                f"CREATE OR REPLACE TABLE snapshot AS SELECT {parts},"
                f" CAST(o.{wsql.OLD_HASH} AS UBIGINT) AS __row_hash FROM old_hashes o"
            )
        finally:
            self.con.unregister("old_hashes")
        assert self._meta is not None
        self._set_meta(self._meta)

    def diff(self, *, dry_run: bool = False) -> ChangeCounts:
        counts = super().diff(dry_run=dry_run)
        if not dry_run and self._meta is None:
            self._create_warehouse_snapshot()
        return counts

    def replay(self, sent: pa.Table, *, latest: bool) -> tuple[ChangeCounts, int]:
        replayed = super().replay(sent, latest=latest)
        if self._meta is None:  # a replay after a reset starts the snapshot anew
            self._create_warehouse_snapshot()
        return replayed

    def snapshot_size(self) -> int:
        if self._meta is None:
            return 0
        return self._scalar(f"SELECT count(*) FROM {self.table}")

    def holds(self, keys: list[str]) -> set[str] | None:
        return None  # the history asks the local file; the warehouse is not asked for it

    # -- the snapshot table and its fence ------------------------------------------------

    def _warehouse_meta(self) -> dict[str, str] | None:
        """The mapping's row in ebbtide's schema; None when it has no snapshot there."""
        found = self._scalar(self.sql.table_exists(self.schema, wsql.MAPPINGS))
        if not found:
            return None
        rows = self.session.execute(
            f"SELECT meta FROM {self.sql.table(self.schema, wsql.MAPPINGS)}"
            f" WHERE mapping = {self.sql.literal(self.mapping.name)}"
        )
        if not rows:
            return None
        meta: dict[str, str] = json.loads(_text(rows[0][0]))
        return meta

    def _create_warehouse_snapshot(self) -> None:
        """The first sync (or the first after a reset): the schema, the table, the fence."""
        run = self.session.execute
        meta = {**self.meta(), "hash_version": self._hash_version}
        run(self.sql.create_schema(self.schema))
        run(self.sql.mappings_table(self.schema))
        run(f"DROP TABLE IF EXISTS {self.table}")
        run(self._create_table_statement())
        run(self.sql.primary_key(self.table, self._keys))
        run(
            self.sql.upsert_mapping(self.schema)
            .replace("%s", "{}")
            .format(
                self.sql.literal(self.mapping.name),
                self.sql.literal(wsql.snapshot_table_name(self.mapping.name)),
                self.sql.literal(json.dumps(meta, sort_keys=True)),
                "NULL",
            )
        )
        self._meta = meta
        self._claim_fence()

    def _create_table_statement(self) -> str:
        """Key columns as the stage has them (the model's types, binary-collated text)."""
        q = self.sql.quote
        names = ", ".join(q(k.name) for k in self._keys)
        # The stage is gone with the extract's transaction: describe the keys from a query
        # over the model's key types, kept in the changes' temporary table.
        return (
            f"CREATE TABLE {self.table} AS SELECT {names}, {wsql.HASH}"
            f" FROM {q(wsql.CHANGES)} WHERE 1 = 0"
        )

    def _claim_fence(self) -> None:
        assert self.run_id is not None
        run = self.run_id
        self.session.execute(
            self.sql.claim_fence(self.schema)
            .replace("%s", "{}")
            .format(run, self.sql.literal(self.mapping.name), run)
        )
        self._check_fence(lock=False)

    def _check_fence(self, *, lock: bool) -> None:
        rows = self.session.execute(
            f"SELECT fence_run FROM {self.sql.table(self.schema, wsql.MAPPINGS)}"
            f" WHERE mapping = {self.sql.literal(self.mapping.name)}"
            + (self.sql.lock_row() if lock else "")
        )
        holder = int(_text(rows[0][0])) if rows and rows[0][0] is not None else None
        if holder != self.run_id:
            raise LeaseLostError(
                f"run {self.run_id} of mapping {self.mapping.name!r} no longer holds its"
                f" snapshot in {self.session.where}: run {holder} took it over (or it was"
                " reset). Nothing more is committed by this run."
            )

    # -- commit --------------------------------------------------------------------------

    def write_accepted(self, accepted: pa.Table) -> None:
        """One transaction: the fence still ours, then the snapshot takes in the records."""
        if not accepted.num_rows or self.run_id is None:
            return
        if self._meta is None:
            raise LeaseLostError(
                f"the snapshot of mapping {self.mapping.name!r} in {self.session.where} was"
                " dropped (a reset) while this run loaded; nothing more is committed by it"
            )
        q = self.sql.quote
        names = [k.name for k in self._keys] or list(self.mapping.key_columns)
        rows = _latest_per_key(accepted, len(names)).rename_columns([*names, wsql.HASH, wsql.OP])
        rows = rows.set_column(len(names), wsql.HASH, pc.cast(rows.column(wsql.HASH), pa.int64()))
        columns = (
            f"{', '.join(q(n) for n in names)}, {wsql.HASH},"
            f" CAST('updated' AS {self.sql.op_type}) AS {wsql.OP}"
        )
        with self._lock:
            accepted_table = self._empty_temp(wsql.ACCEPTED, columns, self.table)
            self.session.insert(accepted_table, rows)
            self._analyze(accepted_table)
            with self._transaction(self.sql.begin()):
                self._check_fence(lock=True)
                for statement in self.sql.apply_accepted(self.table, self._key_columns()):
                    self.session.execute(statement)

    def _analyze(self, table: str) -> None:
        """Statistics for a scratch table, where the planner needs them to pick a join."""
        statement = self.sql.analyze(table)
        if statement:
            self.session.execute(statement)

    @contextlib.contextmanager
    def _transaction(self, begin: list[str]) -> Iterator[None]:
        """Committed if the block ends normally, else rolled back (if the connection lets)."""
        for statement in begin:
            self.session.execute(statement)
        committed = False
        try:
            yield
            for statement in self.sql.commit():
                self.session.execute(statement)
            committed = True
        finally:
            if not committed:
                with contextlib.suppress(SourceError):  # the error that got here says why
                    for statement in self.sql.rollback():
                        self.session.execute(statement)

    def _key_columns(self) -> list[Column]:
        return self._keys or [Column(k, ColumnKind.OTHER) for k in self.mapping.key_columns]

    def merge_journals(self, unsent: frozenset[Operation] = frozenset()) -> int:
        """A dead run's journals (on this machine): into the warehouse snapshot, then gone."""
        merged = 0
        for file in journal_files(self.journal_dir):
            table = read_journal(file)
            if table is not None and self._meta is not None:
                self.write_accepted(table.select([*_key_parts(table), HASH_COLUMN, OP_COLUMN]))
                merged += table.num_rows
            file.unlink(missing_ok=True)
        return merged

    def apply_accepted(self, files: list[Path], *, complete: bool = False) -> int:
        """The commit: this run's journals are in the warehouse already (batch by batch);
        what it did not send (and the records given up) goes in now, in one transaction."""
        rest = self.con.execute(
            f"SELECT * EXCLUDE (seq) FROM work.accepted WHERE seq >= {UNSENT_SEQ}"
            " QUALIFY row_number() OVER (PARTITION BY "
            + ", ".join(_q(k) for k in self.mapping.key_columns)
            + " ORDER BY seq DESC) = 1"
        ).to_arrow_table()
        self.write_accepted(rest)
        merged = self._count("work.accepted")
        for file in files:
            file.unlink(missing_ok=True)
        self.con.execute("DELETE FROM work.accepted")
        return merged

    def open_journal(self, run_id: int) -> AckJournal:
        return WarehouseJournal(self.journal_dir, run_id, self.journal_schema(), self)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.session.close()

    def _scalar(self, query: str) -> int:
        rows = self.session.execute(query)
        return int(_text(rows[0][0])) if rows else 0


class WarehouseJournal(AckJournal):
    """The local journal, every batch at once; the warehouse snapshot, checkpoint by checkpoint.

    A warehouse transaction costs milliseconds where a journal append costs microseconds: the
    accepted batches are written into the warehouse in checkpoints of up to `CHECKPOINT_ROWS`
    records or `CHECKPOINT_S` seconds (and when the load ends). A run that dies between two
    leaves its records in the local journal, which the next run on this machine writes in
    first; a run on another machine resends them (at least once, as always).
    """

    CHECKPOINT_ROWS = 50_000
    CHECKPOINT_S = 2.0
    remote = True

    def __init__(
        self, directory: Path, run_id: int, schema: pa.Schema, store: WarehouseSnapshotStore
    ) -> None:
        super().__init__(directory, run_id, schema)
        self.store = store
        self._held: list[pa.RecordBatch] = []
        self._held_rows = 0
        self._since = time.monotonic()
        self._guard = threading.Lock()

    def append(self, records: pa.RecordBatch) -> None:
        with self._guard:
            super().append(records)
            selected = records.select(self.schema.names)
            self._held.append(selected.cast(self.schema))
            self._held_rows += selected.num_rows
            due = time.monotonic() - self._since >= self.CHECKPOINT_S
            if self._held_rows >= self.CHECKPOINT_ROWS or due:
                self._checkpoint()

    def _checkpoint(self) -> None:
        held, self._held, self._held_rows = self._held, [], 0
        self._since = time.monotonic()
        if held:
            self.store.write_accepted(pa.Table.from_batches(held, self.schema))

    def close(self) -> None:
        with self._guard:
            super().close()
            self._checkpoint()


def _key_parts(table: pa.Table) -> list[str]:
    return [n for n in table.column_names if is_key_part(n)]


def _named_keys(
    include: pa.Table | None, pending: Sequence[str], schema: pa.Schema, keys: Sequence[str]
) -> pa.Table | None:
    """A replay's keys and the pending records' keys (as sent: JSON text) as key parts typed
    like the model's key columns; a key whose text does not read back is left out (its record
    is then settled as no longer in the model, as before)."""
    types = [schema.field(k).type for k in keys]
    parts = [f"{KEY_PART_PREFIX}{i}" for i in range(len(keys))]
    tables: list[pa.Table] = []
    if include is not None:
        tables.append(include.rename_columns(parts).cast(pa.schema(zip(parts, types, strict=True))))
    values: list[list[Any]] = [[] for _ in keys]
    for text in pending:
        try:
            parsed = json.loads(text, parse_float=decimal.Decimal)
        except ValueError:
            continue
        members = (
            [parsed]
            if len(keys) == 1
            else [parsed.get(k) if isinstance(parsed, dict) else None for k in keys]
        )
        if any(m is None for m in members):
            continue
        for column, member in zip(values, members, strict=True):
            column.append(member)
    if values[0]:
        try:
            arrays = [pa.array(v).cast(t) for v, t in zip(values, types, strict=True)]
            tables.append(pa.table(arrays, names=parts))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            pass  # keys of a type JSON cannot bring back (bytes): settled as before
    if not tables:
        return None
    return pa.concat_tables(tables).group_by(parts).aggregate([])


def _latest_per_key(table: pa.Table, keys: int) -> pa.Table:
    """Key parts, hash and op; when a key comes twice, its last row (the latest word)."""
    columns = table.column_names
    ordered = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
    last = ordered.group_by(columns[:keys], use_threads=False).aggregate([("__row", "max")])
    if last.num_rows == table.num_rows:
        return table.select(columns[: keys + 2])
    rows: pa.Table = ordered.take(last.column("__row_max"))
    return rows.select(columns[: keys + 2])


def _text(value: object) -> str:
    """A value as the session returned it (MySQL's come as the server's bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def drop_warehouse_snapshot(session: WarehouseSession, mapping: str) -> None:
    """Forget what the destination has (a reset): the table and the mapping's row, whose
    fence goes with it, so a run still loading cannot commit into the next snapshot."""
    sql = wsql.dialect(session.dialect)
    schema = session.state_schema
    found = session.execute(sql.table_exists(schema, wsql.MAPPINGS))
    if not found or not int(_text(found[0][0])):
        return
    session.execute(
        f"DELETE FROM {sql.table(schema, wsql.MAPPINGS)} WHERE mapping = {sql.literal(mapping)}"
    )
    session.execute(f"DROP TABLE IF EXISTS {sql.table(schema, wsql.snapshot_table_name(mapping))}")


GRANTS = {
    "postgres": "CREATE on the database (or an existing schema {schema} the user owns),"
    " TEMPORARY on the database, and SELECT on the model's tables",
    "mariadb": "ALL (CREATE, DROP, ALTER, INDEX, SELECT, INSERT, UPDATE, DELETE) on {schema}.*"
    " and CREATE TEMPORARY TABLES on the model's database, with SELECT on its tables",
}
PROBE = "ebbtide_grant_probe"


def check_grants(session: WarehouseSession) -> str:
    """Try what the warehouse diff does (its schema, a table there, a temporary table),
    leaving nothing behind; returns what was checked, raises SourceError naming the grants."""
    sql = wsql.dialect(session.dialect)
    schema = session.state_schema
    probe = sql.table(schema, PROBE)
    steps = [
        sql.create_schema(schema),
        f"DROP TABLE IF EXISTS {probe}",
        f"CREATE TABLE {probe} (k INTEGER PRIMARY KEY, h BIGINT)",
        f"INSERT INTO {probe} VALUES (1, 2)",
        f"DELETE FROM {probe}",
        sql.drop_temp(PROBE),
        f"{sql.temp_table} {sql.quote(PROBE)} AS SELECT 1 AS k",
        sql.drop_temp(PROBE),
        f"DROP TABLE {probe}",
    ]
    try:
        for statement in steps:
            session.execute(statement)
    except SourceError as error:
        needed = GRANTS.get(session.dialect, GRANTS["mariadb"]).format(schema=schema)
        raise SourceError(
            f"the warehouse diff cannot keep its snapshots in schema {schema!r} of"
            f" {session.where}: {error}. It needs {needed}; or set `state_schema:` on the"
            " source to a schema where it has them."
        ) from None
    return f"schema {schema} in {session.where}: tables and temporary tables can be written"
