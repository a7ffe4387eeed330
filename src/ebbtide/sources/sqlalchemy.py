"""Any database SQLAlchemy reaches by URL (Snowflake, BigQuery, Redshift, …), its dialect and
driver installed by the user; rows stream through a server-side cursor where the dialect has one.

A column's Arrow type comes from the type the driver reports for it in the cursor description,
read as the dialect's SQLAlchemy type (Integer, Numeric(p, s), DateTime, JSON, …). A driver
that reports none (SQLite) leaves the type to the values of the first batch.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from pydantic import field_validator
from sqlalchemy import exc as sa_exc
from sqlalchemy import types as sqltypes
from sqlalchemy.engine import URL, Connection, CursorResult, Dialect, make_url
from sqlalchemy.pool import NullPool

from ebbtide.config.models import SourceConfig
from ebbtide.config.redact import url_redactor
from ebbtide.errors import SourceError
from ebbtide.ports import AdapterContext, SourcePlugin
from ebbtide.sources import BATCH_ROWS

MAX_PRECISION = 38  # decimal128; wider (or unconstrained) numerics travel as exact text

# The pip package that brings a dialect SQLAlchemy does not ship, by URL backend name.
DIALECT_PACKAGES = {
    "snowflake": "snowflake-sqlalchemy",
    "bigquery": "sqlalchemy-bigquery",
    "redshift": "sqlalchemy-redshift redshift-connector",
    "databricks": "databricks-sqlalchemy",
    "trino": "trino",
    "awsathena": "pyathena",
    "clickhouse": "clickhouse-sqlalchemy",
    "duckdb": "duckdb-engine",
}
# The pip package of a DB-API driver module a built-in dialect imports.
DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "pg8000": "pg8000",
    "pymysql": "PyMySQL",
    "MySQLdb": "mysqlclient",
    "mysql": "mysql-connector-python",
    "pyodbc": "pyodbc",
    "pymssql": "pymssql",
    "oracledb": "oracledb",
    "cx_Oracle": "cx_Oracle",
    "redshift_connector": "redshift-connector",
    "snowflake": "snowflake-connector-python",
    "databricks": "databricks-sql-connector",
}

# Type names drivers report that are not SQLAlchemy's own names, as the SQLAlchemy type.
_ALIASES: dict[str, type[sqltypes.TypeEngine[Any]]] = {
    # PostgreSQL's internal names (psycopg, psycopg2, pg8000 and Redshift report type OIDs)
    "INT2": sqltypes.SmallInteger,
    "INT4": sqltypes.Integer,
    "INT8": sqltypes.BigInteger,
    "FLOAT4": sqltypes.Float,
    "FLOAT8": sqltypes.Double,
    "BOOL": sqltypes.Boolean,
    "BPCHAR": sqltypes.String,
    "NAME": sqltypes.String,
    "TIMESTAMPTZ": sqltypes.DateTime,
    "JSONB": sqltypes.JSON,
    # BigQuery (DB-API reports names)
    "INT64": sqltypes.BigInteger,
    "FLOAT64": sqltypes.Double,
    "BIGNUMERIC": sqltypes.Numeric,
    "STRING": sqltypes.String,
    "BYTES": sqltypes.LargeBinary,
    # Snowflake (its connector's FIELD_ID_TO_NAME)
    "FIXED": sqltypes.Numeric,
    "NUMBER": sqltypes.Numeric,
    "TIMESTAMP_NTZ": sqltypes.DateTime,
    "TIMESTAMP_LTZ": sqltypes.DateTime,
    "TIMESTAMP_TZ": sqltypes.DateTime,
    "VARIANT": sqltypes.JSON,
    "OBJECT": sqltypes.JSON,
    # Databricks
    "LONG": sqltypes.BigInteger,
    "INT": sqltypes.Integer,
    "TINYINT": sqltypes.SmallInteger,
    "SHORT": sqltypes.SmallInteger,
    "BYTE": sqltypes.SmallInteger,
    "DOUBLE PRECISION": sqltypes.Double,
}
# Names of a timestamp that holds an instant (its values carry a zone), per dialect.
_ZONED = {"TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_LTZ", "TIMESTAMP_TZ"}
_ZONED_BY_DIALECT = {"bigquery": {"TIMESTAMP"}}
# Numerics whose precision and scale the type fixes though the driver reports none.
_FIXED_NUMERICS = {("bigquery", "NUMERIC"): (38, 9)}


class SQLAlchemySourceConfig(SourceConfig):
    url: str

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        """A URL whose dialect and driver are installed; messages never repeat the URL."""
        try:
            check_driver(parse_url(value))
        except SourceError as exc:
            raise ValueError(str(exc)) from None
        return value


def parse_url(value: str) -> URL:
    try:
        return make_url(value)
    except sa_exc.ArgumentError:
        raise SourceError(
            "is not a SQLAlchemy URL (dialect+driver://user:password@host/database)"
        ) from None


def check_driver(url: URL) -> type[Dialect]:
    """The URL's dialect class, its DB-API driver importable; else says what to pip install."""
    try:
        dialect: type[Dialect] = url.get_dialect()
    except sa_exc.NoSuchModuleError:
        backend = url.get_backend_name()
        package = DIALECT_PACKAGES.get(backend)
        hint = f"pip install {package}" if package else "install the package that provides it"
        raise SourceError(
            f"SQLAlchemy has no dialect {url.drivername!r} installed: {hint} (in the environment"
            " ebbtide runs in), or fix the URL's scheme"
        ) from None
    if getattr(dialect, "is_async", False):
        raise SourceError(
            f"{url.drivername} is an asyncio driver: use the dialect's synchronous driver"
        )
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        module = (exc.name or "").split(".")[0]
        package = DRIVER_PACKAGES.get(module, module or "the driver")
        raise SourceError(
            f"the driver of {url.drivername} ({module or exc}) is not installed:"
            f" pip install {package}"
        ) from None
    return dialect


class SQLAlchemySource:
    """One connection (no pool), one transaction per read, rolled back: a model only reads."""

    def __init__(self, url: str) -> None:
        self._redact = url_redactor(url)
        parsed = parse_url(url)
        check_driver(parsed)
        self.where = self._redact(parsed.render_as_string(hide_password=True))
        self._reading: dict[int, CursorResult[Any]] = {}
        try:
            self._engine = sa.create_engine(parsed, poolclass=NullPool)
            self._con: Connection = self._engine.connect()
        except sa_exc.SQLAlchemyError as exc:
            raise SourceError(f"cannot connect to {self.where}: {self._say(exc)}") from exc

    def read(self, query: str) -> pa.RecordBatchReader:
        """Run `query` with a server-side cursor; rows are fetched as the reader is consumed."""
        options = {"stream_results": True, "yield_per": BATCH_ROWS, "no_parameters": True}
        try:
            result = self._con.execution_options(**options).exec_driver_sql(
                query.strip().rstrip(";")
            )
        except sa_exc.SQLAlchemyError as exc:
            self._rollback()
            raise SourceError(f"the model's SQL failed on {self.where}: {self._say(exc)}") from exc
        if not result.returns_rows:  # an UPDATE, a DELETE: undone, and refused
            self._rollback()
            raise SourceError(
                f"the model's SQL returned no rows on {self.where}: a model is a query (SELECT);"
                " what it changed was rolled back"
            )
        description = result.cursor.description
        self._reading[id(result)] = result
        columns = [_column(self._con.dialect, d) for d in description]
        first = self._fetch(result)
        schema = _schema([d[0] for d in description], columns, first, self.where)
        return pa.RecordBatchReader.from_batches(
            schema, self._batches(result, first, schema, columns)
        )

    def _batches(
        self,
        result: CursorResult[Any],
        rows: Sequence[Sequence[Any]],
        schema: pa.Schema,
        columns: list[Column],
    ) -> Iterator[pa.RecordBatch]:
        start = 0
        while rows:
            yield _to_batch(rows, schema, columns, start, self.where)
            start += len(rows)
            rows = self._fetch(result)

    def _fetch(self, result: CursorResult[Any]) -> Sequence[Sequence[Any]]:
        try:
            rows = result.fetchmany(BATCH_ROWS)
        except sa_exc.SQLAlchemyError as exc:
            self._end(result)
            raise SourceError(
                f"reading the model's rows from {self.where} failed: {self._say(exc)}"
            ) from exc
        if not rows:
            self._end(result)  # ends the transaction: no snapshot held while we diff
        return rows

    def _end(self, result: CursorResult[Any]) -> None:
        self._reading.pop(id(result), None)
        # The connection may be gone; the error that brought us here says why.
        with contextlib.suppress(sa_exc.SQLAlchemyError):
            result.close()
        if not self._reading:
            self._rollback()

    def _rollback(self) -> None:
        with contextlib.suppress(sa_exc.SQLAlchemyError):  # the connection may be gone
            self._con.rollback()

    def _say(self, exc: sa_exc.SQLAlchemyError) -> str:
        """The driver's own message, without SQLAlchemy's SQL echo and background link."""
        said = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig else exc
        return self._redact(" ".join(str(said).split()))

    def close(self) -> None:
        # A result not read to the end keeps its cursor (SQLite: the file) past the close.
        for result in list(self._reading.values()):
            self._end(result)
        self._con.close()
        self._engine.dispose()


# --- types ---------------------------------------------------------------------------------

Convert = Callable[[Any], Any]


class Column:
    """A result column: its Arrow type (None: from the values), and how a value becomes it."""

    def __init__(self, arrow: pa.DataType | None, convert: Convert | None = None) -> None:
        self.arrow, self.convert = arrow, convert


def _column(dialect: Dialect, description: Sequence[Any]) -> Column:
    name = type_name(dialect, description[1])
    if name is None:
        return Column(None)
    precision, scale = description[4], description[5]
    if precision is None:
        precision, scale = _FIXED_NUMERICS.get((dialect.name, name), (None, scale))
    sa_type = sqlalchemy_type(dialect, name)
    return arrow_column(sa_type, _zoned(dialect, name), precision, scale)


def type_name(dialect: Dialect, type_code: Any) -> str | None:
    """The driver's name for a column's type, upper case; None when it reports nothing."""
    if type_code is None:
        return None
    if isinstance(type_code, str):
        return type_code.upper()
    if isinstance(type_code, int) and dialect.name in ("postgresql", "redshift"):
        import psycopg.postgres

        info = psycopg.postgres.types.get(type_code)
        if info is None or info.oid != type_code:  # an array (looked up by its array OID)
            return "ARRAY"
        return info.name.upper()
    if isinstance(type_code, int) and dialect.name == "snowflake":
        try:
            constants = importlib.import_module("snowflake.connector.constants")
            return str(constants.FIELD_ID_TO_NAME[type_code]).upper()
        except (ImportError, KeyError, AttributeError):
            return "UNKNOWN"
    return str(getattr(type_code, "name", type_code)).upper()


def sqlalchemy_type(dialect: Dialect, name: str) -> type[sqltypes.TypeEngine[Any]] | None:
    """The dialect's SQLAlchemy type of a type name, then SQLAlchemy's generic one."""
    bare = name.split("(")[0].strip()
    names: dict[str, Any] = getattr(dialect, "ischema_names", {}) or {}
    found = names.get(bare.lower()) or names.get(bare) or _ALIASES.get(bare)
    found = found or getattr(sqltypes, bare.replace(" ", "_"), None)
    if isinstance(found, type) and issubclass(found, sqltypes.TypeEngine):
        return found
    return None


def _zoned(dialect: Dialect, name: str) -> bool:
    return name in _ZONED or name in _ZONED_BY_DIALECT.get(dialect.name, set())


def arrow_column(
    sa_type: type[sqltypes.TypeEngine[Any]] | None,
    zoned: bool,
    precision: int | None,
    scale: int | None,
) -> Column:
    """The Arrow type of a SQLAlchemy type; anything else travels as text."""
    if sa_type is None:
        return Column(pa.string(), _text)
    checks: list[tuple[type[Any], Column]] = [
        (sqltypes.Boolean, Column(pa.bool_())),
        (sqltypes.Integer, Column(pa.int64())),
        (sqltypes.Float, Column(pa.float64(), float)),  # before Numeric: Float is a Numeric
        (sqltypes.Numeric, _decimal(precision, scale)),
        (sqltypes.DateTime, Column(pa.timestamp("us", tz="UTC" if zoned else None))),
        (sqltypes.Date, Column(pa.date32())),
        (sqltypes.JSON, Column(pa.json_(), _json)),
        (sqltypes._Binary, Column(pa.binary(), bytes)),
        (sqltypes.String, Column(pa.string())),
    ]
    return next((column for kind, column in checks if issubclass(sa_type, kind)), _TEXT)


_TEXT = Column(pa.string(), lambda value: _text(value))


def _decimal(precision: int | None, scale: int | None) -> Column:
    if precision is None or scale is None or not 0 <= scale <= precision <= MAX_PRECISION:
        return Column(pa.string(), _text)  # unconstrained or too wide: the exact digits
    return Column(pa.decimal128(precision, scale))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, ensure_ascii=False)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _json(value: Any) -> str:
    """A JSON document as JSON text: drivers hand some as text, others parsed."""
    if isinstance(value, str):
        return value
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value) if value != value.to_integral_value() else int(value)
    return str(value)


# --- batches -------------------------------------------------------------------------------


def _schema(
    names: list[str], columns: list[Column], rows: Sequence[Sequence[Any]], where: str
) -> pa.Schema:
    """Declared types; a column without one takes the type of the first batch's values.

    Whether a timestamp holds instants (zoned) is told by its first value where there is
    one: drivers differ, and a name such as TIMESTAMP means either across warehouses."""
    fields = []
    for i, (name, column) in enumerate(zip(names, columns, strict=True)):
        arrow = column.arrow
        values = [row[i] for row in rows]
        if arrow is None:
            arrow = _inferred(name, names, rows, values, where)
        elif pa.types.is_timestamp(arrow):
            first = next((v for v in values if isinstance(v, datetime)), None)
            if first is not None:
                arrow = pa.timestamp("us", tz=None if first.tzinfo is None else "UTC")
        fields.append(pa.field(name, arrow))
    return pa.schema(fields)


def _inferred(
    name: str, names: list[str], rows: Sequence[Sequence[Any]], values: list[Any], where: str
) -> pa.DataType:
    try:
        arrow = pa.array(values, from_pandas=False).type
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        kind = type(next(v for v in values if v is not None))
        row = next(r for r, v in enumerate(values) if v is not None and type(v) is not kind)
        raise _misfit(name, names, rows[row], row, values[row], None, where) from exc
    return pa.string() if pa.types.is_null(arrow) else arrow


def _to_batch(
    rows: Sequence[Sequence[Any]], schema: pa.Schema, columns: list[Column], start: int, where: str
) -> pa.RecordBatch:
    arrays = []
    for i, (field, column) in enumerate(zip(schema, zip(*rows, strict=True), strict=True)):
        convert = columns[i].convert
        values = list(column)
        if convert is not None:
            values = [None if v is None else convert(v) for v in values]
        bad = _silently_changed(values, field.type)
        if bad is None:
            try:
                arrays.append(pa.array(values, type=field.type, from_pandas=False))
                continue
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                bad = next(r for r, v in enumerate(values) if not _fits(v, field.type))
        raise _misfit(field.name, schema.names, rows[bad], start + bad, values[bad], field, where)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _silently_changed(values: list[Any], arrow: pa.DataType) -> int | None:
    """Where Arrow would take a value but change it: 1.5 into an integer column, a datetime
    into a date, a zone-less time into a zoned column (read as UTC) or the reverse.

    Looks at the set of kinds first (at C speed); only a batch that has one goes value by value.
    """
    changed: Callable[[Any], bool] | None = None
    if pa.types.is_integer(arrow) and float in set(map(type, values)):
        changed = _is_float
    elif pa.types.is_date(arrow) and any(issubclass(k, datetime) for k in set(map(type, values))):
        changed = _is_datetime
    elif pa.types.is_timestamp(arrow):
        zones = set(map(_zone_of, filter(None, values)))
        if (None in zones) if arrow.tz else bool(zones - {None}):
            changed = _aware if arrow.tz is None else _naive
    if changed is None:
        return None
    return next(row for row, value in enumerate(values) if changed(value))


def _zone_of(value: Any) -> Any:
    return getattr(value, "tzinfo", None)


def _is_float(value: Any) -> bool:
    return type(value) is float


def _is_datetime(value: Any) -> bool:
    return isinstance(value, datetime)


def _aware(value: Any) -> bool:
    return isinstance(value, datetime) and value.tzinfo is not None


def _naive(value: Any) -> bool:
    return isinstance(value, datetime) and value.tzinfo is None


def _fits(value: Any, arrow: pa.DataType) -> bool:
    try:
        pa.array([value], type=arrow, from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return False
    return True


def _misfit(
    column: str,
    names: list[str],
    row: Sequence[Any],
    index: int,
    value: Any,
    field: pa.Field[Any] | None,
    where: str,
) -> SourceError:
    key = f"{names[0]} = {row[0]!r}" if names and names[0] != column else "its first column"
    kind = f"the column's type ({field.type})" if field is not None else "the column's other values"
    zone = ""
    if isinstance(value, datetime) and field is not None and pa.types.is_timestamp(field.type):
        zone = " (a time with a zone in a column without, or the reverse)"
    return SourceError(
        f"column {column!r} from {where} holds {value!r} in row {index + 1} ({key}), which does"
        f" not fit {kind}{zone}: cast or fix it in the model's SQL"
    )


def _connect(config: SQLAlchemySourceConfig, context: AdapterContext) -> SQLAlchemySource:
    return SQLAlchemySource(workspace_url(config.url, context.root))


def workspace_url(url: str, root: Path) -> str:
    """A SQLite file named by a relative path is the workspace's, as for `type: sqlite`."""
    parsed = parse_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return url
    if database.startswith("file:") or Path(database).is_absolute():
        return url
    return parsed.set(database=str(root / database)).render_as_string(hide_password=False)


PLUGIN = SourcePlugin(config=SQLAlchemySourceConfig, connect=_connect)
