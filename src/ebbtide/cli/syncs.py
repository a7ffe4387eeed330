"""Running several syncs from one command, and showing what each of them did."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.markup import escape

from ebbtide.cli import render
from ebbtide.cli.context import err, history, out
from ebbtide.enums import RunStatus
from ebbtide.errors import EbbtideError

if TYPE_CHECKING:
    from ebbtide.services.sync import SyncService
    from ebbtide.values import RunRecord

EXIT_FOR_STATUS = {
    RunStatus.SUCCESS: 0,
    RunStatus.PARTIAL_SUCCESS: 3,
    RunStatus.FAILED: 1,
    RunStatus.CANCELLED: 1,
    RunStatus.INTERRUPTED: 1,
    RunStatus.RUNNING: 1,
}
# Several syncs exit with the worst code, from least to most severe: success, partial success,
# busy (that mapping did not sync at all), failed, ebbtide's storage failed (disk full, state
# store unreachable), a damaged snapshot (needs a reset), bad usage or configuration.
RANK = {0: 0, 3: 1, 4: 2, 1: 3, 5: 4, 6: 5, 2: 6}


@dataclass
class SyncOutcome:
    """The runs of one command, and the mappings that could not run (busy, …) with why."""

    records: list[RunRecord] = field(default_factory=list)
    refused: list[tuple[str, EbbtideError]] = field(default_factory=list)
    current: str = ""  # the mapping syncing now

    def exit_code(self) -> int:
        codes = [EXIT_FOR_STATUS[r.status] for r in self.records]
        codes += [error.exit_code for _, error in self.refused]
        return max(codes, key=lambda code: RANK.get(code, len(RANK)), default=0)


def run_one(service: SyncService, name: str, force: bool, json_output: bool) -> RunRecord:
    """One sync, with a progress bar when a person watches the terminal."""
    if json_output or not sys.stderr.isatty():
        return service.run(name, force=force)
    from ebbtide.cli.progress import ProgressListener  # Rich's progress bars: only to show

    with ProgressListener(name, err) as listener:
        return service.run(name, listener=listener, force=force)


def show_syncs(service: SyncService, outcome: SyncOutcome, json_output: bool) -> None:
    """Every run's result, then each mapping that could not run and why."""
    from ebbtide.services.views import RunView

    if not outcome.records:
        pass  # no run started: the reasons below are all there is to say
    elif json_output:
        render.print_views(out, [RunView.of(r) for r in outcome.records])
    else:
        out.print(render.runs_table([RunView.of(r) for r in outcome.records], title="This sync"))
        for record in outcome.records:
            show_errors(service, record)
            if record.failed:
                out.print(f"Details: ebbtide runs show {record.id}")
    for name, error in outcome.refused:
        err.print(f"[red]{escape(name)}: not synced:[/] {escape(str(error))}", highlight=False)


def show_errors(service: SyncService, record: RunRecord) -> None:
    """A finished run's error and its failed records grouped by error, if any."""
    if record.error:
        err.print(f"[red]{escape(record.mapping)}:[/] {escape(record.error)}")
    if record.failed:
        out.print(render.failure_groups_table(history(service).error_groups(record.id)))
