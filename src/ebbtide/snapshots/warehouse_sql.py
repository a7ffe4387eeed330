"""The SQL of the diff in the warehouse (`diff: warehouse`), one dialect per database.

A dialect names three things the diff needs from a database: how a value is rendered as
canonical text (so that `1.0` and `1.00`, or a session's time zone, never look like a change),
how that text becomes a stable 63-bit row hash, and how keys compare byte for byte. The rest
of the SQL is shared. PostgreSQL and MariaDB/MySQL run against real servers in the tests; the
other dialects are generated SQL only (see the README).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from ebbtide.ports import ColumnKind

HASH_VERSION = "warehouse-2"
MAX_IDENTIFIER = 60  # PostgreSQL allows 63 bytes, MySQL 64
STAGE = "ebbtide_stage"
CHANGES = "ebbtide_changes"
INCLUDE = "ebbtide_include"
ACCEPTED = "ebbtide_accepted"
MAPPINGS = "ebbtide_mappings"
HASH = "ebbtide_hash"
OLD_HASH = "ebbtide_old_hash"
OP = "ebbtide_op"
PRESENT = "present"  # a key asked for by name (a replay) whose row did not change


@dataclass(frozen=True)
class Column:
    name: str
    kind: ColumnKind


class Dialect:
    """What differs between warehouses; subclasses override the few methods that do."""

    name = "sql"
    full_outer_join = True
    temp_table = "CREATE TEMPORARY TABLE"
    # Stage into a table of ebbtide's schema rather than a temporary one, where only that lets
    # the database read the model in parallel (PostgreSQL plans no parallel query that writes
    # a temporary table). None: a temporary table.
    stage_table: str | None = None
    parallel_stage = False
    scratch_table = "CREATE TABLE"

    @property
    def stage_ref(self) -> str:
        return self.stage_table or self.quote(STAGE)

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def literal(self, text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    def table(self, schema: str, name: str) -> str:
        return f"{self.quote(schema)}.{self.quote(name)}"

    # -- values as canonical text --------------------------------------------------------

    def render(self, ref: str, kind: ColumnKind) -> str:
        """`ref` as canonical text; NULL stays NULL."""
        return f"CAST({ref} AS VARCHAR)"

    def quote_nullable(self, text: str) -> str:
        """A value's text quoted, NULL as the bare word: `''` and NULL never meet."""
        return f"COALESCE('''' || REPLACE({text}, '''', '''''') || '''', 'NULL')"

    def concat(self, parts: Sequence[str]) -> str:
        return " || ',' || ".join(parts)

    def hash63(self, text: str) -> str:
        """A stable, non-negative 63-bit integer from text (the first 60 bits of its MD5)."""
        raise NotImplementedError

    def row_hash(self, signature: str, columns: Sequence[Column], table: str) -> str:
        """The hash of a row's mapped columns, seeded with the mapping's signature (a change
        of mapping changes every hash, as the local diff's does)."""
        parts = [self.literal(signature)] + [
            self.quote_nullable(self.render(f"{table}.{self.quote(c.name)}", c.kind))
            for c in columns
        ]
        return self.hash63(self.concat(parts))

    # -- keys ----------------------------------------------------------------------------

    def key(self, ref: str, kind: ColumnKind) -> str:
        """A key column as stored and compared: byte for byte, never case-insensitively."""
        return ref

    def key_type(self, kind: ColumnKind) -> str | None:
        """The column type a key is kept as, when it is not the model's own."""
        return None

    def distinct(self, left: str, right: str) -> str:
        return f"{left} IS DISTINCT FROM {right}"

    # -- transactions --------------------------------------------------------------------

    def begin_consistent(self) -> list[str]:
        """One consistent view of the model for every statement until COMMIT."""
        return ["BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ"]

    def begin(self) -> list[str]:
        return ["BEGIN"]

    def commit(self) -> list[str]:
        return ["COMMIT"]

    def rollback(self) -> list[str]:
        return ["ROLLBACK"]

    def lock_row(self) -> str:
        return " FOR UPDATE"

    op_type = "CHAR(8)"  # the type of the operation column of the accepted records

    def table_exists(self, schema: str, table: str) -> str:
        """A query counting 1 if the table exists, else 0."""
        return (
            "SELECT count(*) FROM information_schema.tables WHERE table_schema ="
            f" {self.literal(schema)} AND table_name = {self.literal(table)}"
        )

    def create_schema(self, schema: str) -> str:
        return f"CREATE SCHEMA IF NOT EXISTS {self.quote(schema)}"

    def mappings_table(self, schema: str) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table(schema, MAPPINGS)}"
            " (mapping VARCHAR(200) PRIMARY KEY, snapshot_table VARCHAR(100) NOT NULL,"
            " meta TEXT NOT NULL, fence_run BIGINT)"
        )

    def analyze(self, table: str) -> str | None:
        """Gather statistics on a scratch table, where the planner would not by itself."""
        return None

    def undo_unique_key(self) -> list[str]:
        """After unique_key failed: back to the stage as it was, to count what failed it."""
        return []

    def drop_temp(self, name: str) -> str:
        return f"DROP TABLE IF EXISTS {self.quote(name)}"

    def upsert_mapping(self, schema: str) -> str:
        """Parameters: mapping, snapshot table, meta, fence run (by position)."""
        table = self.table(schema, MAPPINGS)
        return (
            f"INSERT INTO {table} (mapping, snapshot_table, meta, fence_run)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (mapping) DO UPDATE SET"
            " snapshot_table = EXCLUDED.snapshot_table, meta = EXCLUDED.meta"
        )

    def claim_fence(self, schema: str) -> str:
        """Parameters: run, mapping, run. A later run takes the fence; an earlier one cannot."""
        return (
            f"UPDATE {self.table(schema, MAPPINGS)} SET fence_run = %s"
            " WHERE mapping = %s AND (fence_run IS NULL OR fence_run < %s)"
        )

    def primary_key(self, table: str, keys: Sequence[Column]) -> str:
        names = ", ".join(self.quote(k.name) for k in keys)
        return f"ALTER TABLE {table} ADD PRIMARY KEY ({names})"

    # -- the diff ------------------------------------------------------------------------

    def stage(
        self, model: str, signature: str, keys: Sequence[Column], hashed: Sequence[Column]
    ) -> list[str]:
        """(key, hash) of every model row, in one statement: one consistent view."""
        key_list = ", ".join(
            f"{self.key(f'm.{self.quote(k.name)}', k.kind)} AS {self.quote(k.name)}" for k in keys
        )
        if self.stage_table is None:
            drop, create = self.drop_temp(STAGE), f"{self.temp_table} {self.stage_ref}"
        else:
            drop = f"DROP TABLE IF EXISTS {self.stage_table}"
            create = f"{self.scratch_table} {self.stage_table}"
        return [
            drop,
            f"{create} AS SELECT {key_list}, {self.row_hash(signature, hashed, 'm')} AS {HASH}"
            f" FROM ({model}\n) m",
        ]

    def unique_key(self, keys: Sequence[Column]) -> list[str]:
        """Statements that fail on a null or duplicate key in the stage (and index it), when
        that is cheaper than counting groups; [] to count them."""
        return []

    def join_keys(self, left: str, right: str, keys: Sequence[Column]) -> str:
        return " AND ".join(
            f"{left}.{self.quote(k.name)} = {right}.{self.quote(k.name)}" for k in keys
        )

    def changes(self, snapshot: str, keys: Sequence[Column], include: bool) -> list[str]:
        """The changes table: op, key, new hash, old hash; keys asked for by name whose row
        did not change come as `present` (a replay resends them)."""
        q = self.quote
        coalesced = ", ".join(
            f"COALESCE(s.{q(k.name)}, n.{q(k.name)}) AS {q(k.name)}" for k in keys
        )
        statements = [
            self.drop_temp(CHANGES),
            f"{self.temp_table} {q(CHANGES)} AS SELECT CASE WHEN n.{HASH} IS NULL THEN 'added'"
            f" WHEN s.{HASH} IS NULL THEN 'deleted' ELSE 'updated' END AS {OP}, {coalesced},"
            f" s.{HASH} AS {HASH}, n.{HASH} AS {OLD_HASH}"
            f" FROM {self.stage_ref} s FULL OUTER JOIN {snapshot} n"
            f" ON {self.join_keys('s', 'n', keys)}"
            f" WHERE {self.distinct(f's.{HASH}', f'n.{HASH}')}",
        ]
        if include:
            statements.append(self._present(snapshot, keys))
        return statements

    def _present(self, snapshot: str, keys: Sequence[Column]) -> str:
        q = self.quote
        names = ", ".join(f"s.{q(k.name)}" for k in keys)
        return (
            f"INSERT INTO {q(CHANGES)} SELECT '{PRESENT}', {names}, s.{HASH}, n.{HASH}"
            f" FROM {self.stage_ref} s JOIN {q(INCLUDE)} i ON {self.join_keys('s', 'i', keys)}"
            f" JOIN {snapshot} n ON {self.join_keys('s', 'n', keys)} WHERE s.{HASH} = n.{HASH}"
        )

    def changed_rows(self, model: str, keys: Sequence[Column]) -> str:
        """The model's rows for the added, updated and present keys, with their new hash."""
        on = " AND ".join(
            f"{self.key(f'm.{self.quote(k.name)}', k.kind)} = c.{self.quote(k.name)}" for k in keys
        )
        return (
            f"SELECT m.*, c.{HASH} AS {HASH} FROM ({model}\n) m"
            f" JOIN {self.quote(CHANGES)} c ON {on} WHERE c.{OP} <> 'deleted'"
        )

    def old_hashes(self, keys: Sequence[Column]) -> str:
        names = ", ".join(self.quote(k.name) for k in keys)
        return f"SELECT {names}, {OLD_HASH} FROM {self.quote(CHANGES)} WHERE {OLD_HASH} IS NOT NULL"

    def apply_accepted(self, snapshot: str, keys: Sequence[Column]) -> list[str]:
        """The snapshot takes in ebbtide_accepted: deleted keys go, the others get their hash."""
        q = self.quote
        names = ", ".join(q(k.name) for k in keys)
        return [
            f"DELETE FROM {snapshot} WHERE ({names}) IN (SELECT {names} FROM {q(ACCEPTED)})",
            f"INSERT INTO {snapshot} ({names}, {HASH}) SELECT {names}, {HASH}"
            f" FROM {q(ACCEPTED)} WHERE {OP} <> 'deleted'",
        ]


class PostgresDialect(Dialect):
    """PostgreSQL; the session pins UTC, ISO dates and shortest exact floats
    (sources/postgres_pushdown.py)."""

    name = "postgres"
    temp_table = "CREATE TEMPORARY TABLE"
    parallel_stage = True
    scratch_table = "CREATE UNLOGGED TABLE"  # scratch: no write-ahead log

    def render(self, ref: str, kind: ColumnKind) -> str:
        if kind is ColumnKind.DECIMAL:
            return f"trim_scale({ref})::text"
        if kind is ColumnKind.JSON:
            return f"({ref})::jsonb::text"  # keys sorted, spaces normalised
        if kind is ColumnKind.TIMESTAMPTZ:  # the instant in UTC, whatever the session's zone
            return f"({ref} AT TIME ZONE 'UTC')::text"  # ISO (DateStyle pinned), 2.5× to_char
        if kind is ColumnKind.FLOAT:
            return f"({ref})::float8::text"
        return f"({ref})::text"

    def quote_nullable(self, text: str) -> str:
        return f"quote_nullable({text})"

    def analyze(self, table: str) -> str | None:
        return f"ANALYZE {table}"  # autovacuum never sees temporary tables, nor a fresh stage

    def undo_unique_key(self) -> list[str]:
        return ["ROLLBACK TO SAVEPOINT ebbtide_keys"]

    def concat(self, parts: Sequence[str]) -> str:
        return f"concat_ws(',', {', '.join(parts)})"

    def begin_consistent(self) -> list[str]:
        # The stage sends the leader 16 bytes a row: cheap to gather, so let workers hash.
        return [*super().begin_consistent(), "SET LOCAL parallel_tuple_cost = 0.001"]

    def hash63(self, text: str) -> str:
        # PostgreSQL's own 64-bit text hash (the one hash partitioning relies on to stay put
        # across versions), at a third of md5's cost; the sign bit dropped.
        return f"(hashtextextended({text}, 0) & 9223372036854775807)"

    def unique_key(self, keys: Sequence[Column]) -> list[str]:
        # A primary key fails on a null or duplicate key, built by parallel workers, and
        # gives the join with the snapshot an index; a savepoint keeps the stage to explain
        # a failure.
        names = ", ".join(self.quote(k.name) for k in keys)
        return [
            "SAVEPOINT ebbtide_keys",
            f"ALTER TABLE {self.stage_ref} ADD PRIMARY KEY ({names})",
            "RELEASE SAVEPOINT ebbtide_keys",
        ]

    def apply_accepted(self, snapshot: str, keys: Sequence[Column]) -> list[str]:
        q = self.quote
        names = ", ".join(q(k.name) for k in keys)
        # Through the snapshot's primary key, never a scan of it: an upsert for the records
        # kept, a join for the deleted ones (none, mostly: then nothing is scanned).
        return [
            f"DELETE FROM {snapshot} n USING {q(ACCEPTED)} a"
            f" WHERE {self.join_keys('n', 'a', keys)} AND a.{OP} = 'deleted'",
            f"INSERT INTO {snapshot} ({names}, {HASH}) SELECT DISTINCT ON ({names})"
            f" {names}, {HASH} FROM {q(ACCEPTED)} WHERE {OP} <> 'deleted'"
            f" ON CONFLICT ({names}) DO UPDATE SET {HASH} = EXCLUDED.{HASH}",
        ]


class MariaDBDialect(Dialect):
    """MariaDB: InnoDB's consistent snapshot; keys in a binary collation."""

    name = "mariadb"
    full_outer_join = False
    # Byte for byte, and without PAD SPACE: 'a' and 'a ' are two keys.
    BINARY_COLLATION = "utf8mb4_nopad_bin"
    MAX_KEY_CHARS = 255  # three such keys in utf8mb4 fit InnoDB's 3072-byte index limit

    def quote(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    def literal(self, text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"

    def render(self, ref: str, kind: ColumnKind) -> str:
        if kind is ColumnKind.DECIMAL:
            text = f"CAST({ref} AS CHAR)"
            return (
                f"IF(LOCATE('.', {text}) > 0,"
                f" TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {text})), {text})"
            )
        if kind is ColumnKind.JSON:
            return f"JSON_NORMALIZE({ref})"
        if kind is ColumnKind.TIMESTAMPTZ:  # an instant: its seconds since 1970, zone-free
            return f"CAST(UNIX_TIMESTAMP({ref}) AS CHAR)"
        if kind is ColumnKind.TIMESTAMP:
            return f"DATE_FORMAT({ref}, '%Y-%m-%d %H:%i:%s.%f')"
        if kind is ColumnKind.BINARY:
            return f"HEX({ref})"
        return f"CAST({ref} AS CHAR)"

    def quote_nullable(self, text: str) -> str:
        return f"QUOTE({text})"

    def concat(self, parts: Sequence[str]) -> str:
        return f"CONCAT_WS(',', {', '.join(parts)})"

    def hash63(self, text: str) -> str:
        return f"CAST(CONV(LEFT(MD5({text}), 15), 16, 10) AS SIGNED)"

    def key(self, ref: str, kind: ColumnKind) -> str:
        if kind is ColumnKind.TEXT:
            text = f"CAST({ref} AS CHAR({self.MAX_KEY_CHARS}) CHARACTER SET utf8mb4)"
            return f"{text} COLLATE {self.BINARY_COLLATION}"
        return ref

    def distinct(self, left: str, right: str) -> str:
        return f"NOT ({left} <=> {right})"

    def begin_consistent(self) -> list[str]:
        return [
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "START TRANSACTION WITH CONSISTENT SNAPSHOT",
        ]

    def begin(self) -> list[str]:
        return ["START TRANSACTION"]

    def create_schema(self, schema: str) -> str:
        return f"CREATE DATABASE IF NOT EXISTS {self.quote(schema)}"

    def upsert_mapping(self, schema: str) -> str:
        table = self.table(schema, MAPPINGS)
        return (
            f"INSERT INTO {table} (mapping, snapshot_table, meta, fence_run)"
            " VALUES (%s, %s, %s, %s) ON DUPLICATE KEY UPDATE"
            " snapshot_table = VALUES(snapshot_table), meta = VALUES(meta)"
        )

    def stage(
        self, model: str, signature: str, keys: Sequence[Column], hashed: Sequence[Column]
    ) -> list[str]:
        drop, create = super().stage(model, signature, keys, hashed)
        names = ", ".join(self.quote(k.name) for k in keys)
        # An index, so the joins with the snapshot and the model seek instead of scanning.
        indexed = create.replace(
            f"{self.stage_ref} AS SELECT", f"{self.stage_ref} (INDEX ({names})) AS SELECT", 1
        )
        return [drop, indexed]

    def changes(self, snapshot: str, keys: Sequence[Column], include: bool) -> list[str]:
        # No FULL OUTER JOIN, and a temporary table cannot be named twice in one statement:
        # changed and added rows first, then the deleted ones.
        q = self.quote
        names = ", ".join(q(k.name) for k in keys)
        first = ", ".join(f"s.{q(k.name)}" for k in keys)
        statements = [
            self.drop_temp(CHANGES),
            f"{self.temp_table} {q(CHANGES)} (INDEX ({names})) AS SELECT"
            f" CAST(CASE WHEN n.{HASH} IS NULL THEN 'added' ELSE 'updated' END AS CHAR(8)) AS {OP},"
            f" {first}, s.{HASH} AS {HASH}, n.{HASH} AS {OLD_HASH}"
            f" FROM {self.stage_ref} s LEFT JOIN {snapshot} n ON {self.join_keys('s', 'n', keys)}"
            f" WHERE {self.distinct(f's.{HASH}', f'n.{HASH}')}",
            f"INSERT INTO {q(CHANGES)} SELECT 'deleted', "
            + ", ".join(f"n.{q(k.name)}" for k in keys)
            + f", NULL, n.{HASH} FROM {snapshot} n LEFT JOIN {self.stage_ref} s"
            f" ON {self.join_keys('s', 'n', keys)} WHERE s.{HASH} IS NULL",
        ]
        if include:
            statements.append(self._present(snapshot, keys))
        return statements

    def apply_accepted(self, snapshot: str, keys: Sequence[Column]) -> list[str]:
        q = self.quote
        names = ", ".join(q(k.name) for k in keys)
        return [
            f"DELETE n FROM {snapshot} n JOIN {q(ACCEPTED)} a ON {self.join_keys('n', 'a', keys)}"
            f" WHERE a.{OP} = 'deleted'",
            f"INSERT INTO {snapshot} ({names}, {HASH}) SELECT {names}, {HASH}"
            f" FROM {q(ACCEPTED)} WHERE {OP} <> 'deleted'"
            f" ON DUPLICATE KEY UPDATE {HASH} = VALUES({HASH})",
        ]


class MySQLDialect(MariaDBDialect):
    """MySQL 8: its JSON type is stored normalised; its binary no-pad collation is named
    differently. (Tested through MariaDB only: the generated SQL differs in these two.)"""

    name = "mysql"
    BINARY_COLLATION = "utf8mb4_0900_bin"

    def render(self, ref: str, kind: ColumnKind) -> str:
        if kind is ColumnKind.JSON:  # MySQL's JSON text has its keys in a canonical order
            return f"CAST(CAST({ref} AS JSON) AS CHAR)"
        return super().render(ref, kind)


def stage_table_name(mapping: str) -> str:
    """The scratch table a run of the mapping stages into (where not a temporary one)."""
    return _table_name("stage", mapping)


def snapshot_table_name(mapping: str) -> str:
    """The snapshot table of a mapping, within the identifier limits of every warehouse."""
    return _table_name("snapshot", mapping)


def _table_name(kind: str, mapping: str) -> str:
    name = f"{kind}_{mapping}"
    if len(name) <= MAX_IDENTIFIER and name.isascii():
        return name
    digest = hashlib.sha256(mapping.encode()).hexdigest()[:8]
    return f"{name.encode('ascii', 'ignore').decode()[: MAX_IDENTIFIER - 9]}_{digest}"


DIALECTS: dict[str, type[Dialect]] = {
    PostgresDialect.name: PostgresDialect,
    MariaDBDialect.name: MariaDBDialect,
    MySQLDialect.name: MySQLDialect,
}


def dialect(name: str) -> Dialect:
    """The dialect of that name; those run only as generated SQL live in warehouse_dialects."""
    from ebbtide.snapshots import warehouse_dialects  # noqa: F401 - registers its dialects

    return DIALECTS[name]()
