"""A run's progress in the state store, where the API reads it, and its cancel requests.

Every run reports its phase and records done (at each phase, then at most every
`REPORT_EVERY_S` seconds), whoever started it: `serve`, the CLI or the Python API. The same
round trip reads back whether someone asked to cancel the run; it then stops at that batch,
as Ctrl-C would: recorded as cancelled, and the next sync sends the rest.
"""

from __future__ import annotations

import time

from ebbtide.engine.run import Phase, RunListener
from ebbtide.ports import ProgressBoard
from ebbtide.state.store import utcnow

REPORT_EVERY_S = 0.5


class CancelRequested(KeyboardInterrupt):
    """Someone asked, through the state store, for the run to stop."""


class ProgressReporter(RunListener):
    """Passes events on to `inner` and reports them to the state store."""

    def __init__(self, board: ProgressBoard, run_id: int, mapping: str, inner: RunListener) -> None:
        self.board, self.run_id, self.mapping, self.inner = board, run_id, mapping, inner
        self.phase_name = "starting"
        self.done = 0
        self.total: int | None = None
        self._last = 0.0

    def phase(self, phase: Phase, total: int | None = None) -> None:
        self.inner.phase(phase, total)
        self.phase_name, self.done, self.total = phase.value, 0, total
        cancel = self._report()
        # Everything was sent: committing what the destination accepted is the quickest way
        # to stop, and saves the next run re-reading the journals.
        if cancel and phase is not Phase.COMMIT:
            raise CancelRequested

    def advance(self, records: int) -> None:
        """After each batch: written at most every REPORT_EVERY_S, a cancel looked for
        every time (one indexed read), so the run stops at the batch after it was asked."""
        self.inner.advance(records)
        self.done += records
        if time.monotonic() - self._last >= REPORT_EVERY_S:
            cancel = self._report()
        else:
            cancel = self.board.cancelled_by(self.run_id) is not None
        if cancel:
            raise CancelRequested

    def _report(self) -> bool:
        self._last = time.monotonic()
        return self.board.report(
            self.run_id, self.mapping, self.phase_name, self.done, self.total, utcnow()
        )
