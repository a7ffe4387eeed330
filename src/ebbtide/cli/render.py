"""How runs, plans and errors look in a terminal.

Keys, messages, codes, payloads and names come from warehouses, destinations and config files:
they are shown as text, never read as Rich markup (a key `[/bold]` once crashed every view
that showed it). Table cells are `Text` objects; strings printed with markup are escaped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ebbtide.enums import RunStatus

if TYPE_CHECKING:
    from ebbtide.services.sync import SyncPlan
    from ebbtide.services.views import (
        ErrorGroupView,
        FailedRecordView,
        RecordFailureView,
        RunDetailsView,
        RunView,
        View,
    )

STATUS_STYLE = {
    RunStatus.SUCCESS: "green",
    RunStatus.PARTIAL_SUCCESS: "yellow",
    RunStatus.FAILED: "red",
    RunStatus.RUNNING: "cyan",
    RunStatus.INTERRUPTED: "magenta",
    RunStatus.CANCELLED: "magenta",
}


def print_json(console: Console, value: Any) -> None:
    console.print_json(json.dumps(value, default=str))


def print_views(console: Console, value: View | Sequence[View]) -> None:
    """The `--json` of the history: the typed views, exactly as the API returns them."""
    from ebbtide.services.views import View

    if isinstance(value, View):
        print_json(console, value.model_dump(mode="json"))
    else:
        print_json(console, [v.model_dump(mode="json") for v in value])


def status_text(status: RunStatus) -> Text:
    return Text(status.value, style=STATUS_STYLE[status])


def add_row(table: Table, *cells: str | Text) -> None:
    """A row whose strings are shown exactly as they are."""
    table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in cells))


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}s"


def trigger_text(run: RunView) -> str:
    """`manual`, `replay of 12`, `schedule (after reset)`, …"""
    text = f"replay of {run.replay_of}" if run.replay_of is not None else run.trigger
    return f"{text} (after reset)" if run.after_reset else text


def runs_table(runs: Sequence[RunView], title: str = "Sync history") -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("run", "mapping", "trigger", "status", "started (UTC)", "took"):
        table.add_column(column, no_wrap=column in ("run", "status"))
    for column in ("extracted", "changes +/~/-", "loaded +/~/-", "failed"):
        table.add_column(column, justify="right")
    for run in runs:
        add_row(
            table,
            str(run.id),
            run.mapping,
            trigger_text(run),
            status_text(run.status),
            f"{run.started_at:%m-%d %H:%M:%S}",
            seconds(run.duration_s),
            f"{run.extracted:,}",
            f"{run.added:,}/{run.updated:,}/{run.deleted:,}",
            f"{run.loaded_new:,}/{run.loaded_updated:,}/{run.loaded_deleted:,}",
            Text(f"{run.failed:,}", style="red") if run.failed else "0",
        )
    table.caption = "+ added, ~ updated, - deleted; loaded = accepted by the destination"
    return table


def run_details(console: Console, run: RunDetailsView) -> None:
    """Everything about one run: status, phases, counts, and why records failed."""
    console.print(
        Text.assemble(
            (f"Run {run.id}", "bold"),
            " · mapping ",
            (run.mapping, "bold"),
            " · ",
            status_text(run.status),
            f" · trigger {trigger_text(run)}" + (f" by {run.actor}" if run.actor else ""),
        )
    )
    console.print(
        f"started {run.started_at:%Y-%m-%d %H:%M:%S} UTC, took {seconds(run.duration_s)}"
        f" (extract {seconds(run.phases_s.extract)}, diff {seconds(run.phases_s.diff)},"
        f" load {seconds(run.phases_s.load)}, commit {seconds(run.phases_s.commit)})"
    )
    if run.detection is not None and run.detection != "full":
        console.print(f"changes found by: {run.detection}")
    counts = Table(show_header=True, title="Records", title_justify="left")
    labels = (
        "extracted",
        "added",
        "updated",
        "deleted",
        "not sent (mode)",
        "loaded new",
        "loaded updated",
        "loaded deleted",
        "failed",
        "retries",
    )
    values = (
        run.extracted,
        run.added,
        run.updated,
        run.deleted,
        run.skipped,
        run.loaded_new,
        run.loaded_updated,
        run.loaded_deleted,
        run.failed,
        run.retried,
    )
    for label in labels:
        counts.add_column(label, justify="right")
    add_row(counts, *[f"{n:,}" for n in values])
    console.print(counts)
    if run.error:
        console.print(f"[red]Error:[/] {escape(run.error)}")
    if run.failure_groups:
        console.print(failure_groups_table(run.failure_groups))
        for group in run.failure_groups:
            for payload in group.sample_payloads[:1]:
                console.print(
                    f"[dim]sample payload ({escape(group.error_class)}):[/] {escape(payload)}"
                )


def failure_groups_table(groups: Sequence[ErrorGroupView]) -> Table:
    table = Table(title="Failed records by error", title_justify="left", show_lines=True)
    for column in ("error class", "count", "message", "sample keys", "recommended action"):
        table.add_column(column, overflow="fold")
    for group in groups:
        add_row(
            table,
            Text(group.error_class, style="red"),
            f"{group.count:,}",
            group.message,
            ", ".join(group.sample_keys),
            group.recommended_action,
        )
    return table


def failures_table(failures: Sequence[RecordFailureView], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("key", "op", "error class", "code", "message", "payload"):
        table.add_column(column, overflow="fold")
    for f in failures:
        add_row(
            table,
            f.key_text,
            f.operation,
            f.error_class,
            f.code or "",
            f.message,
            (f.payload or "")[:200],
        )
    return table


def failed_records_table(records: Sequence[FailedRecordView], mapping: str) -> Table:
    table = Table(title=Text(f"Failed records of {mapping}"), title_justify="left")
    for column in (
        "key",
        "status",
        "first failed (UTC)",
        "syncs failed",
        "last run",
        "error class",
        "last error",
    ):
        table.add_column(column, overflow="fold")
    for r in records:
        add_row(
            table,
            r.key_text,
            r.status.value,
            f"{r.first_failed_at:%Y-%m-%d %H:%M}",
            str(r.failed_syncs),
            str(r.last_run_id),
            r.error_class,
            r.message,
        )
    return table


def plan_view(console: Console, plan: SyncPlan) -> None:
    console.print(
        f"[bold]Plan for {escape(plan.mapping)}[/] (mode {plan.mode}): nothing sent,"
        " nothing committed"
    )
    table = Table()
    for column in ("extracted", "added", "updated", "deleted", "would send"):
        table.add_column(column, justify="right")
    add_row(
        table,
        *[
            f"{n:,}"
            for n in (plan.extracted, plan.added, plan.updated, plan.deleted, plan.would_send)
        ],
    )
    console.print(table)
    if plan.guard:
        console.print(
            f"[red]A guard would stop this sync:[/] {escape(plan.guard)} (override with --force)"
        )
    not_sent = sorted({"added", "updated", "deleted"} - set(plan.operations_sent))
    if not_sent:
        console.print(f"Mode {plan.mode} does not send: {', '.join(not_sent)}")
    for sample in plan.samples:
        console.print_json(json.dumps(sample, default=str))
