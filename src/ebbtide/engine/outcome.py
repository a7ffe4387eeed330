"""The status a run's counts imply (the values themselves live in `ebbtide.values`)."""

from __future__ import annotations

from ebbtide.values import RunCounts, RunStatus


def status_of(counts: RunCounts, fatal: bool) -> RunStatus:
    """success: nothing failed; partial_success: some loaded, some failed; failed otherwise."""
    if fatal or (counts.failed and not counts.loaded):
        return RunStatus.FAILED
    if counts.failed:
        return RunStatus.PARTIAL_SUCCESS
    return RunStatus.SUCCESS
