"""PostgreSQL, read through psycopg 3 with a server-side cursor so memory stays flat."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import psycopg
import psycopg.postgres
import pyarrow as pa
from psycopg.adapt import AdaptersMap, Loader
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.bool import BoolLoader
from psycopg.types.datetime import DateLoader, TimestampLoader, TimestamptzLoader
from psycopg.types.numeric import FloatLoader, IntDumper, IntLoader, NumericLoader
from psycopg.types.string import ByteaLoader, StrDumper, TextLoader
from pydantic import field_validator

from ebbtide.config.models import SourceConfig
from ebbtide.config.redact import url_redactor
from ebbtide.errors import SourceError
from ebbtide.ports import AdapterContext, SourcePlugin
from ebbtide.sources import BATCH_ROWS
from ebbtide.sources.rows import batches_from_rows

CONNECT_TIMEOUT_S = 10
MAX_PRECISION = 38  # decimal128; wider numerics travel as text, losslessly
_SCHEMES = ("postgresql://", "postgres://")


def _oid(name: str) -> int:
    info = psycopg.postgres.types.get(name)
    assert info is not None, name
    return info.oid


# The only types psycopg turns into Python objects; every other type arrives as the text
# PostgreSQL prints for it (json, uuid, interval, arrays, …), which is what we keep.
_LOADERS: dict[str, type[Loader]] = {
    "bool": BoolLoader,
    "int2": IntLoader,
    "int4": IntLoader,
    "int8": IntLoader,
    "oid": IntLoader,
    "float4": FloatLoader,
    "float8": FloatLoader,
    "numeric": NumericLoader,
    "date": DateLoader,
    "timestamp": TimestampLoader,
    "timestamptz": TimestamptzLoader,
    "bytea": ByteaLoader,
}
_ARROW_TYPES: dict[int, pa.DataType] = {
    _oid("bool"): pa.bool_(),
    _oid("int2"): pa.int16(),
    _oid("int4"): pa.int32(),
    _oid("int8"): pa.int64(),
    _oid("oid"): pa.int64(),
    _oid("float4"): pa.float64(),
    _oid("float8"): pa.float64(),
    _oid("date"): pa.date32(),
    _oid("timestamp"): pa.timestamp("us"),
    _oid("timestamptz"): pa.timestamp("us", tz="UTC"),
    _oid("bytea"): pa.binary(),
    # JSON documents stay JSON, so a mapping can send them as objects and reach into them.
    _oid("json"): pa.json_(),
    _oid("jsonb"): pa.json_(),
}
NUMERIC_OID = _oid("numeric")


def _adapters() -> AdaptersMap:
    adapters = AdaptersMap(types=psycopg.postgres.types)
    adapters.register_loader(0, TextLoader)  # the fallback for every type not listed
    for name, loader in _LOADERS.items():
        adapters.register_loader(name, loader)
    adapters.register_dumper(int, IntDumper)  # FETCH FORWARD n
    adapters.register_dumper(str, StrDumper)
    return adapters


class PostgresSourceConfig(SourceConfig):
    url: str

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)


def check_url(value: str) -> str:
    """A postgresql:// URL; the message never repeats the URL, which may hold a password."""
    if not value.startswith(_SCHEMES):
        raise ValueError("must be a postgresql:// URL (postgresql://user:password@host/db)")
    try:
        conninfo_to_dict(value)
    except psycopg.Error as exc:
        reason = url_redactor(value)(" ".join(str(exc).split()))
        raise ValueError(f"is not a valid PostgreSQL URL: {reason}") from None
    return value


class PostgresSource:
    """Streams a query through a named (server-side) cursor, `BATCH_ROWS` rows per fetch."""

    def __init__(self, url: str) -> None:
        self._redact = url_redactor(url)
        self.where = self._redact(url)
        try:
            options = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise SourceError(f"invalid PostgreSQL URL {self.where}: {self._say(exc)}") from exc
        timeout = options.get("connect_timeout") or CONNECT_TIMEOUT_S
        try:
            self._con = psycopg.connect(url, context=_adapters(), connect_timeout=timeout)
        except psycopg.Error as exc:
            raise SourceError(
                f"cannot connect to PostgreSQL at {self.where}: {self._say(exc)}"
            ) from exc
        self._con.read_only = True  # a model reads; it never writes to the warehouse
        self._cursor_ids = itertools.count(1)

    def read(self, query: str) -> pa.RecordBatchReader:
        """Declare a cursor for `query`; rows are fetched as the reader is consumed."""
        cursor = self._con.cursor(name=f"ebbtide_model_{next(self._cursor_ids)}")
        try:
            cursor.execute(query.strip().rstrip(";"))
            description = cursor.description or []
        except psycopg.Error as exc:
            self._end(cursor)
            raise SourceError(f"the model's SQL failed on PostgreSQL: {self._say(exc)}") from exc
        names = [column.name for column in description]
        types = [arrow_type(c.type_code, c.precision, c.scale) for c in description]
        numerics = [i for i, c in enumerate(description) if c.type_code == NUMERIC_OID]
        as_text = [i for i in numerics if pa.types.is_string(types[i])]
        fetch = self._fetcher(cursor, names, as_text, [i for i in numerics if i not in as_text])
        return batches_from_rows(names, fetch, BATCH_ROWS, types)

    def _fetcher(
        self,
        cursor: psycopg.ServerCursor[Any],
        names: list[str],
        as_text: list[int],
        decimals: list[int],
    ) -> Callable[[int], Sequence[Sequence[Any]]]:
        """Fetches the next rows; numerics become exact text or checked decimals."""

        def fetch(size: int) -> Sequence[Sequence[Any]]:
            try:
                rows = cursor.fetchmany(size)
            except psycopg.Error as exc:
                self._end(cursor)
                if self._con.broken or isinstance(exc, psycopg.OperationalError):
                    raise SourceError(
                        f"the connection to PostgreSQL at {self.where} was lost while reading"
                        f" the model's rows ({self._say(exc)}); nothing was sent, and the next"
                        " sync reads the model again from the start."
                    ) from exc
                raise SourceError(
                    f"reading the model's rows from PostgreSQL failed: {self._say(exc)}"
                ) from exc
            if not rows:
                self._end(cursor)  # ends the transaction: no snapshot held while we diff
                return rows
            if not (as_text or decimals):
                return rows
            try:
                return [_fit(row, as_text, decimals, names) for row in rows]
            except SourceError:
                self._end(cursor)
                raise

        return fetch

    def _end(self, cursor: psycopg.ServerCursor[Any]) -> None:
        try:
            cursor.close()
            self._con.rollback()
        except psycopg.Error:
            pass  # the connection is gone; the error that brought us here says why

    def _say(self, exc: psycopg.Error) -> str:
        return self._redact(" ".join(str(exc).split()))

    def close(self) -> None:
        self._con.close()


def arrow_type(oid: int, precision: int | None, scale: int | None) -> pa.DataType:
    """The Arrow type of a result column, from its type OID (and numeric typmod)."""
    if oid == NUMERIC_OID:
        if precision is None or scale is None or not 0 <= scale <= precision <= MAX_PRECISION:
            return pa.string()  # unconstrained or too wide: the exact digits, as text
        return pa.decimal128(precision, scale)
    return _ARROW_TYPES.get(oid, pa.string())


def _fit(
    row: Sequence[Any], as_text: list[int], decimals: list[int], names: list[str]
) -> list[Any]:
    """Numerics that travel as text keep every digit, in plain (not scientific) notation."""
    values = list(row)
    for i in as_text:
        if isinstance(values[i], Decimal):
            values[i] = format(values[i], "f")
    for i in decimals:
        value = values[i]
        if value is not None and not value.is_finite():
            raise SourceError(
                f"column {names[i]!r} holds {value}, which a fixed-precision decimal cannot"
                " represent: cast it to text or filter it out in the model's SQL"
            )
    return values


def _connect(config: PostgresSourceConfig, context: AdapterContext) -> PostgresSource:
    return PostgresSource(config.url)


PLUGIN = SourcePlugin(config=PostgresSourceConfig, connect=_connect)
