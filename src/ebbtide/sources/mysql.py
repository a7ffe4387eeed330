"""MySQL and MariaDB, read through PyMySQL's unbuffered (server-side) cursor.

Rows arrive as the text the server prints for them (PyMySQL is given no decoders), a batch of
`BATCH_ROWS` at a time, and each column is cast to its Arrow type by Arrow in one go: exact
(decimals keep every digit, unsigned BIGINTs stay uint64) and faster than a Python object per
value. The type comes from the result's column metadata, so an empty result has it too.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pyarrow as pa
import pymysql  # type: ignore[import-untyped]
import pymysql.converters  # type: ignore[import-untyped]
import pymysql.cursors  # type: ignore[import-untyped]
from pydantic import field_validator

from ebbtide.config.models import SourceConfig
from ebbtide.config.redact import url_redactor
from ebbtide.errors import SourceError
from ebbtide.ports import AdapterContext, SourcePlugin, WarehouseSession
from ebbtide.sources import BATCH_ROWS

SAYS = "MySQL/MariaDB"  # how messages name the source: the same driver speaks to both
CONNECT_TIMEOUT_S = 10
# The server gives up on a client that reads nothing for this long; the engine may take a
# while with one batch before it asks for the next, so the server's 60 s default is too short.
NET_WRITE_TIMEOUT_S = 3600
_SCHEMES = ("mysql", "mariadb")
_OPTIONS = {"connect_timeout": int, "ssl_ca": str, "ssl_verify_identity": bool}
# PyMySQL's encoders (for the few parameters we send) without any decoder: every value comes
# back as the server's text (bytes for binary columns), and Arrow converts whole columns.
_ENCODERS = {k: v for k, v in pymysql.converters.conversions.items() if not isinstance(k, int)}
_LOST = {2006, 2013, 2055, 1053, 1927}  # gone away, lost, shutdown, connection killed
_JSON_CHECK = re.compile(r"^json_valid\(`((?:[^`]|``)+)`\)$", re.IGNORECASE)


class MySQLSourceConfig(SourceConfig):
    url: str
    # `diff: warehouse` keeps its snapshots in this database of the server.
    state_schema: str = "ebbtide_state"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        connect_options(value)
        return value


def connect_options(url: str) -> dict[str, Any]:
    """PyMySQL's connect() arguments from a mysql:// URL; no message repeats the URL."""
    try:
        parts = urlsplit(url)
        port = parts.port or 3306
    except ValueError as exc:
        reason = url_redactor(url)(str(exc))
        raise ValueError(f"is not a valid MySQL URL: {reason}") from None
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise ValueError("must be a mysql:// URL (mysql://user:password@host:3306/database)")
    options: dict[str, Any] = {
        "host": parts.hostname,
        "port": port,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "database": unquote(parts.path.lstrip("/")) or None,
        "connect_timeout": CONNECT_TIMEOUT_S,
    }
    for name, values in parse_qs(parts.query).items():
        if name not in _OPTIONS:
            known = ", ".join(sorted(_OPTIONS))
            raise ValueError(f"has an unknown option {name!r} (known: {known})")
        parse = _OPTIONS[name]
        options[name] = values[-1].lower() in ("1", "true") if parse is bool else parse(values[-1])
    return options


@dataclass
class _Read:
    """The statement being streamed, if any: its cursor and columns."""

    cursor: Any
    columns: list[Column]


class MySQLSource:
    """Streams a query through an unbuffered cursor in a read-only READ COMMITTED session."""

    def __init__(self, url: str, *, read_only: bool = True) -> None:
        self._read_only = read_only
        self._redact = url_redactor(url)
        self.where = self._redact(url)
        try:
            self._options = connect_options(url)
        except ValueError as exc:
            raise SourceError(f"invalid {SAYS} URL {self.where}: {exc}") from exc
        self._con = self._connect()
        self._reading: _Read | None = None
        self._mariadb = "mariadb" in self._con.get_server_info().lower()

    def _connect(self) -> Any:
        try:
            con = pymysql.connect(
                **self._options, charset="utf8mb4", conv=_ENCODERS, autocommit=True
            )
            with con.cursor() as cursor:
                # A model reads; it never writes, and never holds a lock a writer waits on:
                # each statement reads committed rows without locking them (InnoDB).
                cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                if self._read_only:  # the warehouse diff's session writes its own tables
                    cursor.execute("SET SESSION TRANSACTION READ ONLY")
                cursor.execute("SET time_zone = '+00:00'")  # TIMESTAMPs arrive in UTC
                cursor.execute(f"SET SESSION net_write_timeout = {NET_WRITE_TIMEOUT_S}")
        except pymysql.Error as exc:
            raise self._cannot_connect(exc) from exc
        return con

    def read(self, query: str, *, json: set[str] | None = None) -> pa.RecordBatchReader:
        """Send `query`; rows are fetched as the reader is consumed. `json`: the names of
        MariaDB JSON columns, when the query reads them through a derived table (which hides
        the table whose CHECK says so)."""
        self._finish()
        cursor = self._con.cursor(pymysql.cursors.SSCursor)
        try:
            cursor.execute(query.strip().rstrip(";"))
        except pymysql.Error as exc:
            raise self._failed(exc, "the model's SQL failed") from exc
        result = cursor._result
        fields = result.fields if result is not None else []
        if result is not None:
            # Rows as the server's bytes, sliced by a tighter loop than PyMySQL's (which
            # decodes value by value): Arrow checks and decodes the text a column at a time.
            result._read_row_from_packet = functools.partial(_raw_row, len(fields))
        columns = [Column.of(field) for field in fields]
        self._reading = _Read(cursor, columns)
        found = self._json_columns(columns) if self._mariadb else set()
        if json:
            found |= {i for i, c in enumerate(columns) if c.name in json and c.maybe_text}
        schema = pa.schema(
            [pa.field(c.name, arrow_type(c, i in found)) for i, c in enumerate(columns)]
        )
        return pa.RecordBatchReader.from_batches(schema, self._batches(self._reading, schema))

    def _batches(self, reading: _Read, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        while True:
            rows = self._fetch(reading)
            if not rows:
                return
            arrays = [
                arrow_column(list(values), field, column)
                for values, field, column in zip(
                    zip(*rows, strict=True), schema, reading.columns, strict=True
                )
            ]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)

    def _fetch(self, reading: _Read) -> Sequence[Sequence[Any]]:
        if self._reading is not reading:
            raise SourceError(
                f"the read from {SAYS} at {self.where} was ended (the source was closed or"
                " another query started) before every row was read"
            )
        try:
            rows: Sequence[Sequence[Any]] = reading.cursor.fetchmany(BATCH_ROWS)
        except pymysql.Error as exc:
            self._reading = None
            raise self._failed(exc, "reading the model's rows failed") from exc
        if not rows:
            self._reading = None
        return rows

    def _failed(self, exc: pymysql.Error, what: str) -> SourceError:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        if code in _LOST or not self._con.open:
            self._reopen()
            return SourceError(
                f"the connection to {SAYS} at {self.where} was lost ({self._say(exc)});"
                " nothing was sent, and the next sync reads the model again from the start."
            )
        return SourceError(f"{what} on {SAYS} at {self.where}: {self._say(exc)}")

    def _reopen(self) -> None:
        """A lost connection is replaced, so the source stays usable, if the server is back."""
        self._hang_up()
        with contextlib.suppress(SourceError):  # if not, the next read says so
            self._con = self._connect()

    def _json_columns(self, columns: list[Column]) -> set[int]:
        """MariaDB's JSON is LONGTEXT with a CHECK (json_valid(`column`)): the columns read
        straight from a table column that has one (the JSON alias writes it)."""
        wanted = {(c.db, c.table) for c in columns if c.maybe_json}
        if not wanted:
            return set()
        checked: set[tuple[str, str, str]] = set()
        with self._side_connection() as side, side.cursor() as cursor:
            for db, table in wanted:
                cursor.execute(
                    "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS"
                    " WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
                    (db, table),
                )
                for (clause,) in cursor.fetchall():
                    found = _JSON_CHECK.match(clause)
                    if found:
                        checked.add((db, table, found.group(1).replace("``", "`")))
        return {i for i, c in enumerate(columns) if (c.db, c.table, c.origin) in checked}

    def _side_connection(self) -> Any:
        """A short second connection: the main one is busy streaming the result."""
        try:
            return pymysql.connect(**self._options, charset="utf8mb4", autocommit=True)
        except pymysql.Error as exc:
            raise self._cannot_connect(exc) from exc

    def _finish(self) -> None:
        """Drain a result left half-read (PyMySQL would, with a warning) before a new query."""
        if self._reading is None:
            return
        reading, self._reading = self._reading, None
        try:
            reading.cursor.close()
        except pymysql.Error as exc:
            raise self._failed(exc, "ending the previous read failed") from exc

    def _hang_up(self) -> None:
        """Close the socket at once: the server ends a statement it cannot send to, instead
        of us reading the rest of its rows first."""
        result = getattr(self._con, "_result", None)
        if result is not None:
            result.unbuffered_active = False
        self._con._force_close()

    def _cannot_connect(self, exc: Exception) -> SourceError:
        return SourceError(f"cannot connect to {SAYS} at {self.where}: {self._say(exc)}")

    def _say(self, exc: Exception) -> str:
        return self._redact(" ".join(str(exc).split()))

    def close(self) -> None:
        """Release the connection; a read in progress ends (its server statement too)."""
        if self._reading is not None:
            self._reading = None
            self._hang_up()
            return
        try:
            self._con.close()
        except pymysql.Error:
            self._con._force_close()


def _connect(config: MySQLSourceConfig, context: AdapterContext) -> MySQLSource:
    return MySQLSource(config.url)


def _pushdown(config: MySQLSourceConfig, context: AdapterContext) -> WarehouseSession:
    from ebbtide.sources.mysql_pushdown import MySQLSession

    return MySQLSession(config.url, config.state_schema)


PLUGIN = SourcePlugin(config=MySQLSourceConfig, connect=_connect, pushdown=_pushdown)


# --- types ---------------------------------------------------------------------------------

MAX_PRECISION = 38  # decimal128; wider DECIMALs (up to 65 digits) travel as text, losslessly
_UNSIGNED = 32  # the column flag
_BINARY_CHARSET = 63
_T = pymysql.constants.FIELD_TYPE
_INTEGERS = {
    _T.TINY: (pa.int8(), pa.uint8()),
    _T.SHORT: (pa.int16(), pa.uint16()),
    _T.INT24: (pa.int32(), pa.uint32()),
    _T.LONG: (pa.int32(), pa.uint32()),
    _T.LONGLONG: (pa.int64(), pa.uint64()),
}
_FIXED: dict[int, pa.DataType] = {
    _T.FLOAT: pa.float64(),  # from the digits the server prints for the FLOAT
    _T.DOUBLE: pa.float64(),
    _T.YEAR: pa.int16(),
    _T.DATE: pa.date32(),
    _T.NEWDATE: pa.date32(),
    _T.DATETIME: pa.timestamp("us"),  # no zone: as written
    _T.TIMESTAMP: pa.timestamp("us", tz="UTC"),  # the session's zone is UTC
    _T.TIME: pa.time64("us"),
    _T.JSON: pa.json_(),  # MySQL's own JSON type
    _T.GEOMETRY: pa.binary(),  # the server's internal format: SRID + WKB
}
_TEXT = {
    _T.VARCHAR,
    _T.VAR_STRING,
    _T.STRING,
    _T.ENUM,
    _T.SET,
    _T.TINY_BLOB,
    _T.MEDIUM_BLOB,
    _T.LONG_BLOB,
    _T.BLOB,
}
_LONG_TEXT = {_T.MEDIUM_BLOB, _T.LONG_BLOB, _T.BLOB}
_TIME = re.compile(r"^(\d+):(\d\d):(\d\d)(?:\.(\d{1,6}))?$")


@dataclass(frozen=True)
class Column:
    """A result column as the server describes it."""

    name: str
    type_code: int
    charset: int
    length: int
    scale: int
    flags: int
    db: str
    table: str  # the base table it was read from ("" for an expression)
    origin: str  # its name in that table

    @classmethod
    def of(cls, field: Any) -> Column:
        db = field.db.decode() if isinstance(field.db, bytes) else str(field.db or "")
        return cls(
            field.name,
            field.type_code,
            field.charsetnr,
            field.length,
            field.scale,
            field.flags,
            db,
            field.org_table or "",
            field.org_name or "",
        )

    @property
    def unsigned(self) -> bool:
        return bool(self.flags & _UNSIGNED)

    @property
    def maybe_text(self) -> bool:
        """Long text: what MariaDB's JSON is."""
        return self.type_code in _LONG_TEXT and self.charset != _BINARY_CHARSET

    @property
    def maybe_json(self) -> bool:
        """Long text read from a table column: MariaDB's JSON, if the table says so."""
        texty = self.type_code in _LONG_TEXT and self.charset != _BINARY_CHARSET
        return texty and bool(self.db and self.table and self.origin)


def arrow_type(column: Column, json: bool = False) -> pa.DataType:
    """The Arrow type of a result column, from its metadata (`json`: MariaDB says it is)."""
    code = column.type_code
    if code in _INTEGERS:
        signed, unsigned = _INTEGERS[code]
        return unsigned if column.unsigned else signed
    if code in (_T.DECIMAL, _T.NEWDECIMAL):
        # The display length counts the point and (if signed) the sign beside the digits.
        precision = column.length - (column.scale > 0) - (not column.unsigned)
        if not 0 <= column.scale <= precision <= MAX_PRECISION or precision < 1:
            return pa.string()
        return pa.decimal128(precision, column.scale)
    if code == _T.BIT:
        return pa.uint64() if column.length > 63 else pa.int64()
    if code in _FIXED:
        return _FIXED[code]
    if code in _TEXT:
        if column.charset == _BINARY_CHARSET:
            return pa.binary()
        return pa.json_() if json else pa.string()
    return pa.string()  # NULL-typed and anything newer: the server's text


def _raw_row(count: int, packet: Any) -> tuple[bytes | None, ...]:
    """A text-protocol row: `count` length-coded values (251 is NULL), as bytes."""
    data: bytes = packet._data
    at, row = 0, list[bytes | None]()
    for _ in range(count):
        length = data[at]
        if length < 251:
            at += 1
        elif length == 251:
            row.append(None)
            at += 1
            continue
        else:
            size = {252: 2, 253: 3, 254: 8}[length]
            length = int.from_bytes(data[at + 1 : at + 1 + size], "little")
            at += 1 + size
        row.append(data[at : at + length])
        at += length
    return tuple(row)


def arrow_column(values: list[Any], arrow: pa.Field[Any], column: Column) -> pa.Array[Any]:
    """A column of server text (bytes for binary) as its Arrow type, exactly or not at all."""
    try:
        return _convert(values, arrow.type, column)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
        misfit = next((v for v in values if not _fits(v, arrow.type, column)), None)
        if isinstance(misfit, bytes) and arrow.type != pa.binary():
            misfit = misfit.decode(errors="replace")
        raise SourceError(
            f"column {arrow.name!r} from {SAYS} holds {misfit!r}, which does not fit the"
            f" column's type ({arrow.type}): {_advice(column)}"
        ) from exc


def _convert(values: list[Any], kind: pa.DataType, column: Column) -> pa.Array[Any]:
    if kind == pa.binary():
        blobs: pa.Array[Any] = pa.array(values, pa.binary())
        return blobs
    if column.type_code == _T.BIT:
        bits: pa.Array[Any] = pa.array([_bits(v) for v in values], kind)
        return bits
    if column.type_code == _T.TIME:
        return pa.array([_time(v) for v in values], pa.int64()).cast(kind)
    text = pa.array(values, pa.binary()).cast(pa.string())  # checks the UTF-8
    if isinstance(kind, pa.BaseExtensionType):
        json: pa.Array[Any] = pa.ExtensionArray.from_storage(kind, text)
        return json
    if pa.types.is_timestamp(kind) and kind.tz is not None:
        return text.cast(pa.timestamp("us")).cast(kind)
    return text if kind == pa.string() else text.cast(kind)


def _fits(value: Any, kind: pa.DataType, column: Column) -> bool:
    try:
        _convert([value], kind, column)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError):
        return False
    return True


def _advice(column: Column) -> str:
    if column.type_code in (_T.DATE, _T.NEWDATE, _T.DATETIME, _T.TIMESTAMP):
        return "a zero date has no calendar day; NULLIF() it away or cast it in the model's SQL"
    if column.type_code == _T.TIME:
        return "a TIME outside 00:00:00-23:59:59 is a duration; read it as TIME_TO_SEC() or text"
    return "cast or fix it in the model's SQL"


def _bits(value: bytes | None) -> int | None:
    return None if value is None else int.from_bytes(value, "big")


def _time(value: bytes | None) -> int | None:
    """A TIME of day in microseconds; a duration beyond a day, or negative, does not fit."""
    if value is None:
        return None
    text = value.decode()
    found = _TIME.match(text)
    if not found:
        raise ValueError(f"not a time of day: {text}")
    hours, minutes, seconds, fraction = found.groups()
    if int(hours) > 23:
        raise ValueError(f"not a time of day: {text}")
    micros = int((fraction or "0").ljust(6, "0"))
    return ((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 1_000_000 + micros
