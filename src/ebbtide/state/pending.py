"""Bookkeeping of failed records across syncs, in the state store (DESIGN invariant 6)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ebbtide.state.schema import pending_failures, run_failures
from ebbtide.values import FailedRecord, FailureStatus, PendingFailure, RetryOutcome

_CHUNK = 500


class PendingFailures:
    """Reads and settles the `pending_failures` table."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def pending(self, mapping: str) -> dict[str, PendingFailure]:
        """Records still being retried for `mapping`."""
        query = sa.select(
            pending_failures.c.record_key,
            pending_failures.c.first_failed_at,
            pending_failures.c.failed_syncs,
        ).where(
            pending_failures.c.mapping == mapping,
            pending_failures.c.status == FailureStatus.PENDING.value,
        )
        with self.engine.connect() as conn:
            return {
                row.record_key: PendingFailure(
                    row.record_key, row.first_failed_at, row.failed_syncs
                )
                for row in conn.execute(query)
            }

    def listed(
        self,
        mapping: str,
        statuses: Sequence[FailureStatus],
        limit: int,
        *,
        error_class: str | None = None,
        key_contains: str | None = None,
        keys: Sequence[str] | None = None,
    ) -> list[FailedRecord]:
        query = (
            sa.select(pending_failures)
            .where(
                pending_failures.c.mapping == mapping,
                pending_failures.c.status.in_([s.value for s in statuses]),
            )
            .order_by(pending_failures.c.first_failed_at, pending_failures.c.record_key)
            .limit(limit)
        )
        if error_class is not None:
            query = query.where(pending_failures.c.error_class == error_class)
        if keys is not None:
            query = query.where(pending_failures.c.record_key.in_(list(keys)))
        if key_contains:
            query = query.where(
                pending_failures.c.record_key.contains(key_contains, autoescape=True)
            )
        with self.engine.connect() as conn:
            return [_failed_record(row) for row in conn.execute(query)]

    def settle(self, mapping: str, run_id: int, outcome: RetryOutcome, now: datetime) -> None:
        """Open or bump a pending entry for each failure of the run, then close the others."""
        with self.engine.begin() as conn:
            failures = conn.execute(
                sa.select(run_failures).where(run_failures.c.run_id == run_id)
            ).all()
            for chunk in _chunks([f.record_key for f in failures]):
                known = _existing(conn, mapping, chunk)
                for failure in (f for f in failures if f.record_key in set(chunk)):
                    self._record(conn, mapping, run_id, failure, known.get(failure.record_key), now)
            for status, keys in (
                (FailureStatus.RESOLVED, outcome.resolved),
                (FailureStatus.OBSOLETE, outcome.obsolete),
                (FailureStatus.EXPIRED, outcome.expired),
            ):
                for chunk in _chunks(keys):
                    conn.execute(
                        pending_failures.update()
                        .where(
                            pending_failures.c.mapping == mapping,
                            pending_failures.c.record_key.in_(chunk),
                        )
                        .values(status=status.value, closed_at=now)
                    )

    def close_all(self, mapping: str, status: FailureStatus, now: datetime) -> int:
        """Close every pending record of a mapping (a reset)."""
        with self.engine.begin() as conn:
            return conn.execute(
                pending_failures.update()
                .where(
                    pending_failures.c.mapping == mapping,
                    pending_failures.c.status == FailureStatus.PENDING.value,
                )
                .values(status=status.value, closed_at=now)
            ).rowcount

    @staticmethod
    def _record(
        conn: sa.Connection, mapping: str, run_id: int, failure: Any, known: Any, now: datetime
    ) -> None:
        error = {
            "operation": failure.operation,
            "error_class": failure.error_class,
            "code": failure.code,
            "http_status": failure.http_status,
            "message": failure.message,
            "payload": failure.payload,
            "last_failed_at": now,
            "last_run_id": run_id,
        }
        if known is None:
            conn.execute(
                pending_failures.insert().values(
                    mapping=mapping,
                    record_key=failure.record_key,
                    status=FailureStatus.PENDING.value,
                    first_failed_at=now,
                    failed_syncs=1,
                    **error,
                )
            )
            return
        still_pending = known.status == FailureStatus.PENDING.value
        conn.execute(
            pending_failures.update()
            .where(
                pending_failures.c.mapping == mapping,
                pending_failures.c.record_key == failure.record_key,
            )
            .values(
                status=FailureStatus.PENDING.value,
                first_failed_at=known.first_failed_at if still_pending else now,
                failed_syncs=known.failed_syncs + 1 if still_pending else 1,
                closed_at=None,
                **error,
            )
        )


def _existing(conn: sa.Connection, mapping: str, keys: list[str]) -> dict[str, Any]:
    rows = conn.execute(
        sa.select(pending_failures).where(
            pending_failures.c.mapping == mapping, pending_failures.c.record_key.in_(keys)
        )
    )
    return {row.record_key: row for row in rows}


def _chunks(keys: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(keys), _CHUNK):
        yield list(keys[start : start + _CHUNK])


def _failed_record(row: Any) -> FailedRecord:
    return FailedRecord(
        key=row.record_key,
        status=FailureStatus(row.status),
        operation=row.operation,
        first_failed_at=row.first_failed_at,
        last_failed_at=row.last_failed_at,
        failed_syncs=row.failed_syncs,
        last_run_id=row.last_run_id,
        error_class=row.error_class,
        code=row.code,
        http_status=row.http_status,
        message=row.message,
        payload=row.payload,
    )
