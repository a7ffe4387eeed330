"""The default snapshot store: one DuckDB file per mapping under the workspace's `.ebbtide/`.

Staging, hashing and the diff all run inside DuckDB on a scratch database of the run's own,
which spills to disk, so memory stays flat however large the model grows. The snapshot file is
attached only while it is read or written, never during the load: a run that stalls (or is
paused) mid-load does not lock out the run that takes its lease over.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from ebbtide.errors import EbbtideError, ModelError, SnapshotMismatchError
from ebbtide.mapping.binding import BoundMapping, bind
from ebbtide.mapping.compiler import CompiledMapping
from ebbtide.ports import (
    HASH_COLUMN,
    KEY_PART_PREFIX,
    OP_COLUMN,
    ChangeCounts,
    DuckDBFileSource,
    Operation,
    PendingFate,
    Source,
)
from ebbtide.snapshots import cursor
from ebbtide.snapshots import duckdb_sql as sql
from ebbtide.snapshots.failures import (
    damaged_snapshot,
    is_damage,
    is_lock_conflict,
    lock_holder,
)
from ebbtide.snapshots.in_place import InPlaceModel
from ebbtide.snapshots.journal import (
    JOURNAL_COLUMN,
    AckJournal,
    journal_files,
    read_journals,
)
from ebbtide.snapshots.outbound import OutboundQueries, record_limit
from ebbtide.snapshots.scratch import new_scratch
from ebbtide.snapshots.staging import chunked, remember_errors
from ebbtide.values import CursorSettings

SAMPLE_KEYS = 10
# DuckDB's memory for hashing, diffing and committing (it spills past it), and for rendering
# the records sent: a diff of 10M rows keeps under 700 MB, and a batch of 1 MiB records
# still renders.
MEMORY_LIMIT = "256MB"
RENDER_MEMORY_LIMIT = "512MB"
STAGE_CHUNK_ROWS = 1_000_000
# Order of precedence in work.accepted when one key appears twice: journals by run, then the
# changes this run does not send, then records given up. The highest wins.
UNSENT_SEQ = 1_000_000_000
GIVEN_UP_SEQ = UNSENT_SEQ + 1


def _literals(values: list[str]) -> str:
    return ", ".join(sql.literal(v) for v in values)


ATTACH_WAIT_S = 10.0


SNAPSHOTS_DIR = "snapshots"


def journal_dir(state_dir: Path, mapping: str) -> Path:
    """Where a mapping's acknowledgement journals wait to be merged into its snapshot."""
    return state_dir / SNAPSHOTS_DIR / f"{mapping}.journal"


def drop_snapshot(state_dir: Path, mapping: str) -> None:
    """Forget what a mapping's destination has: its snapshot and its unmerged journals."""
    base = state_dir / SNAPSHOTS_DIR
    for file in (base / f"{mapping}.duckdb", base / f"{mapping}.duckdb.wal"):
        file.unlink(missing_ok=True)
    shutil.rmtree(journal_dir(state_dir, mapping), ignore_errors=True)


class _KeptInMeta(dict[str, str]):
    """Entries read from the snapshot's meta; a new one is written there too."""

    def __init__(self, entries: dict[str, str], write: Callable[[dict[str, str]], None]) -> None:
        super().__init__(entries)
        self._write = write

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key, value)
        self._write({key: value})


class SnapshotBusyError(EbbtideError):
    """Another process has the mapping's snapshot open."""

    exit_code = 4


class DuckDBSnapshotStore:
    """Stage → check → diff → outbound → journal → commit, for one mapping."""

    def __init__(
        self,
        state_dir: Path,
        mapping: CompiledMapping,
        memory_limit: str = MEMORY_LIMIT,
        *,
        read_only: bool = False,
        max_record_bytes: int | None = None,
    ) -> None:
        self.mapping = mapping
        self._memory_limit = memory_limit
        self.read_only = read_only
        self.record_limit = record_limit(max_record_bytes)
        self._outbound: OutboundQueries | None = None
        base = state_dir / SNAPSHOTS_DIR
        base.mkdir(parents=True, exist_ok=True)
        self.journal_dir = journal_dir(state_dir, mapping.name)
        self._scratch = new_scratch(state_dir / "work", mapping.name)
        self._file = self._snapshot_file(base)
        self.con = duckdb.connect(
            ":memory:",
            config={
                "memory_limit": memory_limit,
                "temp_directory": str(self._scratch / "spill"),
                "preserve_insertion_order": False,
            },
        )
        with contextlib.suppress(duckdb.Error):
            # Text without an offset is read as UTC when a field takes a date and time
            # (without the ICU extension DuckDB reads it as UTC anyway).
            self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute(f"ATTACH {sql.literal(str(self._scratch / 'work.duckdb'))} AS work")
        self._attached = False
        self.stage_schema: pa.Schema | None = None
        self.bound: BoundMapping | None = None
        # Every row's key and hash. Streamed, work.stage holds them with the whole rows; hashed
        # in place, work.hashes does, and work.stage gets only the rows the diff names.
        self._hashes = "work.stage"
        self._in_place: InPlaceModel | None = None
        self.hashed_in_place = False  # whether this run hashed the model in its DuckDB file
        self._unchanged = False  # the model is the snapshot, key for key and hash for hash
        # How this run found its changes (RunResult.detection), and for a cursor mapping, the
        # greatest cursor it read: kept in the snapshot's meta once a complete run commits.
        self.detection = cursor.FULL
        self._greatest: cursor.Greatest | None = None
        self._cursor_state: cursor.CursorState | None = None  # as the snapshot kept it
        try:
            self.attach()
        except BaseException:
            self.close()  # a damaged or busy snapshot leaves no scratch folder behind
            raise

    def _snapshot_file(self, base: Path) -> Path:
        return base / f"{self.mapping.name}.duckdb"

    def attach(self) -> None:
        """Open the snapshot file (waiting a little for another process to let go of it)."""
        if self._attached or (self.read_only and not self._file.exists()):
            return
        mode = " (READ_ONLY)" if self.read_only else ""
        deadline = time.monotonic() + ATTACH_WAIT_S
        while True:
            try:
                self.con.execute(f"ATTACH {sql.literal(str(self._file))} AS snap{mode}")
                break
            except duckdb.Error as exc:
                if is_damage(exc):
                    raise damaged_snapshot(self.mapping.name, self._file, exc) from exc
                if not is_lock_conflict(exc):
                    raise
                if time.monotonic() > deadline:
                    raise SnapshotBusyError(
                        f"the snapshot of mapping {self.mapping.name!r} is in use by another"
                        f" process{lock_holder(exc)}: another sync, plan or reset of it, or"
                        " a tool that opened the file; run the command again once it is done"
                    ) from exc
                time.sleep(0.2)
        self.con.execute("USE snap")
        self._attached = True
        if not self.read_only:
            self.con.execute(
                "CREATE TABLE IF NOT EXISTS ebbtide_meta (key VARCHAR PRIMARY KEY, value VARCHAR)"
            )

    def release(self) -> None:
        """Let go of the snapshot file while records are in flight."""
        if self._attached:
            self.con.execute("USE memory")
            self.con.execute("DETACH snap")
            self._attached = False

    # -- extract -------------------------------------------------------------------------

    def extract(
        self,
        source: Source,
        query: str,
        include: pa.Table | None = None,
        pending: Sequence[str] = (),
    ) -> int:
        """Read the model from the source and stage it; returns how many rows it has.

        `include`, `pending`: keys a replay resends, and of records that failed before; the
        local diff stages every row anyway, unless the mapping reads past a cursor."""
        settings = self.mapping.cursor
        if settings is None:
            return self._extract_all(source, query)
        self._greatest = cursor.Greatest(settings.column)
        state = self._cursor_state = self._kept_cursor(settings)
        why = "full: a replay" if include is not None else self._why_full(settings, state)
        if why is None:
            needed = self._extract_past_cursor(source, query, settings, state, pending)
            if not needed:
                self.detection = cursor.CURSOR
                return self._count(self._hashes)
            why = f"full: {needed} record(s) to add or retry are older than the cursor"
            self._greatest = cursor.Greatest(settings.column)
            self._forget_past_cursor()
        self.detection = why
        return self._extract_all(source, query)

    def _extract_all(self, source: Source, query: str) -> int:
        """Every row of the model, staged (or hashed where it lies) with its hash."""
        self._hashes = "work.stage"
        model = self._in_place_model(source, query)
        if model is None:
            return self.stage(source.read(query))
        hashed = self._hash_in_place(model, bind(self.mapping, model.schema))
        if self._greatest is not None:
            self._greatest.add(model.greatest(self._greatest.column))
        return hashed

    def _in_place_model(self, source: Source, query: str) -> InPlaceModel | None:
        """A DuckDB model attached where it lies, when its mapped columns hash there as they
        would streamed; None when it is to be streamed."""
        if not isinstance(source, DuckDBFileSource):
            return None
        source.close()  # see DuckDBFileSource.close
        model = InPlaceModel.attach(self.con, source.duckdb_file(), query, self._trips())
        if model is not None and not model.can_read(bind(self.mapping, model.schema).columns):
            model.detach()
            return None
        return model

    def _kept_cursor(self, settings: CursorSettings) -> cursor.CursorState:
        """The cursor state the snapshot keeps (a fresh one when there is no snapshot yet)."""
        kept = self.meta().get(cursor.META_KEY) if self._snapshot_exists() else None
        return cursor.CursorState.load(kept, settings.column)

    def _why_full(self, settings: CursorSettings, state: cursor.CursorState) -> str | None:
        if not self._snapshot_exists():
            return "full: no snapshot yet"
        return cursor.why_full(settings, state, datetime.now(UTC))

    def _extract_past_cursor(
        self,
        source: Source,
        query: str,
        settings: CursorSettings,
        state: cursor.CursorState,
        pending: Sequence[str],
    ) -> int:
        """Every key, and the whole rows past the cursor, into work.hashes (each key with its
        row's hash, or the snapshot's when the row was not read); returns how many records
        the sync needs whole but did not read (so must read everything)."""
        past = cursor.past_filter(settings.column, cursor.since_literal(settings, state))
        keys = self.mapping.key_columns
        model = self._in_place_model(source, query)
        listed = ", ".join(f"k.{sql.quote(k)}" for k in keys)
        if model is not None:  # one scan: a row's hash is computed only past the cursor
            self._past_cursor_in_place(model, past)
            read = f"""SELECT {listed}, coalesce(k.{HASH_COLUMN}, n.__row_hash) AS {HASH_COLUMN},
                k.{cursor.PAST_COLUMN} FROM ({self._rows_in(model, past)}) k"""
        else:
            every_key = source.read(cursor.key_query(query, keys))
            self._load_in_chunks(every_key, "work.keys", "SELECT *")
            self.stage(source.read(cursor.past_query(query, past)))  # tracks the greatest
            read = f"""SELECT {listed}, coalesce(p.{HASH_COLUMN}, n.__row_hash) AS {HASH_COLUMN},
                p.{HASH_COLUMN} IS NOT NULL AS {cursor.PAST_COLUMN} FROM work.main.keys k
                LEFT JOIN work.main.stage p ON {sql.key_join("k", "p", keys)}"""
        self._hashes = "work.main.hashes"
        scope = model.scope() if model is not None else contextlib.nullcontext()
        with scope:
            self.con.execute(
                f"CREATE OR REPLACE TABLE {self._hashes} AS {read}"
                f" LEFT JOIN snap.main.snapshot n ON {sql.key_join('k', 'n', keys)}"
            )
        unread = self._count(f"{self._hashes} WHERE {HASH_COLUMN} IS NULL")
        if pending:
            self.con.register("pending_keys", pa.table({"k": pa.array(pending, pa.string())}))
            try:
                unread += self._count(
                    f"{self._hashes} k WHERE NOT {cursor.PAST_COLUMN}"
                    f" AND {self._key_json('k')} IN (SELECT k FROM pending_keys)"
                )
            finally:
                self.con.unregister("pending_keys")
        return unread

    def _past_cursor_in_place(self, model: InPlaceModel, past: str) -> None:
        """A DuckDB model read past its cursor where it lies: its schema, and the greatest
        cursor past the last one."""
        assert self._greatest is not None
        self.bound = bind(self.mapping, model.schema)
        self._in_place, self.hashed_in_place = model, True
        with model.scope():
            rows = self._rows_in(model)
            self.stage_schema = self.con.execute(f"{rows} LIMIT 0").to_arrow_table().schema
        self._greatest.add(model.greatest(self._greatest.column, where=past))

    def _memory(self, limit: str) -> None:
        """Rendering and copying whole rows out needs room that keys and hashes do not."""
        self.con.execute(f"SET memory_limit = '{limit}'")

    def _trips(self) -> MutableMapping[str, str]:
        """How the Arrow trip types columns, kept in the snapshot's meta (see InPlaceModel)."""
        if self.read_only or not self._attached:
            return {}
        kept = {k: v for k, v in self.meta().items() if k.startswith("arrow_trip:")}
        return _KeptInMeta(kept, self._set_meta)

    def _forget_past_cursor(self) -> None:
        """Before the whole model is read after all: the cursor read lets go of it."""
        model, self._in_place = self._in_place, None
        if model is not None:
            model.detach()
        self.hashed_in_place = False
        self._hashes = "work.stage"

    def _load_in_chunks(self, rows: pa.RecordBatchReader, table: str, select: str) -> None:
        """`select` over the source's rows (as `model_rows`) into a new `table`.

        DuckDB holds a statement's whole Arrow input until the statement ends, outside its
        memory limit: one statement per chunk keeps memory flat as the model grows."""
        failure: list[EbbtideError] = []
        guarded = pa.RecordBatchReader.from_batches(rows.schema, remember_errors(rows, failure))
        for number, chunk in enumerate(chunked(guarded, STAGE_CHUNK_ROWS)):
            verb = f"CREATE OR REPLACE TABLE {table} AS" if number == 0 else f"INSERT INTO {table}"
            self.con.register("model_rows", chunk)
            try:
                self.con.execute(f"{verb} {select} FROM model_rows")
            except duckdb.Error:
                if failure:  # the source failed mid-stream: its own error says why
                    raise failure[0] from None
                raise
            finally:
                self.con.unregister("model_rows")

    def _hash_in_place(self, model: InPlaceModel, bound: BoundMapping) -> int:
        """Every row's key and hash into work.hashes, computed where the model lies."""
        self.bound, self._in_place, self._hashes = bound, model, "work.main.hashes"
        self.hashed_in_place = True
        rows = self._rows_in(model)
        keys = ", ".join(sql.quote(k) for k in self.mapping.key_columns)
        with model.scope():
            self.stage_schema = self.con.execute(f"{rows} LIMIT 0").to_arrow_table().schema
            self.con.execute(
                f"CREATE OR REPLACE TABLE {self._hashes} AS"
                f" SELECT {keys}, {HASH_COLUMN} FROM ({rows}) model_rows"
            )
        return self._count(self._hashes)

    def _stage_changed_rows(self) -> None:
        """Hashed in place: the rows of the changes, into work.stage; then the model's file
        is let go of, before anything is sent."""
        model, self._in_place = self._in_place, None
        if model is None:
            return
        rows = self._rows_in(model)
        nothing = "" if self._count("work.main.changes") else " LIMIT 0"  # not even one scan
        copy = (
            f"CREATE OR REPLACE TABLE work.main.stage AS SELECT s.* FROM ({rows}) s"
            " SEMI JOIN work.main.changes c"
            f" ON {sql.key_join('s', 'c', self.mapping.key_columns)}{nothing}"
        )
        try:
            with model.scope():
                try:
                    self.con.execute(copy)
                except duckdb.OutOfMemoryException:
                    # Whole rows of a megabyte or more need room that keys and hashes do not.
                    self._memory(RENDER_MEMORY_LIMIT)
                    self.con.execute(copy)
        finally:
            model.detach()

    def _rows_in(self, model: InPlaceModel, past: str = "") -> str:
        """The mapped columns of every row of `model`, with their hashes (SQL, run in scope).
        With `past` (a cursor's filter), the hash only of the rows it keeps, and whether it
        kept each row."""
        assert self.bound is not None
        return model.rows(self.bound.columns, sql.hash_expression(self.bound), flag=past)

    @contextlib.contextmanager
    def _whole_rows(self) -> Iterator[str]:
        """Every row of the model with all its mapped columns, as a relation `s` (for samples)."""
        model = self._in_place
        if model is None:
            yield "work.stage s"
            return
        with model.scope():
            yield f"({self._rows_in(model)}) s"

    def stage(self, rows: pa.RecordBatchReader) -> int:
        """Copy the mapped columns of the model into the scratch database, with row hashes."""
        if self._greatest is not None:  # a cursor mapping's: the greatest cursor read
            rows = cursor.tracking(rows, self._greatest)
        self.bound = bound = bind(self.mapping, rows.schema)
        return self._stage(rows, sql.hash_expression(bound))

    def _stage(self, rows: pa.RecordBatchReader, row_hash: str) -> int:
        assert self.bound is not None
        columns = ", ".join(sql.quote(c) for c in self.bound.columns)
        self._load_in_chunks(rows, "work.stage", f"SELECT {columns}, {row_hash} AS {HASH_COLUMN}")
        self.stage_schema = (
            self.con.execute("SELECT * FROM work.stage LIMIT 0").to_arrow_table().schema
        )
        return self._count("work.stage")

    def check_keys(self) -> None:
        """Null, non-finite or duplicate primary keys fail the run before anything is sent.

        When the staged keys and hashes are the snapshot's exactly, there is nothing to check
        (the snapshot's keys were, before they went in) and nothing to diff."""
        self._unchanged = self._same_as_snapshot()
        if self._unchanged:
            return
        self._check_null_keys()
        self._check_non_finite_keys()
        self._check_duplicate_keys()

    def _same_as_snapshot(self) -> bool:
        """Whether the model's (key, hash) pairs are the snapshot's, compared as a count and a
        sum of 64-bit hashes of the pairs: a difference goes unnoticed only if those hashes
        collide, as likely as two rows' hashes colliding, which the diff already trusts."""
        if not self._snapshot_exists() or not self._snapshot_keyed_as_stage():
            return False
        keys = ", ".join(sql.quote(k) for k in self.mapping.key_columns)

        def fingerprint(relation: str, row_hash: str) -> tuple[object, ...] | None:
            return self.con.execute(
                f"SELECT count(*), sum(hash({keys}, {row_hash})::HUGEINT) FROM {relation}"
            ).fetchone()

        return fingerprint(self._hashes, HASH_COLUMN) == fingerprint("snapshot", "__row_hash")

    def _snapshot_keyed_as_stage(self) -> bool:
        meta = self.meta()
        key: list[str] = json.loads(meta.get("primary_key", "[]"))
        key_types: dict[str, str] = json.loads(meta.get("key_types", "{}"))
        return key == list(self.mapping.key_columns) and key_types == self._stage_key_types()

    def _stage_key_types(self) -> dict[str, str]:
        assert self.stage_schema is not None, "stage() comes first"
        return {k: str(self.stage_schema.field(k).type) for k in self.mapping.key_columns}

    def _check_non_finite_keys(self) -> None:
        """NaN and infinities have no JSON form: such a key could never be acknowledged."""
        test = sql.non_finite_keys(self.mapping, "s", self._key_types())
        found = self._count(f"{self._hashes} s WHERE {test}")
        if not found:
            return
        parts = ", ".join(
            f"{sql.quote(k)} := CAST(s.{sql.quote(k)} AS VARCHAR)" for k in self.mapping.key_columns
        )
        samples = self._scalars(
            f"SELECT to_json(struct_pack({parts}))::VARCHAR FROM {self._hashes} s WHERE {test}"
            f" LIMIT {SAMPLE_KEYS}"
        )
        raise ModelError(
            f"model {self.mapping.model!r}: {found} row(s) have a primary key that is NaN or"
            f" infinite ({', '.join(self.mapping.key_columns)}), which JSON cannot carry;"
            " nothing was sent.",
            samples,
        )

    def _check_null_keys(self) -> None:
        keys = self.mapping.key_columns
        null_test = " OR ".join(f"{sql.quote(k)} IS NULL" for k in keys)
        nulls = self._count(f"{self._hashes} WHERE {null_test}")
        if nulls:
            with self._whole_rows() as rows:
                samples = self._scalars(
                    f"SELECT to_json(struct_pack({self._struct_parts('s')}))::VARCHAR"
                    f" FROM {rows} WHERE {null_test} LIMIT {SAMPLE_KEYS}"
                )
            raise ModelError(
                f"model {self.mapping.model!r}: {nulls} row(s) have a null primary key"
                f" ({', '.join(keys)}); nothing was sent.",
                samples,
            )

    def _check_duplicate_keys(self) -> None:
        keys = self.mapping.key_columns
        key_list = ", ".join(sql.quote(k) for k in keys)
        dupes = (
            f"SELECT {key_list}, count(*) AS n FROM {self._hashes} GROUP BY ALL HAVING count(*) > 1"
        )
        duplicated = self._count(f"({dupes})")
        if duplicated:
            samples = self._scalars(
                f"SELECT {self._key_json('d')} || ' (' || n || ' rows)'"
                f" FROM ({dupes}) d ORDER BY n DESC LIMIT {SAMPLE_KEYS}"
            )
            raise ModelError(
                f"model {self.mapping.model!r}: {duplicated} primary key value(s) appear more"
                f" than once ({', '.join(keys)}); nothing was sent.",
                samples,
            )

    # -- diff ----------------------------------------------------------------------------

    def diff(self, *, dry_run: bool = False) -> ChangeCounts:
        """added / updated / deleted by key and row hash, against the snapshot.

        A dry run (for `sync plan`) writes nothing outside the scratch database, not even the
        first, empty snapshot.
        """
        snapshot = self._ensure_snapshot(dry_run)
        keys = self.mapping.key_columns
        nothing = " LIMIT 0" if self._unchanged else ""  # see check_keys
        coalesced = ", ".join(
            f"coalesce(s.{sql.quote(k)}, n.{sql.quote(k)}) AS {sql.quote(k)}" for k in keys
        )
        self.con.execute(
            f"""CREATE OR REPLACE TABLE work.changes AS
            SELECT CASE WHEN n.__row_hash IS NULL THEN 'added'
                        WHEN s.{HASH_COLUMN} IS NULL THEN 'deleted'
                        ELSE 'updated' END AS {OP_COLUMN},
                   {coalesced}, s.{HASH_COLUMN}
            FROM {self._hashes} s FULL OUTER JOIN {snapshot} n ON {sql.key_join("s", "n", keys)}
            WHERE s.{HASH_COLUMN} IS DISTINCT FROM n.__row_hash{nothing}"""
        )
        self._stage_changed_rows()
        counts = dict(
            self.con.execute(
                f"SELECT {OP_COLUMN}, count(*) FROM work.changes GROUP BY ALL"
            ).fetchall()
        )
        return ChangeCounts(**{op: int(n) for op, n in counts.items()})

    def replay(self, sent: pa.Table, *, latest: bool) -> tuple[ChangeCounts, int]:
        """Make a past run's records this run's changes, instead of a diff.

        As sent, each record keeps the operation and row hash it had, so the snapshot ends up
        as the destination does, and the next sync sends what changed since. With `latest`,
        the keys are sent with the model's current rows (added where the snapshot lacks them);
        keys no longer in the model are skipped. Returns the changes and the keys skipped.
        """
        snapshot = self._ensure_snapshot(dry_run=False)
        keys = self.mapping.key_columns
        renamed = ", ".join(
            f"{sql.quote(f'{KEY_PART_PREFIX}{i}')} AS {sql.quote(k)}" for i, k in enumerate(keys)
        )
        self.con.register("replayed", sent)
        try:
            replayed = self._count(f"(SELECT DISTINCT {renamed} FROM replayed)")
            if latest:
                select = f"""SELECT CASE WHEN n.__row_hash IS NULL THEN 'added' ELSE 'updated'
                                 END AS {OP_COLUMN}, {", ".join(f"s.{sql.quote(k)}" for k in keys)},
                                 s.{HASH_COLUMN}
                    FROM (SELECT DISTINCT {renamed} FROM replayed) r
                    JOIN {self._hashes} s ON {sql.key_join("r", "s", keys)}
                    LEFT JOIN {snapshot} n ON {sql.key_join("s", "n", keys)}"""
            else:
                select = f"SELECT {OP_COLUMN}, {renamed}, {HASH_COLUMN} FROM replayed"
            self.con.execute(f"CREATE OR REPLACE TABLE work.changes AS {select}")
        finally:
            self.con.unregister("replayed")
        self._stage_changed_rows()
        counts = dict(
            self.con.execute(
                f"SELECT {OP_COLUMN}, count(*) FROM work.changes GROUP BY ALL"
            ).fetchall()
        )
        changes = ChangeCounts(**{op: int(n) for op, n in counts.items()})
        return changes, replayed - changes.total if latest else 0

    def snapshot_size(self) -> int:
        """How many records the destination has, as far as the snapshot knows."""
        return self._count("snapshot") if self._snapshot_exists() else 0

    def outbound(self, operations: frozenset[Operation], batch_size: int) -> pa.RecordBatchReader:
        """The changed rows to send, in batches of `batch_size` (and of bounded bytes)."""
        assert self.bound is not None, "stage() comes first"
        if self._outbound is None:
            self._outbound = OutboundQueries(
                self.con, self.bound, self._key_types(), self.record_limit
            )
            if self._outbound.has_large_rows():
                self._memory(RENDER_MEMORY_LIMIT)
        return self._outbound.reader(operations, batch_size)

    def sample_changes(
        self, operations: frozenset[Operation], limit: int
    ) -> list[dict[str, object]]:
        """A few records per operation, as they would be sent (for `sync plan`)."""
        records: list[dict[str, object]] = []
        for op in sorted(operations):
            reader = self.outbound(frozenset({Operation(op)}), limit)
            batch = next(iter(reader), None)
            if batch is not None:
                records += [json.loads(str(r)) for r in batch.column("__record").to_pylist()]
        return records

    # -- commit --------------------------------------------------------------------------

    def journal_schema(self) -> pa.Schema:
        assert self.stage_schema is not None, "stage() comes first"
        parts = [
            pa.field(f"{KEY_PART_PREFIX}{i}", self.stage_schema.field(k).type)
            for i, k in enumerate(self.mapping.key_columns)
        ]
        return pa.schema(
            [*parts, pa.field(HASH_COLUMN, pa.uint64()), pa.field(OP_COLUMN, pa.string())]
        )

    def open_journal(self, run_id: int) -> AckJournal:
        return AckJournal(self.journal_dir, run_id, self.journal_schema())

    def merge_journals(self, unsent: frozenset[Operation] = frozenset()) -> int:
        """Fold acknowledged records (and changes the mode does not send) into the snapshot."""
        files = self.collect_accepted(unsent)
        return self.apply_accepted(files)

    def collect_accepted(self, unsent: frozenset[Operation] = frozenset()) -> list[Path]:
        """Gather the journals (and the changes the mode does not send) into work.accepted."""
        self._memory(self._memory_limit)
        self.attach()
        files = journal_files(self.journal_dir)
        if not self._snapshot_exists():
            files = []  # journals are only written after diff() created the snapshot
        key_cols = [sql.quote(k) for k in self.mapping.key_columns]
        renamed = ", ".join(
            f"{sql.quote(f'{KEY_PART_PREFIX}{i}')} AS {k}" for i, k in enumerate(key_cols)
        )
        if files:
            self.con.register("journal_rows", read_journals(files, self._snapshot_journal_schema()))
            try:
                self.con.execute(
                    f"CREATE OR REPLACE TABLE work.accepted AS SELECT {renamed}, {HASH_COLUMN},"
                    f" {OP_COLUMN}, {JOURNAL_COLUMN} AS seq FROM journal_rows"
                )
            finally:
                self.con.unregister("journal_rows")
        else:  # typed without an Arrow scan, which would import pyarrow.dataset (~20 ms)
            self._no_accepted_yet()
        if unsent and self._has("work", "changes"):
            self._accept_changes(f"{OP_COLUMN} IN ({_literals(sorted(unsent))})", seq=UNSENT_SEQ)
        return files

    def _no_accepted_yet(self) -> None:
        """An empty work.accepted, its keys typed as the staged keys. Before anything is
        staged (a run's first merge) nothing is accepted into it, so its key types do not
        matter; the snapshot's may be another key's, which a changed mapping is refused for
        later, with a message."""
        quoted = [sql.quote(k) for k in self.mapping.key_columns]
        staged = self.stage_schema is not None
        keys = ", ".join(quoted if staged else [f"NULL::VARCHAR AS {k}" for k in quoted])
        self.con.execute(
            f"CREATE OR REPLACE TABLE work.accepted AS SELECT {keys}, NULL::UBIGINT AS"
            f" {HASH_COLUMN}, NULL::VARCHAR AS {OP_COLUMN}, NULL::INTEGER AS seq"
            + (f" FROM {self._hashes} LIMIT 0" if staged else " LIMIT 0")
        )

    def pending_fates(
        self, keys: list[str], operations_sent: frozenset[Operation]
    ) -> dict[str, PendingFate]:
        """For records that failed before: sent now? accepted now? still in the model?"""
        if not keys:
            return {}
        self.con.register("pending_keys", pa.table({"k": pa.array(keys, pa.string())}))
        sent = f"{OP_COLUMN} IN ({_literals(sorted(operations_sent))})"
        try:
            rows = self.con.execute(
                f"""SELECT p.k,
                    p.k IN (SELECT {self._key_json("c")} FROM work.changes c
                            WHERE {sent}),
                    p.k IN (SELECT {self._key_json("a")} FROM work.accepted a
                            WHERE seq < {UNSENT_SEQ}),
                    p.k IN (SELECT {self._key_json("s")} FROM {self._hashes} s)
                FROM pending_keys p"""
            ).fetchall()
        finally:
            self.con.unregister("pending_keys")
        return {k: PendingFate(bool(s), bool(a), bool(m)) for k, s, a, m in rows}

    def holds(self, keys: list[str]) -> set[str] | None:
        """Which of these keys (as sent: canonical JSON text) the snapshot holds; None when
        there is no snapshot (never synced, or reset since)."""
        if not self._snapshot_exists():
            return None
        columns = self.con.execute("SELECT * FROM snapshot LIMIT 0").to_arrow_table().schema
        key = sql.key_json(
            self.mapping, "s", [columns.field(k).type for k in self.mapping.key_columns]
        )
        self.con.register("wanted_keys", pa.table({"k": pa.array(keys, pa.string())}))
        try:
            rows = self.con.execute(
                f"SELECT {key} FROM snapshot s WHERE {key} IN (SELECT k FROM wanted_keys)"
            ).fetchall()
        finally:
            self.con.unregister("wanted_keys")
        return {str(r[0]) for r in rows}

    def give_up(self, keys: list[str]) -> None:
        """Expired records: move the snapshot to their current row so they stop retrying."""
        if not keys:
            return
        self.con.register("expired_keys", pa.table({"k": pa.array(keys, pa.string())}))
        try:
            self._accept_changes(
                f"{self._key_json('c')} IN (SELECT k FROM expired_keys)",
                seq=GIVEN_UP_SEQ,
            )
        finally:
            self.con.unregister("expired_keys")

    def apply_accepted(self, files: list[Path], *, complete: bool = False) -> int:
        """One transaction: the snapshot takes in work.accepted (and, after a `complete` run
        of a cursor mapping, the cursor it read); then the journals go."""
        merged = self._count("work.accepted")
        cursor_meta = self._cursor_after() if complete else None
        if not merged and not files and cursor_meta is None:
            return 0
        self.attach()
        keys = self.mapping.key_columns
        key_list = ", ".join(sql.quote(k) for k in keys)
        sources = self._count("(SELECT DISTINCT seq FROM work.accepted)")
        # One transaction may write one database only: work.accepted was built before it.
        self.con.execute("BEGIN")
        try:
            self.con.execute(
                f"DELETE FROM snapshot n USING work.accepted a WHERE {sql.key_join('n', 'a', keys)}"
            )
            # Keys are unique within one source of acceptances; only several need the
            # (costly) pick of the latest.
            latest = (
                f" QUALIFY row_number() OVER (PARTITION BY {key_list} ORDER BY seq DESC) = 1"
                if sources > 1
                else ""
            )
            self.con.execute(
                f"INSERT INTO snapshot SELECT {key_list}, {HASH_COLUMN} FROM work.accepted"
                f" WHERE {OP_COLUMN} <> 'deleted'{latest}"
            )
            if cursor_meta is not None:
                self._set_meta({cursor.META_KEY: cursor_meta})
            self.con.execute("COMMIT")
        except duckdb.Error:
            self.con.execute("ROLLBACK")
            raise
        for file in files:
            file.unlink(missing_ok=True)  # a run that took over may have merged it already
        self.con.execute("DELETE FROM work.accepted")
        return merged

    def _cursor_after(self) -> str | None:
        """The cursor state to keep once this run commits; None when there is none to keep."""
        kept, greatest = self._cursor_state, self._greatest
        if kept is None or greatest is None or not self._attached:
            return None
        return kept.after(self.detection, greatest.value, datetime.now(UTC)).dump()

    def _accept_changes(self, where: str, seq: int) -> None:
        key_list = ", ".join(f"c.{sql.quote(k)}" for k in self.mapping.key_columns)
        self.con.execute(
            f"INSERT INTO work.accepted SELECT {key_list}, c.{HASH_COLUMN}, c.{OP_COLUMN}, {seq}"
            f" FROM work.changes c WHERE {where}"
        )

    def close(self) -> None:
        try:
            self.con.close()
        finally:  # a full disk can fail the close: the scratch space goes all the same
            shutil.rmtree(self._scratch, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------

    def _snapshot_exists(self) -> bool:
        if not self._attached:
            return False
        return bool(
            self._count(
                "information_schema.tables WHERE table_catalog = current_database()"
                " AND table_schema = 'main' AND table_name = 'snapshot'"
            )
        )

    def _ensure_snapshot(self, dry_run: bool) -> str:
        """The snapshot table to diff against; created on first use. Refuses another key."""
        key_types = self._stage_key_types()
        if self._snapshot_exists():
            self._check_key(key_types)
            return "snapshot"
        table = "work.empty_snapshot" if dry_run else "snapshot"
        columns = ", ".join(
            f"{sql.quote(k)} {self._duck_type(self._hashes, k)}" for k in self.mapping.key_columns
        )
        self.con.execute(f"CREATE OR REPLACE TABLE {table} ({columns}, __row_hash UBIGINT)")
        if not dry_run:
            self._set_meta(
                {
                    "primary_key": json.dumps(list(self.mapping.key_columns)),
                    "key_types": json.dumps(key_types),
                    "hash_version": sql.HASH_VERSION,
                    **self._identity(),
                }
            )
        return table

    def _identity(self) -> dict[str, str]:
        """What the snapshot stands for: the records of this model in this destination."""
        return {"model": self.mapping.model, "destination": self.mapping.destination}

    def _has(self, schema: str, table: str) -> bool:
        return bool(
            self._count(
                f"information_schema.tables WHERE table_catalog = {sql.literal(schema)}"
                f" AND table_name = {sql.literal(table)}"
            )
        )

    def _snapshot_journal_schema(self) -> pa.Schema:
        table = self.con.execute(
            "SELECT * EXCLUDE (__row_hash) FROM snapshot LIMIT 0"
        ).to_arrow_table()
        parts = [pa.field(f"{KEY_PART_PREFIX}{i}", f.type) for i, f in enumerate(table.schema)]
        return pa.schema(
            [*parts, pa.field(HASH_COLUMN, pa.uint64()), pa.field(OP_COLUMN, pa.string())]
        )

    def _check_key(self, key_types: dict[str, str]) -> None:
        meta = self.meta()
        stored_key = json.loads(meta.get("primary_key", "[]"))
        if stored_key != list(self.mapping.key_columns):
            raise SnapshotMismatchError(
                f"mapping {self.mapping.name!r}: the snapshot was taken with primary key"
                f" {', '.join(stored_key)}, the model now has"
                f" {', '.join(self.mapping.key_columns)};"
                " syncing would delete and re-add every record. Run"
                f" `ebbtide reset {self.mapping.name}` to sync it anew."
            )
        for what, now in self._identity().items():
            before = meta.get(what)
            if before is None:  # a snapshot from before ebbtide recorded it
                if not self.read_only:
                    self._set_meta({what: now})
            elif before != now:
                raise SnapshotMismatchError(
                    f"mapping {self.mapping.name!r} now syncs {what} {now!r}, but its snapshot"
                    f" holds what was sent from {what} {before!r}; diffing against it would"
                    f" send the wrong changes. Run `ebbtide reset {self.mapping.name}` to sync"
                    " it anew."
                )
        stored_types = json.loads(meta.get("key_types", "{}"))
        if stored_types != key_types:
            raise SnapshotMismatchError(
                f"mapping {self.mapping.name!r}: the primary key's type changed from {stored_types}"
                f" to {key_types}. Run `ebbtide reset {self.mapping.name}` to sync it anew."
            )

    def meta(self) -> dict[str, str]:
        return dict(self.con.execute("SELECT key, value FROM ebbtide_meta").fetchall())

    def _set_meta(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self.con.execute("INSERT OR REPLACE INTO ebbtide_meta VALUES (?, ?)", [key, value])

    def _duck_type(self, table: str, column: str) -> str:
        rows = self.con.execute(f"DESCRIBE SELECT {sql.quote(column)} FROM {table}").fetchall()
        return str(rows[0][1])

    def _struct_parts(self, table: str) -> str:
        """The key and the first few mapped columns: a null key alone identifies nothing."""
        columns = self.bound.columns if self.bound else ()
        shown = list(dict.fromkeys([*self.mapping.key_columns, *columns]))[:4]
        return ", ".join(f"{sql.quote(c)} := {table}.{sql.quote(c)}" for c in shown)

    def _key_types(self) -> list[pa.DataType]:
        assert self.stage_schema is not None, "stage() comes first"
        return [self.stage_schema.field(k).type for k in self.mapping.key_columns]

    def _key_json(self, table: str) -> str:
        """The key as it is sent, so keys kept with failures compare with the model's."""
        return sql.key_json(self.mapping, table, self._key_types())

    def _count(self, relation: str) -> int:
        row = self.con.execute(f"SELECT count(*) FROM {relation}").fetchone()
        return int(row[0]) if row else 0

    def _scalars(self, query: str) -> list[str]:
        return [str(r[0]) for r in self.con.execute(query).fetchall()]
