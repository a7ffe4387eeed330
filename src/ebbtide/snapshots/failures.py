"""What went wrong with ebbtide's own files, said as a person can act on it.

DuckDB, Arrow and the operating system report a full disk, a damaged file or an interrupted
query each in their own words; the sync service asks here what such an error means instead of
printing it as an internal error.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from pathlib import Path

from ebbtide.errors import DiskFullError, EbbtideError, SnapshotDamagedError, StorageError

_DISK_FULL = ("no space left on device", "database or disk is full", "disk quota exceeded")
_READ_ONLY = ("read-only file system", "attempt to write a readonly database")
# DuckDB's words for a database file that is not what it wrote: cut short, or overwritten.
_DAMAGED = (
    "corrupt database file",
    "could not read enough bytes",
    "not a valid duckdb database file",
    "does not match stored checksum",
)
_LOCK_CONFLICT = ("could not set lock", "conflicting lock")


def is_lock_conflict(error: BaseException) -> bool:
    """DuckDB refused to open a file another process holds: waiting may help."""
    return any(words in str(error).lower() for words in _LOCK_CONFLICT)


def lock_holder(error: BaseException) -> str:
    """` (pid 812)` when DuckDB said which process holds the file, else nothing."""
    found = re.search(r"\(PID (\d+)\)", str(error))
    return f" (pid {found[1]})" if found else ""


def is_damage(error: BaseException) -> bool:
    return any(words in str(error).lower() for words in _DAMAGED)


def was_interrupted(error: BaseException) -> bool:
    """A query stopped by a signal (SIGTERM, Ctrl-C) that DuckDB turned into its own error
    (an InterruptException, or a RuntimeError when it was reading an Arrow stream)."""
    import duckdb  # imported by the run that failed already; `ebbtide runs list` needs none

    return any(
        isinstance(e, duckdb.InterruptException | KeyboardInterrupt)
        or "query interrupted" in str(e).lower()
        for e in _chain(error)
    )


def damaged_snapshot(mapping: str, file: Path, error: BaseException) -> SnapshotDamagedError:
    return SnapshotDamagedError(
        f"the snapshot of mapping {mapping!r} ({file}) is damaged: {_first_line(error)}."
        f" Nothing was sent. Reset the mapping (`ebbtide reset {mapping}`): its next sync"
        " then sends the whole model and builds a new snapshot."
    )


def storage_failure(error: BaseException, state_dir: Path, mapping: str) -> EbbtideError | None:
    """The clear error `error` stands for when ebbtide's own storage failed, else None."""
    import duckdb

    for cause in _chain(error):
        text = str(cause).lower()
        if _errno(cause) in (errno.ENOSPC, errno.EDQUOT) or any(w in text for w in _DISK_FULL):
            return DiskFullError(
                f"out of disk space under {state_dir} ({_line_with(cause, _DISK_FULL)}). This run's"
                " scratch files were removed and nothing it did not deliver was recorded as"
                " delivered; free some space there and run the sync again."
            )
        if _errno(cause) == errno.EROFS or any(words in text for words in _READ_ONLY):
            return StorageError(
                f"{state_dir} is read-only ({_line_with(cause, _READ_ONLY)}): a sync writes its"
                " snapshot, journals and history there. Make it writable and run the sync"
                " again."
            )
        if isinstance(cause, duckdb.Error) and is_damage(cause):
            return damaged_snapshot(mapping, state_dir / "snapshots" / f"{mapping}.duckdb", cause)
    return None


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _errno(error: BaseException) -> int | None:
    return error.errno if isinstance(error, OSError) else None


def _line_with(error: BaseException, words: tuple[str, ...]) -> str:
    """The line of a (multi-line) message that says what happened."""
    for line in str(error).splitlines():
        if any(w in line.lower() for w in words):
            return line.strip().rstrip(".")
    return _first_line(error)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(error).__name__
