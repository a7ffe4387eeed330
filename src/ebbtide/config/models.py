"""The shape of `ebbtide.yml`: a public contract that may grow, not change."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from ebbtide.config.schedule import check_schedule, parse_interval

DEFAULT_STATE_URL = "sqlite:///.ebbtide/state.db"


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


class GuardSpec(Spec):
    """Stop a sync before it sends anything when its change set looks like a broken model."""

    max_deletes: int | None = Field(default=None, ge=0)
    max_delete_pct: float | None = Field(default=None, ge=0, le=100)
    max_change_pct: float | None = Field(default=None, ge=0)


class MappingSpec(Spec):
    """A model sent to a destination action."""

    model: str
    destination: str
    action: str
    mode: SyncMode = SyncMode.UPSERT
    fields: Annotated[dict[str, str], Field(min_length=1)]
    schedule: str = "manual"
    enabled: bool = True
    retry: RetrySpec = Field(default_factory=RetrySpec)
    guards: GuardSpec | None = None
    # Destination fields whose values never appear in stored payloads or messages.
    sensitive: list[str] = Field(default_factory=list)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        return check_schedule(value)


class WorkspaceSpec(Spec):
    """The whole of `ebbtide.yml`; sources and destinations are checked by their adapters."""

    state: str = DEFAULT_STATE_URL
    sources: dict[str, dict[str, Any]] = Field(default_factory=dict)
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    destinations: dict[str, dict[str, Any]] = Field(default_factory=dict)
    mappings: dict[str, MappingSpec] = Field(default_factory=dict)


class AdapterConfig(BaseModel):
    """Base of every source's and destination's options."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str


class SourceConfig(AdapterConfig):
    """Options every source shares."""


class RateLimitSpec(Spec):
    """`rate_limit: {requests: 100, per: 10s}`: at most `requests` in any `per` window."""

    requests: int = Field(ge=1)
    per: str = "1s"

    @field_validator("per")
    @classmethod
    def _per(cls, value: str) -> str:
        if parse_interval(value) is None:
            raise ValueError(f"{value!r} is not a duration: use e.g. 1s, 10s, 1m")
        return value

    @property
    def per_s(self) -> float:
        interval = parse_interval(self.per)
        assert interval is not None
        return interval.total_seconds()


class DestinationConfig(AdapterConfig):
    """Options every destination shares; the engine applies them, not the destination."""

    batch_size: int = Field(default=500, ge=1, le=100_000)
    concurrency: int = Field(default=4, ge=1, le=64)
    rate_limit: RateLimitSpec | None = None
    max_record_bytes: int | None = Field(default=None, ge=1)
