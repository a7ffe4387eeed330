"""What people did, and who: the `actions` table (sync now, pause, reset, replay, cancel, …)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ebbtide.state.schema import actions


@dataclass(frozen=True)
class Action:
    id: int
    at: datetime
    actor: str | None
    action: str
    mapping: str | None
    run_id: int | None
    detail: str | None


class ActionLog:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def record(
        self,
        at: datetime,
        actor: str | None,
        action: str,
        mapping: str | None = None,
        run_id: int | None = None,
        detail: str | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                actions.insert().values(
                    at=at, actor=actor, action=action, mapping=mapping, run_id=run_id, detail=detail
                )
            )

    def listed(
        self, mapping: str | None = None, limit: int = 50, before: int | None = None
    ) -> list[Action]:
        """Newest first; `before` an id for the next page."""
        query = sa.select(actions).order_by(actions.c.id.desc()).limit(limit)
        if mapping is not None:
            query = query.where(actions.c.mapping == mapping)
        if before is not None:
            query = query.where(actions.c.id < before)
        with self.engine.connect() as conn:
            return [_action(row) for row in conn.execute(query)]


def _action(row: Any) -> Action:
    return Action(row.id, row.at, row.actor, row.action, row.mapping, row.run_id, row.detail)
