"""One error hierarchy: each error carries what a person needs to act on it.

The engine alone decides what happens next (retry, skip, stop) from the error's class.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorClass(StrEnum):
    """Why a record or a batch failed; the values are the words users see."""

    AUTH = "auth"
    PERMISSION = "permission"
    RATE_LIMITED = "rate_limited"
    VALIDATION = "validation"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    NETWORK = "network"
    MAPPING = "mapping"

    @property
    def retriable(self) -> bool:
        """Retried inside the run with backoff before it counts as failed."""
        return self in _RETRIABLE

    @property
    def fatal(self) -> bool:
        """Stops the whole run: sending the rest would fail the same way."""
        return self in _FATAL

    @property
    def recommended_action(self) -> str:
        return RECOMMENDED_ACTIONS[self]


_RETRIABLE = frozenset(
    {ErrorClass.RATE_LIMITED, ErrorClass.SERVER_ERROR, ErrorClass.TIMEOUT, ErrorClass.NETWORK}
)
_FATAL = frozenset({ErrorClass.AUTH, ErrorClass.PERMISSION})

RECOMMENDED_ACTIONS: dict[ErrorClass, str] = {
    ErrorClass.AUTH: "The destination rejected the credentials: update them in the destination's"
    " configuration (or the environment variable it reads) and run the sync again.",
    ErrorClass.PERMISSION: "The credentials are valid but lack permission for this action: grant"
    " the account access to the object or endpoint, then run the sync again.",
    ErrorClass.RATE_LIMITED: "The destination kept answering 429 after retries: lower the"
    " destination's concurrency or batch_size, or ask the vendor for a higher limit.",
    ErrorClass.VALIDATION: "The destination rejected the record's data: check the field named in"
    " the message against the model's column and fix the value in the warehouse or the mapping.",
    ErrorClass.NOT_FOUND: "The destination has no record or endpoint for this key: check the URL,"
    " or use mode upsert instead of update if the record must be created.",
    ErrorClass.CONFLICT: "The record conflicts with one that already exists: use mode upsert, or"
    " check for duplicate keys in the destination.",
    ErrorClass.PAYLOAD_TOO_LARGE: "The payload is larger than the destination accepts: lower"
    " batch_size, or map fewer or smaller fields.",
    ErrorClass.SERVER_ERROR: "The destination failed on its side after retries: check its status"
    " page; the records are retried on the next sync.",
    ErrorClass.TIMEOUT: "The destination did not answer in time after retries: check its health,"
    " or lower batch_size or concurrency.",
    ErrorClass.NETWORK: "The destination could not be reached after retries: check the URL, DNS"
    " and that the service is running.",
    ErrorClass.MAPPING: "The record does not fit the destination action's fields: fix the mapping"
    " or the column named in the message.",
}


class EbbtideError(Exception):
    """Base of every error ebbtide raises on purpose; its message is meant for a person."""

    exit_code = 1


class ConfigError(EbbtideError):
    """A workspace file is wrong: names the file, the line and the key path."""

    exit_code = 2

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None, path: str = ""
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.path = path
        super().__init__(self.describe())

    def describe(self) -> str:
        where = self.file or "workspace"
        if self.line is not None:
            where = f"{where}:{self.line}"
        at = f" {self.path}:" if self.path else ""
        return f"{where}:{at} {self.message}"


class ConfigErrors(EbbtideError):
    """Several configuration errors, reported together so one pass fixes them all."""

    exit_code = 2

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(e.describe() for e in errors))


class UsageError(EbbtideError):
    """The command names something that does not exist (a mapping, a run)."""

    exit_code = 2


class ConflictError(UsageError):
    """What was asked cannot be done in the state things are in (a run that is not running,
    a journal that was pruned): asking again later, or otherwise, may succeed."""


class SourceError(EbbtideError):
    """The source could not be read (connection, SQL error, unsupported type)."""


class ModelError(EbbtideError):
    """The model's rows break a rule checked before anything is sent (keys, columns)."""

    def __init__(self, message: str, samples: list[str] | None = None) -> None:
        self.samples = samples or []
        text = message
        if self.samples:
            text += " Samples: " + ", ".join(self.samples)
        super().__init__(text)


class MappingError(EbbtideError):
    """A mapping does not fit its model or its destination action.

    `path` is where in the mapping's YAML the fault is (`("fields", "email")`), so the
    workspace check can name the line.
    """

    exit_code = 2

    def __init__(self, message: str, path: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.path = path


class SnapshotMismatchError(EbbtideError):
    """The snapshot was taken with another primary key: syncing would delete and re-add all."""


class StorageError(EbbtideError):
    """ebbtide's own files or state store failed (unreachable, read-only, deleted, full).

    The machine is at fault, not the sync: fix it there and run the command again.
    """

    exit_code = 5


class DiskFullError(StorageError):
    """No space was left where ebbtide writes (scratch, journals, snapshots, state store)."""


class SnapshotDamagedError(EbbtideError):
    """A mapping's snapshot or journal file is truncated or corrupt: only a reset mends it."""

    exit_code = 6


class MappingBusyError(EbbtideError):
    """Another run holds the mapping's lease."""

    exit_code = 4


class LeaseLostError(EbbtideError):
    """This run's lease was taken over: it must not commit anything more."""


class RunCancelled(EbbtideError):
    """The run was asked to stop (SIGTERM, Ctrl-C)."""


@dataclass(eq=False)  # not frozen: raising sets __traceback__ on the instance
class DestinationError(EbbtideError):
    """A destination refused or failed a whole batch (or the connection to it)."""

    error_class: ErrorClass
    message: str
    code: str | None = None
    http_status: int | None = None
    retry_after: float | None = None

    def __str__(self) -> str:
        status = f" (HTTP {self.http_status})" if self.http_status else ""
        return f"{self.error_class}{status}: {self.message}"
