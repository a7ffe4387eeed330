"""Guards against runaway syncs: an empty table or a bad join must not wipe a CRM.

The delete guard measures what the destination would lose against a reference size that
remembers: the largest size the destination had at the start of a run within the window
(7 days by default) and since the last forced run or reset, or its size now if larger. A
model that shrinks a little per run is stopped once the losses add up, at any size.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ebbtide.config.models import GuardSpec, SyncMode
from ebbtide.errors import EbbtideError
from ebbtide.ports import ChangeCounts, Operation
from ebbtide.values import PastSize

# Mirror mappings delete for real: unless told otherwise, refuse to lose more than half of
# what the destination has (or recently had), however few records that is.
DEFAULT_MIRROR_DELETE_PCT = 50.0
# max_change_pct compares changes with the destination's size; adding 5 records to 2 is no
# sign of a broken model, so it waits for a size where a share means something.
MIN_RECORDS_FOR_CHANGE_PCT = 100
DEFAULT_DELETE_WINDOW = timedelta(days=7)


class GuardTripped(EbbtideError):
    """The change set exceeds a guard; nothing was sent."""


@dataclass(frozen=True)
class Guards:
    max_deletes: int | None = None
    max_delete_pct: float | None = None
    max_change_pct: float | None = None
    delete_window: timedelta = DEFAULT_DELETE_WINDOW

    @classmethod
    def for_mapping(cls, spec: GuardSpec | None, mode: SyncMode) -> Guards:
        spec = spec or GuardSpec()
        pct = spec.max_delete_pct
        if pct is None and mode is SyncMode.MIRROR:
            pct = DEFAULT_MIRROR_DELETE_PCT  # `max_delete_pct: 100` turns it off
        return cls(spec.max_deletes, pct, spec.max_change_pct, spec.delete_window_td)

    def tripped(
        self,
        changes: ChangeCounts,
        snapshot_size: int,
        sent: frozenset[Operation],
        past: PastSize | None = None,
    ) -> str | None:
        """Why this change set must not be sent, or None. Only changes that are sent count.

        `past` is the largest size the destination had in the window, if any run recorded one.
        """
        deletes = changes.deleted if Operation.DELETED in sent else 0
        if self.max_deletes is not None and deletes > self.max_deletes:
            limit = self.max_deletes
            return f"max_deletes: the sync would delete {deletes:,} records (limit {limit:,})"
        if deletes and self.max_delete_pct is not None:
            tripped = self._delete_pct(deletes, snapshot_size, past)
            if tripped:
                return tripped
        return self._change_pct(sum(changes.of(op) for op in sent), snapshot_size)

    def _delete_pct(self, deletes: int, size: int, past: PastSize | None) -> str | None:
        """Trips when the records left would be fewer than (100 - limit)% of the reference."""
        assert self.max_delete_pct is not None
        reference = past if past is not None and past.size > size else None
        reference_size = reference.size if reference else size
        lost = reference_size - (size - deletes)
        lost_pct = 100.0 * lost / reference_size
        if lost_pct <= self.max_delete_pct:
            return None
        limit = f"limit {self.max_delete_pct:g}%"
        if reference is None:
            return (
                f"max_delete_pct: the sync would delete {deletes:,} of {size:,} records"
                f" ({lost_pct:.1f}%, {limit})"
            )
        return (
            f"max_delete_pct: the sync would delete {deletes:,} of {size:,} records, leaving"
            f" {size - deletes:,} of the {reference.size:,} the destination had"
            f" {reference.describe()}: {lost_pct:.1f}% lost across runs ({limit}). A forced"
            " run or a reset becomes the new reference"
        )

    def _change_pct(self, changed: int, size: int) -> str | None:
        if self.max_change_pct is None or size < MIN_RECORDS_FOR_CHANGE_PCT:
            return None
        change_pct = 100.0 * changed / size
        if change_pct <= self.max_change_pct:
            return None
        return (
            f"max_change_pct: the sync would change {changed:,} records against"
            f" {size:,} synced ({change_pct:.1f}%, limit {self.max_change_pct:g}%)"
        )
