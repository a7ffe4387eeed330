"""Dialects of the warehouse diff known only as generated SQL (not yet run against the real
services): each registers itself in warehouse_sql.DIALECTS.

Every one hashes the same way as PostgreSQL and MariaDB: the first 60 bits (15 hex digits) of
the MD5 of the row's canonical text, so a hash is a non-negative BIGINT everywhere. What
differs is how a value becomes canonical text, how names and strings are quoted, and what
gives the diff one consistent view of the model. Each choice follows the vendor's SQL
reference; docs/warehouse-diff-dialects.md sums them up.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ebbtide.ports import ColumnKind
from ebbtide.snapshots.warehouse_sql import (
    ACCEPTED,
    DIALECTS,
    HASH,
    MAPPINGS,
    OP,
    Column,
    Dialect,
)

_UPSERT_SOURCE = (
    "(SELECT %s AS mapping, %s AS snapshot_table, %s AS meta, CAST(%s AS {bigint}) AS fence_run) v"
)


def _trim_decimal(text: str, position: str, *, standard_trim: bool = False) -> str:
    """Decimal text without trailing zeros (and without a bare trailing point): 1.00 → 1."""
    if standard_trim:  # where RTRIM takes no characters to trim (Spark's argument order varies)
        trimmed = f"TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {text}))"
    else:
        trimmed = f"RTRIM(RTRIM({text}, '0'), '.')"
    return f"CASE WHEN {position} > 0 THEN {trimmed} ELSE {text} END"


def _merge_upsert(table: str, bigint: str) -> str:
    """The mapping's row by MERGE, where INSERT … ON CONFLICT does not exist. Parameters:
    mapping, snapshot table, meta, fence run (by position); the fence is never overwritten."""
    return (
        f"MERGE INTO {table} t USING {_UPSERT_SOURCE.format(bigint=bigint)}"
        " ON t.mapping = v.mapping"
        " WHEN MATCHED THEN UPDATE SET snapshot_table = v.snapshot_table, meta = v.meta"
        " WHEN NOT MATCHED THEN INSERT (mapping, snapshot_table, meta, fence_run)"
        " VALUES (v.mapping, v.snapshot_table, v.meta, v.fence_run)"
    )


class SnowflakeDialect(Dialect):
    """Snowflake. Transactions are READ COMMITTED (each statement sees what was committed when
    it started) and a DDL statement, the stage's CREATE … AS SELECT included, commits the open
    transaction: the stage is one statement, hence one consistent view of the model, but
    changed_rows reads the model again a moment later. A row changed in between is sent with
    its newer data under the older hash, so the next run sends it again: never a change
    missed, at worst one sent twice."""

    name = "snowflake"

    def literal(self, text: str) -> str:
        # Single-quoted constants take backslash escape sequences as well as ''.
        return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"

    def render(self, ref: str, kind: ColumnKind) -> str:
        if kind is ColumnKind.DECIMAL:
            text = f"TO_VARCHAR({ref})"
            return _trim_decimal(text, f"POSITION('.', {text})")
        if kind is ColumnKind.FLOAT:
            return f"TO_VARCHAR(CAST({ref} AS DOUBLE))"
        if kind is ColumnKind.BINARY:
            return f"HEX_ENCODE({ref}, 0)"  # not BINARY_OUTPUT_FORMAT's choice: lower hex
        if kind is ColumnKind.DATE:
            return f"TO_VARCHAR({ref}, 'YYYY-MM-DD')"  # not DATE_OUTPUT_FORMAT's
        if kind is ColumnKind.TIMESTAMP:
            return f"TO_VARCHAR({ref}, 'YYYY-MM-DD HH24:MI:SS.FF9')"
        if kind is ColumnKind.TIMESTAMPTZ:
            # The instant in UTC, whatever TIMEZONE the session has (TIMESTAMP_TZ and _LTZ).
            return (
                f"TO_VARCHAR(CAST(CONVERT_TIMEZONE('UTC', {ref}) AS TIMESTAMP_NTZ),"
                " 'YYYY-MM-DD HH24:MI:SS.FF9')"
            )
        if kind is ColumnKind.JSON:
            # TO_JSON's key order is documented as unpredictable and Snowflake offers no
            # canonical form: an object rewritten with its keys in another order may hash
            # differently (sent once more), an unchanged stored value hashes the same.
            return f"TO_JSON({ref})"
        return f"TO_VARCHAR({ref})"

    def hash63(self, text: str) -> str:
        return f"TO_NUMBER(UPPER(LEFT(MD5({text}), 15)), 'XXXXXXXXXXXXXXX')"

    def key(self, ref: str, kind: ColumnKind) -> str:
        if kind is ColumnKind.TEXT:
            # 'utf8' compares the UTF-8 bytes: the default, unless the column or the
            # account declares a collation such as 'en-ci'.
            return f"COLLATE({ref}, 'utf8')"
        return ref

    def begin_consistent(self) -> list[str]:
        return ["BEGIN TRANSACTION"]

    def begin(self) -> list[str]:
        return ["BEGIN TRANSACTION"]

    def lock_row(self) -> str:
        # FOR UPDATE exists for hybrid tables only; the fence check is a plain read.
        return ""

    def upsert_mapping(self, schema: str) -> str:
        return _merge_upsert(self.table(schema, MAPPINGS), "BIGINT")

    def primary_key(self, table: str, keys: Sequence[Column]) -> str:
        # Informational: Snowflake records it but enforces only NOT NULL.
        return super().primary_key(table, keys)

    def apply_accepted(self, snapshot: str, keys: Sequence[Column]) -> list[str]:
        q = self.quote
        names = ", ".join(q(k.name) for k in keys)
        return [
            f"DELETE FROM {snapshot} n USING {q(ACCEPTED)} a"
            f" WHERE {self.join_keys('n', 'a', keys)}",
            f"INSERT INTO {snapshot} ({names}, {HASH}) SELECT {names}, {HASH}"
            f" FROM {q(ACCEPTED)} WHERE {OP} <> 'deleted'"
            f" QUALIFY ROW_NUMBER() OVER (PARTITION BY {names} ORDER BY {HASH}) = 1",
        ]


class BigQueryDialect(Dialect):
    """BigQuery (GoogleSQL). The session must run in session mode: temporary tables and a
    multi-statement transaction span queries only there. Inside BEGIN TRANSACTION every read
    sees one snapshot of the tables it names, and CREATE TEMP TABLE is allowed in it."""

    name = "bigquery"
    temp_table = "CREATE TEMP TABLE"
    op_type = "STRING"  # GoogleSQL has no CHAR(n)

    def table_exists(self, schema: str, table: str) -> str:
        # INFORMATION_SCHEMA is per dataset (the state schema is one).
        return (
            f"SELECT count(*) FROM {self.quote(schema)}.INFORMATION_SCHEMA.TABLES"
            f" WHERE table_name = {self.literal(table)}"
        )

    def quote(self, name: str) -> str:
        # Quoted identifiers take the escape sequences of string literals.
        return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"

    def literal(self, text: str) -> str:
        # No '' doubling in GoogleSQL; a quoted string cannot hold a raw newline.
        escaped = (
            text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
        )
        return "'" + escaped + "'"

    def render(self, ref: str, kind: ColumnKind) -> str:
        if kind is ColumnKind.DECIMAL:
            text = f"CAST({ref} AS STRING)"
            return _trim_decimal(text, f"STRPOS({text}, '.')")
        if kind is ColumnKind.BINARY:
            return f"TO_HEX({ref})"
        if kind is ColumnKind.DATE:
            return f"FORMAT_DATE('%Y-%m-%d', {ref})"
        if kind is ColumnKind.TIMESTAMP:  # DATETIME
            return f"FORMAT_DATETIME('%Y-%m-%d %H:%M:%E6S', {ref})"
        if kind is ColumnKind.TIMESTAMPTZ:  # TIMESTAMP, an instant: shown in UTC
            return f"FORMAT_TIMESTAMP('%Y-%m-%d %H:%M:%E6S', {ref}, 'UTC')"
        if kind in (ColumnKind.JSON, ColumnKind.OTHER):
            # TO_JSON_STRING takes any type (STRUCT, ARRAY, JSON); the order of a JSON
            # value's keys is the one BigQuery stores, which it does not document as sorted.
            return f"TO_JSON_STRING({ref})"
        return f"CAST({ref} AS STRING)"

    def quote_nullable(self, text: str) -> str:
        return f'COALESCE(CONCAT("\'", REPLACE({text}, "\'", "\'\'"), "\'"), \'NULL\')'

    def hash63(self, text: str) -> str:
        return f"CAST(CONCAT('0x', SUBSTR(TO_HEX(MD5({text})), 1, 15)) AS INT64)"

    # key: STRING compares by code point (binary) unless a dataset declares a default
    # collation such as 'und:ci'; ebbtide's schema declares none.

    def begin_consistent(self) -> list[str]:
        return ["BEGIN TRANSACTION"]

    def begin(self) -> list[str]:
        return ["BEGIN TRANSACTION"]

    def lock_row(self) -> str:
        # No FOR UPDATE: two transactions that change the same table conflict and one of
        # them is aborted at COMMIT, which is what fences a stale run here.
        return ""

    def mappings_table(self, schema: str) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table(schema, MAPPINGS)}"
            " (mapping STRING NOT NULL, snapshot_table STRING NOT NULL, meta STRING NOT NULL,"
            " fence_run INT64, PRIMARY KEY (mapping) NOT ENFORCED)"
        )

    def upsert_mapping(self, schema: str) -> str:
        return _merge_upsert(self.table(schema, MAPPINGS), "INT64")

    def primary_key(self, table: str, keys: Sequence[Column]) -> str:
        names = ", ".join(self.quote(k.name) for k in keys)
        return f"ALTER TABLE {table} ADD PRIMARY KEY ({names}) NOT ENFORCED"

    def apply_accepted(self, snapshot: str, keys: Sequence[Column]) -> list[str]:
        q = self.quote
        names = ", ".join(q(k.name) for k in keys)
        return [
            f"DELETE FROM {snapshot} n WHERE EXISTS (SELECT 1 FROM {q(ACCEPTED)} a"
            f" WHERE {self.join_keys('n', 'a', keys)})",
            f"INSERT INTO {snapshot} ({names}, {HASH}) SELECT {names}, {HASH}"
            f" FROM {q(ACCEPTED)} WHERE {OP} <> 'deleted'"
            f" QUALIFY ROW_NUMBER() OVER (PARTITION BY {names} ORDER BY {HASH}) = 1",
        ]


class RedshiftDialect(Dialect):
    """Amazon Redshift. Its transactions are serializable (or snapshot) isolation: from the
    first statement after BEGIN, every read sees one snapshot. Concurrent writers of the same
    tables are aborted with a serializable isolation violation instead of locking rows."""

    name = "redshift"
    temp_table = "CREATE TEMPORARY TABLE"

    def literal(self, text: str) -> str:
        # A backslash in a string literal escapes the next character.
        return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"

    def render(self, ref: str, kind: ColumnKind) -> str:
        if kind is ColumnKind.DECIMAL:
            text = f"CAST({ref} AS VARCHAR)"
            return _trim_decimal(text, f"STRPOS({text}, '.')")
        if kind is ColumnKind.BOOLEAN:
            # BOOLEAN cannot be cast to VARCHAR in Redshift.
            return f"CASE WHEN {ref} THEN 'true' WHEN NOT {ref} THEN 'false' END"
        if kind is ColumnKind.BINARY:  # VARBYTE
            return f"TO_HEX({ref})"
        if kind is ColumnKind.DATE:
            return f"TO_CHAR({ref}, 'YYYY-MM-DD')"
        if kind is ColumnKind.TIMESTAMP:
            return f"TO_CHAR({ref}, 'YYYY-MM-DD HH24:MI:SS.US')"
        if kind is ColumnKind.TIMESTAMPTZ:
            return f"TO_CHAR({ref} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
        if kind is ColumnKind.JSON:
            # SUPER keeps an object's keys in the order they were loaded and Redshift has no
            # function that sorts them: reordered keys read as a change (sent once more).
            return f"JSON_SERIALIZE({ref})"
        return f"CAST({ref} AS VARCHAR)"

    # quote_nullable and concat: the base's || forms. A row's text is a VARCHAR, at most
    # 65535 bytes in Redshift; a wider row fails the stage rather than hashing a prefix.

    def hash63(self, text: str) -> str:
        return f"STRTOL(LEFT(MD5({text}), 15), 16)"

    def key(self, ref: str, kind: ColumnKind) -> str:
        if kind is ColumnKind.TEXT:
            # A database created COLLATE CASE_INSENSITIVE would fold 'a' and 'A'.
            return f"COLLATE({ref}, 'case_sensitive')"
        return ref

    def distinct(self, left: str, right: str) -> str:
        # No IS DISTINCT FROM: different, or exactly one of them NULL.
        return f"({left} <> {right} OR ({left} IS NULL) <> ({right} IS NULL))"

    def begin_consistent(self) -> list[str]:
        return ["BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE"]

    def begin(self) -> list[str]:
        return ["BEGIN"]

    def lock_row(self) -> str:
        return ""  # no SELECT … FOR UPDATE; serializable isolation aborts the loser instead

    def mappings_table(self, schema: str) -> str:
        # TEXT is VARCHAR(256) in Redshift: too short for the meta.
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table(schema, MAPPINGS)}"
            " (mapping VARCHAR(200) NOT NULL PRIMARY KEY, snapshot_table VARCHAR(100) NOT NULL,"
            " meta VARCHAR(65535) NOT NULL, fence_run BIGINT)"
        )

    def upsert_mapping(self, schema: str) -> str:
        # Redshift's MERGE reads from a table only (no subquery, no VALUES) and it has no
        # ON CONFLICT: in one statement the row is inserted when absent. The store writes it
        # only when the mapping has no row (first sync, or after a reset deleted it).
        table = self.table(schema, MAPPINGS)
        return (
            f"INSERT INTO {table} (mapping, snapshot_table, meta, fence_run)"
            f" SELECT v.mapping, v.snapshot_table, v.meta, v.fence_run"
            f" FROM {_UPSERT_SOURCE.format(bigint='BIGINT')}"
            f" WHERE NOT EXISTS (SELECT 1 FROM {table} m WHERE m.mapping = v.mapping)"
        )

    def primary_key(self, table: str, keys: Sequence[Column]) -> str:
        # Informational: the planner uses it, nothing enforces it.
        return super().primary_key(table, keys)

    def apply_accepted(self, snapshot: str, keys: Sequence[Column]) -> list[str]:
        q = self.quote
        names = ", ".join(q(k.name) for k in keys)
        on = " AND ".join(f"{snapshot}.{q(k.name)} = a.{q(k.name)}" for k in keys)
        return [
            f"DELETE FROM {snapshot} USING {q(ACCEPTED)} a WHERE {on}",
            f"INSERT INTO {snapshot} ({names}, {HASH}) SELECT {names}, {HASH} FROM"
            f" (SELECT {names}, {HASH}, ROW_NUMBER() OVER (PARTITION BY {names}"
            f" ORDER BY {HASH}) AS ebbtide_rank FROM {q(ACCEPTED)} WHERE {OP} <> 'deleted') x"
            " WHERE ebbtide_rank = 1",
        ]


class DatabricksDialect(Dialect):
    """Databricks SQL on Delta tables.

    No multi-statement transactions: each statement is atomic on its own and reads one
    version of each Delta table it names, so begin_consistent has nothing to start. The stage
    is one statement (one version of the model's tables); changed_rows reads the model again.
    Pinning both to one version (`VERSION AS OF`) would need the model's own tables named,
    which a model query does not give; as with Snowflake, a row changed in between is at
    worst sent twice, never missed. The snapshot takes each batch in one MERGE, atomic.
    Temporary tables need a SQL warehouse (CREATE TEMPORARY TABLE, Databricks SQL)."""

    name = "databricks"
    temp_table = "CREATE TEMPORARY TABLE"

    def commit(self) -> list[str]:
        return []  # each statement committed itself

    def rollback(self) -> list[str]:
        return []

    def quote(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    def literal(self, text: str) -> str:
        # Backslash escapes; '' would be two adjacent literals (concatenated), not a quote.
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def render(self, ref: str, kind: ColumnKind) -> str:
        if kind is ColumnKind.DECIMAL:
            text = f"CAST({ref} AS STRING)"
            return _trim_decimal(text, f"INSTR({text}, '.')", standard_trim=True)
        if kind is ColumnKind.BINARY:
            return f"HEX({ref})"
        if kind is ColumnKind.DATE:
            return f"DATE_FORMAT({ref}, 'yyyy-MM-dd')"
        if kind is ColumnKind.TIMESTAMP:  # TIMESTAMP_NTZ
            return f"DATE_FORMAT({ref}, 'yyyy-MM-dd HH:mm:ss.SSSSSS')"
        if kind is ColumnKind.TIMESTAMPTZ:
            # TIMESTAMP is an instant that DATE_FORMAT shows in the session's zone; its
            # microseconds since the epoch are the same in every zone (and across DST).
            return f"CAST(UNIX_MICROS({ref}) AS STRING)"
        if kind is ColumnKind.JSON:
            # VARIANT (or STRUCT/MAP) as JSON text. The reference shows a VARIANT's keys
            # sorted but promises no order: reordered keys may read as a change.
            return f"TO_JSON({ref})"
        return f"CAST({ref} AS STRING)"

    def quote_nullable(self, text: str) -> str:
        return f"COALESCE(CONCAT('\\'', REPLACE({text}, '\\'', '\\'\\''), '\\''), 'NULL')"

    def concat(self, parts: Sequence[str]) -> str:
        return f"CONCAT_WS(',', {', '.join(parts)})"

    def hash63(self, text: str) -> str:
        return f"CAST(CONV(SUBSTR(MD5({text}), 1, 15), 16, 10) AS BIGINT)"

    # key: STRING compares as UTF8_BINARY unless a column declares another collation.

    def begin_consistent(self) -> list[str]:
        return []

    def begin(self) -> list[str]:
        return []

    def lock_row(self) -> str:
        return ""  # Delta's optimistic concurrency aborts a conflicting writer instead

    def mappings_table(self, schema: str) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table(schema, MAPPINGS)}"
            " (mapping STRING NOT NULL, snapshot_table STRING NOT NULL, meta STRING NOT NULL,"
            " fence_run BIGINT)"
        )

    def upsert_mapping(self, schema: str) -> str:
        return _merge_upsert(self.table(schema, MAPPINGS), "BIGINT")

    def primary_key(self, table: str, keys: Sequence[Column]) -> str:
        # A PRIMARY KEY constraint needs Unity Catalog and NOT NULL columns; the key is
        # recorded as a table property instead, for people reading the table.
        names = json.dumps([k.name for k in keys])
        return (
            f"ALTER TABLE {table} SET TBLPROPERTIES ('ebbtide.primary_key' = {self.literal(names)})"
        )

    def apply_accepted(self, snapshot: str, keys: Sequence[Column]) -> list[str]:
        # One MERGE: without transactions, the batch lands whole or not at all.
        q = self.quote
        names = ", ".join(q(k.name) for k in keys)
        values = ", ".join(f"a.{q(k.name)}" for k in keys)
        return [
            f"MERGE INTO {snapshot} n USING (SELECT {names}, {HASH}, {OP} FROM {q(ACCEPTED)}"
            f" QUALIFY ROW_NUMBER() OVER (PARTITION BY {names} ORDER BY {HASH}) = 1) a"
            f" ON {self.join_keys('n', 'a', keys)}"
            f" WHEN MATCHED AND a.{OP} = 'deleted' THEN DELETE"
            f" WHEN MATCHED THEN UPDATE SET {HASH} = a.{HASH}"
            f" WHEN NOT MATCHED AND a.{OP} <> 'deleted' THEN INSERT ({names}, {HASH})"
            f" VALUES ({values}, a.{HASH})"
        ]


DIALECTS[SnowflakeDialect.name] = SnowflakeDialect
DIALECTS[BigQueryDialect.name] = BigQueryDialect
DIALECTS[RedshiftDialect.name] = RedshiftDialect
DIALECTS[DatabricksDialect.name] = DatabricksDialect
