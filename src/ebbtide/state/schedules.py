"""Due times and "sync now" requests in the state store, claimed with compare-and-set.

Any number of schedulers (threads, processes, machines) sharing one state store agree on who
starts a run without electing a leader: each reads a mapping's slot, then moves its due time
on with `UPDATE … WHERE mapping = ? AND version = ? AND due_at = ?`. One update matches the
row it read; every other finds the version moved on and changes nothing (rowcount 0). The same
holds for a request: the one that deletes the waiting row runs it. The mapping's lease stays
the final authority on one run at a time; these only keep schedulers from starting pointless
runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ebbtide.state.schema import leases, replay_requests, schedules, sync_requests
from ebbtide.values import DueSlot


@dataclass(frozen=True)
class SyncRequest:
    """A "sync now" waiting for a scheduler to start it."""

    mapping: str
    requested_at: datetime
    requested_by: str | None


@dataclass(frozen=True)
class ReplayRequest:
    """A replay of a past run waiting for a scheduler to start it."""

    id: int
    mapping: str
    run_id: int
    latest: bool
    only_failed: bool
    requested_at: datetime
    requested_by: str | None


class ScheduleBook:
    """Reads and advances the `schedules` and `sync_requests` tables."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # -- due times -------------------------------------------------------------------------

    def slots(self) -> dict[str, DueSlot]:
        """Every mapping's slot, by mapping."""
        with self.engine.connect() as conn:
            return {row.mapping: _slot(row) for row in conn.execute(sa.select(schedules))}

    def slot(self, mapping: str) -> DueSlot | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(schedules).where(schedules.c.mapping == mapping)).first()
        return _slot(row) if row is not None else None

    def add(self, mapping: str, schedule: str, timezone: str, due_at: datetime | None) -> bool:
        """A slot for a mapping seen for the first time; False when another scheduler (or a
        pause) created it first."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    schedules.insert().values(
                        mapping=mapping,
                        schedule=schedule,
                        timezone=timezone,
                        due_at=due_at,
                        paused=False,
                        version=0,
                    )
                )
        except sa.exc.IntegrityError:
            return False
        return True

    def replan(self, slot: DueSlot, schedule: str, timezone: str, due_at: datetime | None) -> bool:
        """A changed schedule's new due time, unless someone changed the slot meanwhile."""
        return self._swap(
            slot, schedule=schedule, timezone=timezone, due_at=due_at, version=slot.version + 1
        )

    def claim(self, slot: DueSlot, now: datetime, next_due: datetime | None, by: str) -> bool:
        """Take the due slot and move it on to `next_due`: True for exactly one claimer."""
        if slot.due_at is None or slot.due_at > now or slot.paused:
            return False
        with self.engine.begin() as conn:
            claimed = conn.execute(
                schedules.update()
                .where(
                    schedules.c.mapping == slot.mapping,
                    schedules.c.version == slot.version,
                    schedules.c.due_at == slot.due_at,
                    schedules.c.paused == sa.false(),
                )
                .values(
                    due_at=next_due,
                    version=slot.version + 1,
                    claimed_at=now,
                    claimed_by=by,
                )
            ).rowcount
        return bool(claimed == 1)

    def drop(self, mapping: str) -> None:
        """Forget a mapping removed from the workspace, with any request it had waiting."""
        with self.engine.begin() as conn:
            conn.execute(schedules.delete().where(schedules.c.mapping == mapping))
            conn.execute(sync_requests.delete().where(sync_requests.c.mapping == mapping))

    def set_paused(self, mapping: str, paused: bool) -> None:
        """Pause or resume a mapping's schedule, whatever its `enabled` says. A mapping no
        scheduler has seen yet gets a slot with no due time, computed when one sees it."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                schedules.update()
                .where(schedules.c.mapping == mapping)
                .values(paused=paused, version=schedules.c.version + 1)
            ).rowcount
        if changed == 0 and not self._created_paused(mapping, paused):
            self.set_paused(mapping, paused)  # created by a scheduler meanwhile: update it

    def _created_paused(self, mapping: str, paused: bool) -> bool:
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    schedules.insert().values(
                        mapping=mapping, schedule="", timezone="", paused=paused, version=0
                    )
                )
        except sa.exc.IntegrityError:
            return False
        return True

    def _swap(self, slot: DueSlot, **values: Any) -> bool:
        with self.engine.begin() as conn:
            swapped = conn.execute(
                schedules.update()
                .where(schedules.c.mapping == slot.mapping, schedules.c.version == slot.version)
                .values(**values)
            ).rowcount
        return bool(swapped == 1)

    def running_run(self, mapping: str) -> int | None:
        """The run holding the mapping's lease now, if any."""
        with self.engine.connect() as conn:
            run_id = conn.execute(
                sa.select(leases.c.run_id).where(leases.c.mapping == mapping)
            ).scalar()
        return int(run_id) if run_id is not None else None

    # -- sync requests ---------------------------------------------------------------------

    def request(self, mapping: str, now: datetime, by: str | None) -> tuple[bool, SyncRequest]:
        """Ask for a sync of `mapping`: (True, it) when queued, (False, the request already
        waiting) when merged into it."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sync_requests.insert().values(
                        mapping=mapping, requested_at=now, requested_by=by
                    )
                )
            return True, SyncRequest(mapping, now, by)
        except sa.exc.IntegrityError:
            waiting = self.waiting(mapping)
            if waiting is None:  # taken by a scheduler in between: ask again
                return self.request(mapping, now, by)
            return False, waiting

    def waiting(self, mapping: str) -> SyncRequest | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(sync_requests).where(sync_requests.c.mapping == mapping)
            ).first()
        return SyncRequest(row.mapping, row.requested_at, row.requested_by) if row else None

    def requests(self) -> list[SyncRequest]:
        """Requests waiting, oldest first."""
        query = sa.select(sync_requests).order_by(sync_requests.c.requested_at)
        with self.engine.connect() as conn:
            return [
                SyncRequest(row.mapping, row.requested_at, row.requested_by)
                for row in conn.execute(query)
            ]

    def take(self, request: SyncRequest) -> bool:
        """Take a waiting request to run it: True for exactly one taker."""
        with self.engine.begin() as conn:
            taken = conn.execute(
                sync_requests.delete().where(
                    sync_requests.c.mapping == request.mapping,
                    sync_requests.c.requested_at == request.requested_at,
                )
            ).rowcount
        return bool(taken == 1)

    def give_back(self, request: SyncRequest) -> None:
        """A taken request that could not start (its mapping was busy) waits again; merged
        into one that arrived meanwhile."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sync_requests.insert().values(
                        mapping=request.mapping,
                        requested_at=request.requested_at,
                        requested_by=request.requested_by,
                    )
                )
        except sa.exc.IntegrityError:
            pass  # another request waits already: it stands for this one too

    # -- replay requests -------------------------------------------------------------------

    def request_replay(
        self,
        mapping: str,
        run_id: int,
        latest: bool,
        only_failed: bool,
        now: datetime,
        by: str | None,
    ) -> ReplayRequest:
        values = {
            "mapping": mapping,
            "run_id": run_id,
            "latest": latest,
            "only_failed": only_failed,
            "requested_at": now,
            "requested_by": by,
        }
        with self.engine.begin() as conn:
            (request_id,) = conn.execute(
                replay_requests.insert().values(**values)
            ).inserted_primary_key or (0,)
        return ReplayRequest(int(request_id), mapping, run_id, latest, only_failed, now, by)

    def replays(self) -> list[ReplayRequest]:
        """Replays waiting, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(replay_requests).order_by(replay_requests.c.id))
            return [_replay(row) for row in rows]

    def take_replay(self, request: ReplayRequest) -> bool:
        """Take a waiting replay to run it: True for exactly one taker."""
        with self.engine.begin() as conn:
            taken = conn.execute(
                replay_requests.delete().where(replay_requests.c.id == request.id)
            ).rowcount
        return bool(taken == 1)

    def give_back_replay(self, request: ReplayRequest) -> None:
        """A taken replay that could not start (its mapping was busy) waits again."""
        with self.engine.begin() as conn:
            conn.execute(replay_requests.insert().values(**dataclasses.asdict(request)))


def _replay(row: Any) -> ReplayRequest:
    return ReplayRequest(
        id=row.id,
        mapping=row.mapping,
        run_id=row.run_id,
        latest=bool(row.latest),
        only_failed=bool(row.only_failed),
        requested_at=row.requested_at,
        requested_by=row.requested_by,
    )


def _slot(row: Any) -> DueSlot:
    return DueSlot(
        mapping=row.mapping,
        schedule=row.schedule,
        timezone=row.timezone,
        due_at=row.due_at,
        paused=bool(row.paused),
        version=int(row.version),
        claimed_at=row.claimed_at,
        claimed_by=row.claimed_by,
    )
