"""Which diff keeps each mapping's snapshot (`local` or `warehouse`), as the state store says."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from ebbtide.state.schema import snapshot_modes


class SnapshotModes:
    """Per mapping, the diff its snapshot belongs to; none before its first sync or a reset."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def get(self, mapping: str) -> str | None:
        with self.engine.connect() as conn:
            mode = conn.execute(
                sa.select(snapshot_modes.c.mode).where(snapshot_modes.c.mapping == mapping)
            ).scalar()
        return str(mode) if mode is not None else None

    def record(self, mapping: str, mode: str) -> None:
        """Set once: the first sync (or the first after a reset) decides."""
        with self.engine.begin() as conn:
            exists = conn.execute(
                sa.select(snapshot_modes.c.mode).where(snapshot_modes.c.mapping == mapping)
            ).first()
            if exists is None:
                conn.execute(
                    snapshot_modes.insert().values(
                        mapping=mapping, mode=mode, since=datetime.now(UTC)
                    )
                )

    def clear(self, mapping: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(snapshot_modes.delete().where(snapshot_modes.c.mapping == mapping))
