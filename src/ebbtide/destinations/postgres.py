"""PostgreSQL tables: records written as rows by key, one transaction per batch.

A batch is COPied into a temporary staging table, then applied with one statement per
operation (INSERT … ON CONFLICT, UPDATE … FROM, DELETE … USING). When PostgreSQL refuses the
batch's data (a CHECK, NOT NULL or foreign key, a value the column cannot hold), the batch is
replayed in halves inside savepoints down to the rows at fault: the good rows commit, the bad
ones are rejected alone, each with the constraint or column that refused it.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from pydantic import BeforeValidator, Field, field_validator

from ebbtide.config.models import DestinationConfig, SyncMode
from ebbtide.config.redact import url_redactor
from ebbtide.destinations.postgres_sql import TableShape, Writes, inspect_table, table_ddl
from ebbtide.errors import DestinationError, ErrorClass
from ebbtide.ports import (
    KEY_COLUMN,
    KEY_PART_PREFIX,
    OP_COLUMN,
    ActionSpec,
    AdapterContext,
    BatchResult,
    DestinationPlugin,
    Operation,
    OutboundBatch,
    RecordRejection,
)
from ebbtide.sources.postgres import CONNECT_TIMEOUT_S, check_url

# Errors about one row's data: the batch is replayed row by row to find the rows at fault.
_ROW_LEVEL_CLASSES = ("21", "22", "23")  # cardinality, data exception, integrity violation
_RAISED_BY_TRIGGER = "P0001"
_UNIQUE_VIOLATION = "23505"
_KEY_PART = re.compile(re.escape(KEY_PART_PREFIX) + r"\d+")
_COPY_COLUMN = re.compile(r"column (\S+?):")


_Connection = psycopg.AsyncConnection[tuple[Any, ...]]


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class PostgresDestinationConfig(DestinationConfig):
    url: str
    table: str
    key: Annotated[list[str], BeforeValidator(_as_list), Field(min_length=1)]
    create_table: bool = False

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        if not all(value.split(".")) or value.count(".") > 1:
            raise ValueError(f"{value!r} is not a table name: use table or schema.table")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: list[str]) -> list[str]:
        reserved = [k for k in value if k.startswith("__") or not k]
        if reserved:
            raise ValueError(f"invalid key column name(s): {', '.join(map(repr, reserved))}")
        return value

    @property
    def table_identifier(self) -> sql.Identifier:
        return sql.Identifier(*self.table.split("."))


@dataclass
class _Slot:
    """A connection and whether its session already has the staging table."""

    conn: _Connection
    staged: bool = False


@dataclass
class _Pool:
    """At most `size` connections, opened on demand: one per batch in flight."""

    size: int
    idle: list[_Slot] = field(default_factory=list)
    closing: bool = False
    _free: asyncio.Semaphore | None = None

    @asynccontextmanager
    async def slot(self, connect: Callable[[], Awaitable[_Connection]]) -> AsyncIterator[_Slot]:
        if self._free is None:
            self._free = asyncio.Semaphore(self.size)
        async with self._free:
            slot = self.idle.pop() if self.idle else _Slot(await connect())
            try:
                yield slot
            finally:
                if slot.conn.broken or slot.conn.closed or self.closing:
                    await slot.conn.close()
                else:
                    self.idle.append(slot)

    async def close(self) -> None:
        self.closing = True
        while self.idle:
            await self.idle.pop().conn.close()


class PostgresDestination:
    """Upserts, inserts, updates or deletes rows of one table, by the configured key."""

    def __init__(self, config: PostgresDestinationConfig) -> None:
        self.config = config
        self.table = config.table_identifier
        self._redact = url_redactor(config.url)
        self._pool = _Pool(config.concurrency)
        self._shape: TableShape | None = None
        self._writes: Writes | None = None
        self._preparing: asyncio.Lock | None = None

    async def open(self) -> None:
        """Connect, and check that the table exists with the key before anything is sent."""
        self._preparing = asyncio.Lock()
        self._pool = _Pool(self.config.concurrency)
        conn = await self._connect()
        try:
            self._shape = await inspect_table(conn, self.table)
            self._check_table(self._shape)
        except psycopg.Error as exc:
            await conn.close()
            raise self._error(exc) from exc
        except DestinationError:
            await conn.close()
            raise
        self._pool.idle.append(_Slot(conn))

    async def send(self, batch: OutboundBatch) -> BatchResult:
        """Write the batch in one transaction; rows refused for their data are rejected alone."""
        try:
            writes = await self._prepare(batch.records)
            rows = _rows(batch.records, writes)
            async with self._pool.slot(self._connect) as slot:
                if not slot.staged:
                    await slot.conn.execute(writes.stage_ddl)
                    slot.staged = True
                return await self._write(slot.conn, writes, batch.mode, rows)
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    async def close(self) -> None:
        """Close idle connections now, and those still in use when they are released."""
        await self._pool.close()

    # -- table -----------------------------------------------------------------------

    def _check_table(self, shape: TableShape | None) -> None:
        name = self.config.table
        if shape is None:
            if self.config.create_table:
                return
            raise DestinationError(
                ErrorClass.NOT_FOUND,
                f"table {name} does not exist: create it, or set create_table: true on the"
                " destination to have ebbtide create it from the mapped fields",
            )
        key = self.config.key
        missing = [k for k in key if k not in shape.columns]
        if missing:
            raise DestinationError(
                ErrorClass.VALIDATION,
                f"table {name} has no key column(s) {', '.join(missing)}"
                f" (it has: {', '.join(shape.columns)})",
            )
        if frozenset(key) not in shape.unique_keys:
            raise DestinationError(
                ErrorClass.VALIDATION,
                f"table {name} has no primary key or unique constraint on ({', '.join(key)}):"
                f" rows are written by key, so add one, e.g. ALTER TABLE {name}"
                f" ADD PRIMARY KEY ({', '.join(key)})",
            )

    async def _prepare(self, records: pa.RecordBatch) -> Writes:
        """On the first batch: create the table or its missing columns, build the statements."""
        assert self._preparing is not None, "open() comes first"
        fields = _field_columns(records.schema, self.config.key)
        async with self._preparing:
            if self._writes is None:
                self._check_key_parts(records.schema)
                await self._fit_table(records.schema, fields)
                self._writes = Writes(self.table, tuple(self.config.key), fields)
        if self._writes.fields != fields:
            raise DestinationError(
                ErrorClass.MAPPING, "every batch of a run must map the same fields"
            )
        return self._writes

    def _check_key_parts(self, schema: pa.Schema) -> None:
        parts = [n for n in schema.names if _KEY_PART.fullmatch(n)]
        if len(parts) != len(self.config.key):
            raise DestinationError(
                ErrorClass.MAPPING,
                f"the destination's key names {len(self.config.key)} column(s)"
                f" ({', '.join(self.config.key)}) but the model's primary key has {len(parts)}",
            )

    async def _fit_table(self, schema: pa.Schema, fields: tuple[str, ...]) -> None:
        shape = self._shape
        missing = [f for f in fields if shape is None or f not in shape.columns]
        if shape is not None and missing and not self.config.create_table:
            raise DestinationError(
                ErrorClass.NOT_FOUND,
                f"table {self.config.table} has no column(s) {', '.join(missing)} for the mapped"
                " field(s): add them, or set create_table: true to have ebbtide add them",
            )
        if shape is not None and not missing:
            return
        key_types = [
            schema.field(f"{KEY_PART_PREFIX}{i}").type for i in range(len(self.config.key))
        ]
        ddl = table_ddl(
            self.table,
            exists=shape is not None,
            key=list(zip(self.config.key, key_types, strict=True)),
            fields=[(f, schema.field(f).type) for f in missing],
        )
        async with self._pool.slot(self._connect) as slot, slot.conn.transaction():
            for statement in ddl:
                await slot.conn.execute(statement)

    # -- writing ---------------------------------------------------------------------

    async def _write(
        self,
        conn: _Connection,
        writes: Writes,
        mode: SyncMode,
        rows: list[tuple[Any, ...]],
    ) -> BatchResult:
        try:
            async with conn.transaction():
                return BatchResult(tuple(await self._apply(conn, writes, mode, rows)))
        except psycopg.Error as exc:
            if not _row_level(exc):
                raise
        async with conn.transaction():
            return BatchResult(tuple(await self._isolate(conn, writes, mode, rows)))

    async def _isolate(
        self,
        conn: _Connection,
        writes: Writes,
        mode: SyncMode,
        rows: list[tuple[Any, ...]],
    ) -> list[RecordRejection]:
        """Apply rows PostgreSQL refused together in halves, each in a savepoint, down to the
        single rows at fault: k bad rows among n cost about 2·k·log2(n) attempts, not n."""
        middle = len(rows) // 2
        rejected: list[RecordRejection] = []
        for half in (rows[:middle], rows[middle:]):
            try:
                async with conn.transaction():
                    await conn.execute(writes.clear_stage)
                    rejected += await self._apply(conn, writes, mode, half)
            except psycopg.Error as exc:
                if not _row_level(exc):
                    raise
                if len(half) == 1:
                    rejected.append(_rejection(str(half[0][0]), exc))
                else:
                    rejected += await self._isolate(conn, writes, mode, half)
        return rejected

    async def _apply(
        self,
        conn: _Connection,
        writes: Writes,
        mode: SyncMode,
        rows: list[tuple[Any, ...]],
    ) -> list[RecordRejection]:
        """Stage `rows` and apply them; records the statement refused by key or absence."""
        async with conn.cursor() as cursor:
            async with cursor.copy(writes.copy) as copy:
                for row in rows:
                    await copy.write_row(row)
            ops = {row[1] for row in rows}
            if Operation.DELETED in ops:
                await cursor.execute(writes.delete)
            if ops - {Operation.DELETED}:
                await cursor.execute(writes.for_mode(mode))
                if cursor.description is not None:
                    refused = await cursor.fetchall()
                    return [self._refusal(mode, str(key)) for (key,) in refused]
        return []

    def _refusal(self, mode: SyncMode, key: str) -> RecordRejection:
        if mode is SyncMode.UPDATE:
            return RecordRejection(
                key, ErrorClass.NOT_FOUND, f"no row of {self.config.table} has this key"
            )
        return RecordRejection(
            key, ErrorClass.CONFLICT, f"a row of {self.config.table} already has this key"
        )

    # -- connections and errors ----------------------------------------------------------

    async def _connect(self) -> _Connection:
        url = self.config.url
        try:
            options = conninfo_to_dict(url)
            conn = await psycopg.AsyncConnection.connect(
                url,
                autocommit=True,
                connect_timeout=options.get("connect_timeout") or CONNECT_TIMEOUT_S,
                application_name=options.get("application_name") or "ebbtide",
            )
            # Naive timestamps from the model are stored as they are, read as UTC.
            await conn.execute("SET TIME ZONE 'UTC'")
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        return conn

    def _error(self, exc: psycopg.Error) -> DestinationError:
        message = self._redact(" ".join(str(exc).split()))
        return DestinationError(_error_class(exc), message, code=exc.sqlstate)


def _field_columns(schema: pa.Schema, key: Sequence[str]) -> tuple[str, ...]:
    """The mapped fields; a field named like a key column is written from the key."""
    return tuple(n for n in schema.names if not n.startswith("__") and n not in key)


def _rows(records: pa.RecordBatch, writes: Writes) -> list[tuple[Any, ...]]:
    """The batch as tuples in the staging table's column order, ready for COPY."""
    names = [KEY_COLUMN, OP_COLUMN, *(f"{KEY_PART_PREFIX}{i}" for i in range(len(writes.key)))]
    columns = [_values(records.column(n)) for n in [*names, *writes.fields]]
    return list(zip(*columns, strict=True))


def _values(column: pa.Array[Any] | pa.ChunkedArray[Any]) -> list[Any]:
    kind = column.type
    if pa.types.is_nested(kind):  # lists, structs and maps are stored as JSON
        return [None if v is None else json.dumps(v, default=str) for v in column.to_pylist()]
    if pa.types.is_timestamp(kind) and kind.unit == "ns":
        column = column.cast(pa.timestamp("us", tz=kind.tz), safe=False)
    return column.to_pylist()


def _row_level(exc: psycopg.Error) -> bool:
    state = exc.sqlstate or ""
    return state.startswith(_ROW_LEVEL_CLASSES) or state == _RAISED_BY_TRIGGER


def _rejection(key: str, exc: psycopg.Error) -> RecordRejection:
    """Names the constraint or the column at fault, never the row's values."""
    diag = exc.diag
    message = diag.message_primary or str(exc).splitlines()[0]
    column = diag.column_name or _copy_column(diag.context or "")
    if column and f'"{column}"' not in message:
        message += f" (column {column})"
    if diag.constraint_name and f'"{diag.constraint_name}"' not in message:
        message += f" (constraint {diag.constraint_name})"
    error_class = (
        ErrorClass.CONFLICT if exc.sqlstate == _UNIQUE_VIOLATION else ErrorClass.VALIDATION
    )
    return RecordRejection(key, error_class, message, code=exc.sqlstate)


def _copy_column(context: str) -> str | None:
    found = _COPY_COLUMN.search(context)
    return found.group(1) if found else None


_CONNECT_AUTH = (
    "password authentication failed",
    "authentication failed",
    "no password supplied",
    'role "',
    "pg_hba.conf",
    "not permitted to log in",
)


def _error_class(exc: psycopg.Error) -> ErrorClass:
    """The error taxonomy's class of a database error."""
    state = exc.sqlstate or ""
    if not state:  # failed to connect, or the connection dropped: libpq says why in words
        text = str(exc)
        if "FATAL" not in text:
            return ErrorClass.NETWORK
        if re.search(r'database "[^"]*" does not exist', text):
            return ErrorClass.NOT_FOUND
        if "permission denied" in text:
            return ErrorClass.PERMISSION
        return ErrorClass.AUTH if any(s in text for s in _CONNECT_AUTH) else ErrorClass.NETWORK
    for prefix in (state, state[:3], state[:2]):
        if prefix in _STATE_CLASSES:
            return _STATE_CLASSES[prefix]
    return ErrorClass.SERVER_ERROR


_STATE_CLASSES: dict[str, ErrorClass] = {
    "28": ErrorClass.AUTH,  # invalid authorization
    "42501": ErrorClass.PERMISSION,  # insufficient privilege
    "42P01": ErrorClass.NOT_FOUND,  # undefined table
    "42703": ErrorClass.NOT_FOUND,  # undefined column
    "3D000": ErrorClass.NOT_FOUND,  # invalid catalog name (database)
    "3F000": ErrorClass.NOT_FOUND,  # invalid schema name
    "57014": ErrorClass.TIMEOUT,  # query canceled (statement_timeout)
    "08": ErrorClass.NETWORK,  # connection exception
    "57P": ErrorClass.NETWORK,  # server shutting down
    "21": ErrorClass.VALIDATION,
    "22": ErrorClass.VALIDATION,
    "23": ErrorClass.VALIDATION,
}


ACTIONS = {
    "upsert": ActionSpec(
        "upsert",
        "Write each record as a row of the table, by key: upsert inserts or updates, insert"
        " only inserts (an existing key is a conflict), update only updates (a missing key is"
        " not found), mirror also deletes the rows of deleted records.",
    ),
}


def _build(config: PostgresDestinationConfig, context: AdapterContext) -> PostgresDestination:
    return PostgresDestination(config)


PLUGIN = DestinationPlugin(config=PostgresDestinationConfig, actions=ACTIONS, build=_build)
