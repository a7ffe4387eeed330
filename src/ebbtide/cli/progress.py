"""Rich progress bars fed by the engine's run listener."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from ebbtide.engine.run import Phase, RunListener


class ProgressListener(RunListener):
    """One bar per run: a spinner while extracting and diffing, a counted bar while loading."""

    def __init__(self, mapping: str, console: Console) -> None:
        self.mapping = mapping
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[mapping]}[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> ProgressListener:
        self.progress.start()
        # The bar's template is markup: the mapping's name goes in escaped.
        self.task = self.progress.add_task("starting", total=None, mapping=escape(self.mapping))
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def phase(self, phase: Phase, total: int | None = None) -> None:
        if self.task is not None:
            self.progress.update(self.task, description=phase.value, total=total, completed=0)

    def advance(self, records: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, records)
