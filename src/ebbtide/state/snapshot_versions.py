"""Which version of each mapping's shared snapshot is current: the pointer every worker reads.

A run uploads its new snapshot under a name of its own, then makes it current here with
compare-and-set on the row's generation, in the same transaction as a check of its lease:
a run that lost its lease (or raced another publisher) leaves the pointer where it was, and
its upload is never read.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from ebbtide.errors import LeaseLostError
from ebbtide.ports import SnapshotPointer
from ebbtide.state.schema import leases, snapshot_versions
from ebbtide.values import Lease


class SnapshotVersions:
    """The current shared snapshot version per mapping (see `SnapshotPointerBook` in ports)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def current(self, mapping: str) -> SnapshotPointer:
        """The version to fetch; generation 0 and no version when none was ever published."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(snapshot_versions).where(snapshot_versions.c.mapping == mapping)
            ).first()
        if row is None:
            return SnapshotPointer(mapping, None, 0, 0)
        return SnapshotPointer(mapping, row.version, row.through_run, row.generation)

    def advance(
        self, lease: Lease, seen: SnapshotPointer, version: str | None, through_run: int
    ) -> SnapshotPointer:
        """Make `version` current, if the pointer is still `seen` and `lease` still holds.

        Raises LeaseLostError (nothing changed) otherwise: the run has no say any more.
        """
        now = datetime.now(UTC)
        values: dict[str, object] = {
            "version": version,
            "through_run": through_run,
            "generation": seen.generation + 1,
            "run_id": lease.run_id,
            "published_at": now,
        }
        with self.engine.begin() as conn:
            # The write comes first: on SQLite it takes the write lock, so no takeover of the
            # lease can slip in between; on PostgreSQL the lease row is locked below.
            if seen.generation == 0:
                moved = self._insert(conn, lease.mapping, values)
            else:
                moved = conn.execute(
                    snapshot_versions.update()
                    .where(
                        snapshot_versions.c.mapping == lease.mapping,
                        snapshot_versions.c.generation == seen.generation,
                    )
                    .values(**values)
                ).rowcount
            held = conn.execute(
                sa.select(leases.c.token)
                .where(leases.c.mapping == lease.mapping, leases.c.token == lease.token)
                .with_for_update()
            ).first()
            if held is None or moved != 1:  # leaving the block rolls the update back
                why = (
                    "lost its lease (another run took the mapping over)"
                    if held is None
                    else "found that another run published a snapshot version meanwhile"
                )
                raise LeaseLostError(
                    f"run {lease.run_id} {why}: it did not publish the snapshot of"
                    f" {lease.mapping!r} (version {version or 'empty'} was not made current);"
                    " the next run resends what this one delivered, if anything"
                )
        return SnapshotPointer(lease.mapping, version, through_run, seen.generation + 1)

    @staticmethod
    def _insert(conn: sa.Connection, mapping: str, values: dict[str, object]) -> int:
        """The first version of a mapping; 0 when another publisher inserted it first.

        ON CONFLICT rather than a savepoint: pysqlite commits a savepoint opened outside a
        transaction when it is released, which would keep the row whatever follows.
        """
        row = {"mapping": mapping, **values}
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            on_pg = pg_insert(snapshot_versions).values(row)
            on_pg = on_pg.on_conflict_do_nothing(index_elements=["mapping"])
            result = conn.execute(on_pg.returning(snapshot_versions.c.mapping))
        elif conn.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            on_sqlite = sqlite_insert(snapshot_versions).values(row)
            on_sqlite = on_sqlite.on_conflict_do_nothing(index_elements=["mapping"])
            result = conn.execute(on_sqlite.returning(snapshot_versions.c.mapping))
        else:
            plain = snapshot_versions.insert().values(row)
            result = conn.execute(plain.returning(snapshot_versions.c.mapping))
        return len(result.all())
