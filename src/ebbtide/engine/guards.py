"""Guards against runaway syncs: an empty table or a bad join must not wipe a CRM."""

from __future__ import annotations

from dataclasses import dataclass

from ebbtide.config.models import GuardSpec, SyncMode
from ebbtide.errors import EbbtideError
from ebbtide.ports import ChangeCounts, Operation

# Mirror mappings delete for real: unless told otherwise, refuse to delete more than half of
# what the destination has, once it has enough records for a share to mean something.
DEFAULT_MIRROR_DELETE_PCT = 50.0
MIN_RECORDS_FOR_PCT_GUARDS = 100


class GuardTripped(EbbtideError):
    """The change set exceeds a guard; nothing was sent."""


@dataclass(frozen=True)
class Guards:
    max_deletes: int | None = None
    max_delete_pct: float | None = None
    max_change_pct: float | None = None

    @classmethod
    def for_mapping(cls, spec: GuardSpec | None, mode: SyncMode) -> Guards:
        spec = spec or GuardSpec()
        pct = spec.max_delete_pct
        if pct is None and mode is SyncMode.MIRROR:
            pct = DEFAULT_MIRROR_DELETE_PCT  # `max_delete_pct: 100` turns it off
        return cls(spec.max_deletes, pct, spec.max_change_pct)

    def tripped(
        self, changes: ChangeCounts, snapshot_size: int, sent: frozenset[Operation]
    ) -> str | None:
        """Why this change set must not be sent, or None. Only changes that are sent count."""
        deletes = changes.deleted if Operation.DELETED in sent else 0
        changed = sum(changes.of(op) for op in sent)
        if self.max_deletes is not None and deletes > self.max_deletes:
            limit = self.max_deletes
            return f"max_deletes: the sync would delete {deletes:,} records (limit {limit:,})"
        if snapshot_size < MIN_RECORDS_FOR_PCT_GUARDS:
            return None
        delete_pct = 100.0 * deletes / snapshot_size
        if self.max_delete_pct is not None and delete_pct > self.max_delete_pct:
            return (
                f"max_delete_pct: the sync would delete {deletes:,} of {snapshot_size:,} records"
                f" ({delete_pct:.1f}%, limit {self.max_delete_pct:g}%)"
            )
        change_pct = 100.0 * changed / snapshot_size
        if self.max_change_pct is not None and change_pct > self.max_change_pct:
            return (
                f"max_change_pct: the sync would change {changed:,} records against"
                f" {snapshot_size:,} synced ({change_pct:.1f}%, limit {self.max_change_pct:g}%)"
            )
        return None
