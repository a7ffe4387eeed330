"""The state store's ledger of runs: what each found the destination holding, and what each
delivered even if it died before finishing.

The delete guard reads the first; the history of an `interrupted` run shows the second.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from ebbtide.ports import ChangeCounts
from ebbtide.state.schema import run_failures, runs
from ebbtide.values import PastSize, RunCounts, RunStatus, Trigger


class RunLedger:
    """Reads and writes `runs.snapshot_size`, and the loaded counts of runs that die."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def record_size(self, run_id: int, size: int) -> None:
        """The records the destination had when this run started; written at once, so a run
        that is killed later still counts towards the delete guard's reference."""
        with self.engine.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(snapshot_size=size))

    def largest_recent(
        self, mapping: str, window: timedelta, before_run: int | None = None
    ) -> PastSize | None:
        """The largest size recorded by runs (before `before_run`, if given) that started
        within `window` and after the last forced run or reset (those re-base the reference)."""
        earlier = runs.c.mapping == mapping
        if before_run is not None:
            earlier = sa.and_(earlier, runs.c.id < before_run)
        with self.engine.connect() as conn:
            rebased = conn.execute(
                sa.select(sa.func.max(runs.c.id)).where(
                    earlier, sa.or_(runs.c.forced, runs.c.trigger == Trigger.RESET.value)
                )
            ).scalar()
            row = conn.execute(
                sa.select(runs.c.snapshot_size, runs.c.id, runs.c.started_at)
                .where(
                    earlier,
                    runs.c.id > (rebased or 0),
                    runs.c.started_at >= datetime.now(UTC) - window,
                    runs.c.snapshot_size.is_not(None),
                )
                .order_by(runs.c.snapshot_size.desc(), runs.c.id.desc())
                .limit(1)
            ).first()
        return PastSize(int(row[0]), int(row[1]), row[2]) if row is not None else None

    def record_loaded(self, run_id: int, counts: RunCounts) -> None:
        """A run's loaded counts before its commit: a run killed once its snapshot commit
        has absorbed its journal still shows what it delivered. A run taken over meanwhile
        (paused past its lease) is fenced: its record keeps what the take-over credited."""
        loaded = ChangeCounts(counts.loaded_new, counts.loaded_updated, counts.loaded_deleted)
        with self.engine.begin() as conn:
            _set_loaded(conn, run_id, RunStatus.RUNNING, loaded)

    def record_acknowledged(self, acknowledged: dict[int, ChangeCounts]) -> None:
        """What dead runs' journals show the destination accepted, as their loaded counts.

        Only `interrupted` runs are written: a run that finished counted its own.
        """
        if not acknowledged:
            return
        with self.engine.begin() as conn:
            for run_id, counts in acknowledged.items():
                _set_loaded(conn, run_id, RunStatus.INTERRUPTED, counts)


def _set_loaded(conn: sa.Connection, run_id: int, only_if: RunStatus, loaded: ChangeCounts) -> None:
    """A run's loaded counts, written only while it has the status that allows it."""
    conn.execute(
        runs.update()
        .where(runs.c.id == run_id, runs.c.status == only_if.value)
        .values(
            loaded_new=loaded.added,
            loaded_updated=loaded.updated,
            loaded_deleted=loaded.deleted,
        )
    )


def failed_counts(conn: sa.Connection, run_id: int) -> dict[str, object]:
    """The failures a run recorded record by record, as the run's failed counts."""
    rows = conn.execute(
        sa.select(run_failures.c.error_class, sa.func.count())
        .where(run_failures.c.run_id == run_id)
        .group_by(run_failures.c.error_class)
    ).all()
    by_class: dict[str, int] = {str(error_class): int(n) for error_class, n in rows}
    return {"failed": sum(by_class.values()), "failed_by_class": by_class}
