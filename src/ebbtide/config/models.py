"""The shape of `ebbtide.yml`: a public contract that may grow, not change."""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from ebbtide.config.alerts import AlertsSpec
from ebbtide.config.schedule import (
    Duration,
    check_schedule,
    check_timezone,
    duration,
    parse_interval,
)

DEFAULT_STATE_URL = "sqlite:///.ebbtide/state.db"


# Names of sources, models, destinations and mappings become file names (snapshots, journals,
# scratch folders) and identifiers: ASCII letters, digits, `_` and `-`, never a leading `-`
# (it would read as a command-line option), short enough for any file system.
NAME_CHARACTERS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,99}")
NAME_RULE = (
    "letters a-z and A-Z, digits, '_' and '-', not starting with '-', at most 100 characters"
)


def check_name(name: str) -> str:
    """The name unchanged, or ValueError saying which characters a name may hold."""
    if not NAME_CHARACTERS.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid name: use {NAME_RULE}")
    return name


Name = Annotated[str, AfterValidator(check_name)]


class SyncMode(StrEnum):
    """Which changes a mapping sends."""

    UPSERT = "upsert"
    INSERT = "insert"
    UPDATE = "update"
    MIRROR = "mirror"


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class ModelSpec(Spec):
    """A query on a source, with a primary key of one or more columns."""

    source: str
    primary_key: Annotated[list[str], BeforeValidator(_as_list), Field(min_length=1)]
    sql: str | None = None
    table: str | None = None
    file: str | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _one_query(self) -> ModelSpec:
        given = [k for k in ("sql", "table", "file") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "a model needs exactly one of sql, table or file"
                + (f" (found {', '.join(given)})" if given else "")
            )
        return self


class RetrySpec(Spec):
    """How long a failed record is retried: `retry: {max_days: 14, max_syncs: 25}`."""

    max_days: float = Field(default=14.0, gt=0)
    max_syncs: int = Field(default=25, ge=1)


class ChangeDetectionSpec(Spec):
    """`change_detection: {cursor: updated_at}`: read only the rows whose cursor moved.

    For very large models with a trustworthy `updated_at` (or a growing version number). Each
    sync reads every key (deletes stay exact) and the whole rows only of those at or past the
    last committed cursor less `lookback`; new keys and records being retried are read whatever
    their cursor. The exact full diff still runs every `full_diff_every` syncs and at least
    every `full_diff_interval`, and repairs what an untrustworthy cursor missed.
    """

    # Named as is in the SQL ebbtide adds around the model's, so a plain name: unquoted, it
    # reads alike on every warehouse (PostgreSQL folds it to lower case).
    cursor: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]
    # How far behind the last committed cursor to read again: rows written late, by
    # transactions that committed after the last sync read past them. A duration for a time
    # cursor (default 1h), a number for a numeric one (default 0).
    lookback: Duration | float | None = None
    full_diff_every: int = Field(default=24, ge=1)  # syncs
    full_diff_interval: Duration = "1d"


class GuardSpec(Spec):
    """Stop a sync before it sends anything when its change set looks like a broken model."""

    max_deletes: int | None = Field(default=None, ge=0)
    max_delete_pct: float | None = Field(default=None, ge=0, le=100)
    max_change_pct: float | None = Field(default=None, ge=0)
    # How long the delete guard remembers the largest size the destination had.
    delete_window: Duration = "7d"

    @property
    def delete_window_td(self) -> timedelta:
        return duration(self.delete_window)


class FieldType(StrEnum):
    """What a destination field takes; values are converted to it, or the mapping is refused."""

    ANY = "any"
    STRING = "string"
    NUMBER = "number"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    DATETIME = "datetime"
    DATE = "date"
    OBJECT = "object"
    ARRAY = "array"


class DeclaredField(Spec):
    """A field a destination accepts, as its options declare it.

    `properties` lists what an object accepts, or what each item of an array of objects does.
    """

    name: str
    type: FieldType = FieldType.ANY
    required: bool = False
    properties: list[DeclaredField] | None = None


class DecimalsAs(StrEnum):
    """How decimals travel in JSON: both keep every digit the model has."""

    NUMBER = "number"
    STRING = "string"


_SOURCE_KINDS = ("column", "value", "object", "array")


class PropertySource(Spec):
    """Where one property of a customized object or array item comes from.

    Written as a name (a property of the object, or of each item: `path`), or as
    `{column: …}` (a model column or dotted path, for objects) or `{value: …}` (static).
    """

    path: str | None = None
    column: str | None = None
    value: Any = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_source(self) -> PropertySource:
        given = [k for k in ("path", "column", "value") if k in self.model_fields_set]
        if len(given) != 1:
            raise ValueError("a property comes from a name, {column: …} or {value: …}")
        return self

    @property
    def describe(self) -> str:
        if self.path is not None:
            return self.path
        if self.column is not None:
            return f"column {self.column}"
        return f"value {self.value!r}"


class FieldSource(Spec):
    """Where a destination field's value comes from, as written under `fields:`.

    `email: email` (a column), `city: address.city` (a dotted path into an object column),
    `{value: pro}`, `{object: product}`, `{object: product, properties: {…}}`,
    `{properties: {…}}` (an object of model columns), `{array: products}` or
    `{array: products, properties: {…}}`.
    """

    column: str | None = None
    value: Any = None
    object: str | None = None
    array: str | None = None
    properties: dict[str, PropertySource] | None = Field(default=None, min_length=1)
    skip_nulls: bool = False  # leave the field out of the payload when its value is null
    decimals: DecimalsAs = DecimalsAs.NUMBER

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        return {"column": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_source(self) -> FieldSource:
        given = [k for k in _SOURCE_KINDS if k in self.model_fields_set]
        if not given and self.properties is not None:
            return self  # an object built from the model's columns, property by property
        if len(given) != 1:
            raise ValueError(
                "a field comes from exactly one of column, value, object or array"
                + (f" (found {', '.join(given)})" if given else "")
            )
        if self.properties is not None and self.kind not in ("object", "array"):
            raise ValueError("properties customize an object or an array: add object: or array:")
        if self.kind == "array" and self.properties:
            static = [n for n, p in self.properties.items() if p.path is None]
            if static:
                raise ValueError(f"array item property {static[0]!r}: name a property of each item")
        return self

    @property
    def kind(self) -> str:
        """column, value, object or array (an object of columns is an object too)."""
        return next((k for k in _SOURCE_KINDS if k in self.model_fields_set), "object")

    @property
    def reference(self) -> str | None:
        """The column or path the field reads; None for a static value."""
        return self.column or self.object or self.array

    @property
    def describe(self) -> str:
        """The source as a person wrote it, for messages."""
        if self.kind == "value":
            return f"value {self.value!r}"
        if self.reference is None:
            return "an object of model columns"
        return f"{'model column' if self.kind == 'column' else self.kind} {self.reference!r}"


class MappingSpec(Spec):
    """A model sent to a destination action."""

    model: str
    destination: str
    action: str
    mode: SyncMode = SyncMode.UPSERT
    # Where the diff runs: a DuckDB snapshot beside the workspace, or inside the warehouse
    # (PostgreSQL, MySQL/MariaDB), so that only the changed rows leave it.
    diff: Literal["local", "warehouse"] = "local"
    # How the diff finds what changed: every row's hash (the default), or past a cursor.
    change_detection: ChangeDetectionSpec | None = None
    fields: Annotated[dict[str, FieldSource], Field(min_length=1)]
    schedule: str = "manual"
    # The zone a cron schedule's wall-clock times are read in (`0 2 * * *` at 02:00 Paris time).
    timezone: str | None = None
    enabled: bool = True
    retry: RetrySpec = Field(default_factory=RetrySpec)
    guards: GuardSpec | None = None
    # Destination fields whose values never appear in stored payloads or messages.
    sensitive: list[str] = Field(default_factory=list)
    # Alert on a partial success only when at least this share of the records sent failed.
    alert_min_failed_pct: float = Field(default=0.0, ge=0, le=100)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        return check_schedule(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        check_timezone(value)
        if value != value.strip():
            raise ValueError(f"{value!r} is not a time zone: remove the spaces")
        return value

    @model_validator(mode="after")
    def _timezone_for_cron(self) -> MappingSpec:
        if self.timezone is not None and (
            self.schedule == "manual" or parse_interval(self.schedule) is not None
        ):
            raise ValueError(
                f"timezone applies to cron schedules only: {self.schedule!r} does not read"
                ' the clock (use a cron expression such as "0 2 * * *" to run at a time of day)'
            )
        return self

    @model_validator(mode="after")
    def _cursor_with_local_diff(self) -> MappingSpec:
        if self.change_detection is not None and self.diff == "warehouse":
            raise ValueError(
                "change_detection applies to the local diff: with `diff: warehouse` only the"
                " changed rows leave the warehouse already; remove one of the two"
            )
        return self

    @property
    def schedule_timezone(self) -> str:
        """The zone the schedule is read in: UTC unless `timezone:` says otherwise."""
        return self.timezone or "UTC"


class JournalsSpec(Spec):
    """`journals: {keep_days: 30}`: how long the records each run sent are kept for replays."""

    keep_days: float = Field(default=30.0, gt=0)


_CREDENTIAL_KEYS = frozenset(
    {"aws_access_key_id", "aws_secret_access_key", "aws_session_token", "access_key",
     "secret_key", "secret_access_key", "session_token", "credentials", "password", "token"}
)  # fmt: skip


class SnapshotsSpec(Spec):
    """`snapshots: {url: s3://bucket/prefix}`: where mappings' snapshots and journals are kept
    so that every worker reads them (an object store, or a shared folder: `file:///path` or a
    plain path). Credentials come from the standard AWS environment variables, never from here.
    """

    url: str
    endpoint_url: str | None = None  # an S3-compatible server (MinIO, Ceph …)
    region: str | None = None
    keep_versions: int = Field(default=3, ge=1, le=100)  # older versions are deleted

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if str(key).lower() in _CREDENTIAL_KEYS:
                    raise ValueError(
                        f"{key!r}: credentials never go in ebbtide.yml; the object store's come"
                        " from the standard AWS environment variables (AWS_ACCESS_KEY_ID,"
                        " AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, or AWS_PROFILE)"
                    )
        return data

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        scheme, sep, rest = url.partition("://")
        if not sep:
            if not url.strip():
                raise ValueError("the snapshots url is empty")
            return url  # a plain path: a shared folder
        if "@" in rest.split("/", 1)[0]:
            raise ValueError("the snapshots url must not hold credentials")
        if scheme == "s3":
            if not rest.split("/", 1)[0]:
                raise ValueError(f"{url!r} names no bucket: write s3://bucket/prefix")
            return url
        if scheme == "file":
            if not rest.startswith("/"):
                raise ValueError(f"{url!r}: a file URL needs an absolute path (file:///path)")
            return url
        raise ValueError(
            f"{url!r}: snapshots are kept on s3://bucket/prefix, file:///path or a plain path"
        )

    @field_validator("endpoint_url")
    @classmethod
    def _plain_endpoint(cls, url: str | None) -> str | None:
        if url is not None:
            scheme, sep, rest = url.partition("://")
            if scheme not in ("http", "https") or not sep:
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
            if "@" in rest.split("/", 1)[0]:
                raise ValueError("the endpoint URL must not hold credentials")
        return url


class WorkspaceSpec(Spec):
    """The whole of `ebbtide.yml`; sources and destinations are checked by their adapters.

    Names are checked here too, so a workspace built in Python cannot name a path either.
    """

    state: str = DEFAULT_STATE_URL
    journals: JournalsSpec = Field(default_factory=JournalsSpec)
    snapshots: SnapshotsSpec | None = None  # None: the workspace's own `.ebbtide/` folder
    alerts: AlertsSpec = Field(default_factory=AlertsSpec)
    sources: dict[Name, dict[str, Any]] = Field(default_factory=dict)
    models: dict[Name, ModelSpec] = Field(default_factory=dict)
    destinations: dict[Name, dict[str, Any]] = Field(default_factory=dict)
    mappings: dict[Name, MappingSpec] = Field(default_factory=dict)


class AdapterConfig(BaseModel):
    """Base of every source's and destination's options."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str


class SourceConfig(AdapterConfig):
    """Options every source shares."""


class RateLimitSpec(Spec):
    """`rate_limit: {requests: 100, per: 10s}`: at most `requests` in any `per` window."""

    requests: int = Field(ge=1)
    per: Duration = "1s"

    @property
    def per_s(self) -> float:
        return duration(self.per).total_seconds()


class DestinationConfig(AdapterConfig):
    """Options every destination shares; the engine applies them, not the destination."""

    # Settings whose values are credentials: masked wherever they could appear (logs, errors,
    # sample payloads), and named by the recommended action of an `auth` failure. A subclass
    # lists its own; a value in a dict setting (headers) is masked value by value.
    secret_settings: ClassVar[tuple[str, ...]] = ()

    batch_size: int = Field(default=500, ge=1, le=100_000)
    concurrency: int = Field(default=4, ge=1, le=64)
    rate_limit: RateLimitSpec | None = None
    max_record_bytes: int | None = Field(default=None, ge=1)
    # The records of one request together (their JSON) stay under this: a batch is sent in
    # as many requests as it takes. A destination with a per-request byte limit sets it.
    max_request_bytes: int | None = Field(default=None, ge=1)

    def secret_values(self) -> list[str]:
        """The values of the settings `secret_settings` names, for the redactor."""
        values: list[str] = []
        for name in self.secret_settings:
            value = getattr(self, name, None)
            if isinstance(value, dict):
                values += [str(v) for v in value.values() if v]
            elif value is not None and str(value):
                values.append(str(value))
        return values
