"""The typed shapes the history is read in: the CLI's `--json` and the API return these.

Each shape is defined once, here. Keys and value formats are a contract that scripts depend
on: keys may be added, never renamed or removed. Times are written as Python's `isoformat()`
writes them (`+00:00`, not pydantic's `Z`), as `--json` always has.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from ebbtide.state.alerts import Notification
from ebbtide.values import (
    FailedRecord,
    FailureGroup,
    FailureStatus,
    RecordFailure,
    RunRecord,
    RunStatus,
)

IsoTime = Annotated[datetime, PlainSerializer(lambda t: t.isoformat(), return_type=str)]


class View(BaseModel):
    model_config = ConfigDict(frozen=True)


class PhaseSeconds(View):
    """How long each phase of a run took; null for a phase it did not reach."""

    extract: float | None
    diff: float | None
    load: float | None
    commit: float | None


class RunView(View):
    """One run of the sync history (`runs list --json`)."""

    id: int
    mapping: str
    status: RunStatus
    trigger: str
    started_at: IsoTime
    finished_at: IsoTime | None
    duration_s: float | None
    extracted: int
    added: int
    updated: int
    deleted: int
    skipped: int  # changes the mapping's mode does not send
    loaded_new: int
    loaded_updated: int
    loaded_deleted: int
    failed: int
    failed_by_class: dict[str, int]
    retried: int  # records of this run that had failed in an earlier run
    phases_s: PhaseSeconds
    error: str | None
    actor: str | None
    replay_of: int | None
    after_reset: bool
    snapshot_size: int | None  # records the destination had when the run started
    forced: bool
    # How the changes were found: "full" (every row's hash), "cursor" (rows past the mapping's
    # change_detection cursor, every key), or "full: <why>" for a cursor mapping; null for a
    # replay or a run that stopped before.
    detection: str | None = None

    @classmethod
    def of(cls, run: RunRecord) -> RunView:
        return cls(
            id=run.id,
            mapping=run.mapping,
            status=run.status,
            trigger=run.trigger,
            started_at=run.started_at,
            finished_at=run.finished_at,
            duration_s=run.duration_s,
            extracted=run.extracted,
            added=run.added,
            updated=run.updated,
            deleted=run.deleted,
            skipped=run.skipped,
            loaded_new=run.loaded_new,
            loaded_updated=run.loaded_updated,
            loaded_deleted=run.loaded_deleted,
            failed=run.failed,
            failed_by_class=dict(run.failed_by_class),
            retried=run.retried,
            phases_s=PhaseSeconds(
                extract=run.extract_s, diff=run.diff_s, load=run.load_s, commit=run.commit_s
            ),
            error=run.error,
            actor=run.actor,
            replay_of=run.replay_of,
            after_reset=run.after_reset,
            snapshot_size=run.snapshot_size,
            forced=run.forced,
            detection=run.detection,
        )


class ErrorGroupView(View):
    """A run's failed records that share an error class and message."""

    error_class: str
    message: str
    count: int
    sample_keys: list[str]
    sample_payloads: list[str]  # masked as stored: secrets and sensitive fields never appear
    recommended_action: str

    @classmethod
    def of(cls, group: FailureGroup, action: str) -> ErrorGroupView:
        return cls(
            error_class=group.error_class,
            message=group.message,
            count=group.count,
            sample_keys=list(group.sample_keys),
            sample_payloads=list(group.sample_payloads),
            recommended_action=action,
        )


class RecordFailureView(View):
    """One record that failed in a run (`runs failed --json`)."""

    key: Any  # the primary key as JSON: a value, or a list for a composite key
    operation: str
    error_class: str
    code: str | None
    http_status: int | None
    message: str
    payload: str | None
    recommended_action: str
    key_text: str = Field(exclude=True)  # the key as stored, for tables

    @classmethod
    def of(cls, failure: RecordFailure, action: str) -> RecordFailureView:
        return cls(
            key=json.loads(failure.key) if failure.key else None,
            operation=failure.operation.value,
            error_class=failure.error_class.value,
            code=failure.code,
            http_status=failure.http_status,
            message=failure.message,
            payload=failure.payload,
            recommended_action=action,
            key_text=failure.key,
        )


class RunDetailsView(RunView):
    """One run with why its records failed (`runs show --json`)."""

    failure_groups: list[ErrorGroupView]
    failures: list[RecordFailureView]


class FailedRecordView(View):
    """A mapping's record pending retry or given up (`records failed --json`)."""

    key: Any
    status: FailureStatus
    operation: str
    first_failed_at: IsoTime
    last_failed_at: IsoTime
    failed_syncs: int
    last_run_id: int
    error_class: str
    code: str | None
    http_status: int | None
    message: str
    payload: str | None
    recommended_action: str
    key_text: str = Field(exclude=True)

    @classmethod
    def of(cls, record: FailedRecord, action: str) -> FailedRecordView:
        return cls(
            key=json.loads(record.key),
            status=record.status,
            operation=record.operation,
            first_failed_at=record.first_failed_at,
            last_failed_at=record.last_failed_at,
            failed_syncs=record.failed_syncs,
            last_run_id=record.last_run_id,
            error_class=record.error_class,
            code=record.code,
            http_status=record.http_status,
            message=record.message,
            payload=record.payload,
            recommended_action=action,
            key_text=record.key,
        )


class Health(StrEnum):
    """How a mapping is doing, from its last finished run."""

    HEALTHY = "healthy"  # it succeeded
    FAILING = "failing"  # it failed, partly failed, was interrupted or cancelled
    NEVER_RUN = "never_run"  # no run has finished yet


class MappingView(View):
    """A mapping as the workspace defines it, with how its syncs are going."""

    name: str
    model: str
    destination: str
    action: str
    mode: str
    schedule: str
    enabled: bool
    last_run: RunView | None  # the newest run, finished or not
    health: Health
    paused: bool = False  # paused from the API or `ebbtide pause`, whatever `enabled` says
    next_due_at: IsoTime | None = None  # None: manual, paused, disabled, or not yet scheduled


class KeyRunView(View):
    """One run that sent a record, and what became of it there."""

    run_id: int
    started_at: IsoTime
    trigger: str
    run_status: RunStatus
    operation: str
    outcome: str  # loaded, or failed
    error_class: str | None
    code: str | None
    message: str | None
    payload: str | None  # masked as stored; only kept for records that failed


class KeyHistoryView(View):
    """Every run that sent one record, newest first (`records history --json`)."""

    mapping: str
    key: Any
    runs: list[KeyRunView]
    pending: FailedRecordView | None  # its open failure, if it is being retried or gave up
    journals_kept_days: float  # runs older than this no longer show what they sent
    # Whether the destination holds the record now, as the mapping's snapshot knows it (the
    # destination accepted it and it was not deleted since); None when that cannot be known.
    in_destination: bool | None = None


class ProgressView(View):
    """How far a run has got (`GET /runs/{id}/progress`, streamed as Server-Sent Events)."""

    run_id: int
    mapping: str
    status: RunStatus
    phase: str | None  # extract, diff, load, commit; None once the run has ended
    done: int
    total: int | None
    updated_at: IsoTime | None
    cancel_requested_by: str | None


class ReplayPreviewView(View):
    """How many records each kind of replay of a run would resend (`GET /runs/{id}/replay`)."""

    run_id: int
    mapping: str
    as_sent: int  # every record, exactly as sent
    latest: int  # the same keys with the model's current data (keys gone from it are skipped)
    only_failed: int  # only the records that failed in the run


class ActionView(View):
    """Something a person (or a token) did, and who."""

    id: int
    at: IsoTime
    actor: str | None
    action: str
    mapping: str | None
    run_id: int | None
    detail: str | None


class SourceView(View):
    """A source, never its connection settings (they hold credentials)."""

    name: str
    type: str
    models: list[str]


class ModelView(View):
    name: str
    source: str
    primary_key: list[str]
    query: str  # table, sql or file: which one defines it
    description: str | None
    mappings: list[str]


class DestinationView(View):
    """A destination, never its credentials or URLs."""

    name: str
    type: str
    batch_size: int
    concurrency: int
    mappings: list[str]


class SubscriptionView(View):
    """Who hears about which syncs, and how (`alerts list --json`)."""

    id: str  # its number, or `ebbtide.yml` for one written there
    to: str
    statuses: list[str]
    mappings: list[str] | None
    channels: list[str]


class SyncPlanView(View):
    """What the next sync would send, from the real diff; nothing sent (`sync plan --json`)."""

    mapping: str
    mode: str
    extracted: int
    added: int
    updated: int
    deleted: int
    would_send: int
    operations_sent: list[str]
    samples: list[dict[str, Any]]
    guard_tripped: str | None  # the guard the sync would trip, if any


class ResetPlanView(View):
    """What a reset changes, for the person who confirms it."""

    mapping: str
    model: str
    destination: str
    model_rows: int  # what the next sync sends
    snapshot_records: int | None  # what ebbtide believes the destination has (None: damaged)
    pending_failures: int  # closed as `reset`
    explanation: str


class NotificationView(View):
    """An in-app notification of one person (`notifications --json`)."""

    id: int
    email: str
    run_id: int | None
    mapping: str
    event: str
    title: str
    body: str
    created_at: IsoTime
    read: bool

    @classmethod
    def of(cls, note: Notification) -> NotificationView:
        return cls(
            id=note.id,
            email=note.email,
            run_id=note.run_id,
            mapping=note.mapping,
            event=note.event,
            title=note.title,
            body=note.body,
            created_at=note.created_at,
            read=note.read_at is not None,
        )


class MappingFieldView(View):
    """A destination field of a mapping as configured (`fields:`); an object's or an array's
    customized properties are its children (`GET /mappings/{name}/fields`)."""

    name: str
    # column, value, object or array; a property: path (of the object or item), column, value
    kind: str
    source: str | None  # the column, path or property read; None for a static value
    value: Any = None  # a static value; None when the field is sensitive
    sensitive: bool = False  # its values never appear in stored payloads or messages
    skip_nulls: bool = False
    properties: list[MappingFieldView] = Field(default_factory=list)
