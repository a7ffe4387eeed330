"""How runs, plans and errors look in a terminal."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from ebbtide.engine.outcome import RecordFailure, RunStatus
from ebbtide.errors import ErrorClass
from ebbtide.services.sync import SyncPlan
from ebbtide.state.records import FailureGroup, RunRecord

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


def status_text(status: RunStatus) -> str:
    return f"[{STATUS_STYLE[status]}]{status.value}[/]"


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}s"


def runs_table(runs: Sequence[RunRecord], title: str = "Sync history") -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("run", "mapping", "status", "started (UTC)", "took"):
        table.add_column(column, no_wrap=column in ("run", "status"))
    for column in ("extracted", "changes +/~/-", "loaded +/~/-", "failed"):
        table.add_column(column, justify="right")
    for run in runs:
        table.add_row(
            str(run.id),
            run.mapping,
            status_text(run.status),
            f"{run.started_at:%m-%d %H:%M:%S}",
            seconds(run.duration_s),
            f"{run.extracted:,}",
            f"{run.added:,}/{run.updated:,}/{run.deleted:,}",
            f"{run.loaded_new:,}/{run.loaded_updated:,}/{run.loaded_deleted:,}",
            f"[red]{run.failed:,}[/]" if run.failed else "0",
        )
    table.caption = "+ added, ~ updated, - deleted; loaded = accepted by the destination"
    return table


def run_details(console: Console, run: RunRecord, groups: Sequence[FailureGroup]) -> None:
    """Everything about one run: status, phases, counts, and why records failed."""
    console.print(
        f"[bold]Run {run.id}[/] · mapping [bold]{run.mapping}[/] · {status_text(run.status)}"
        f" · trigger {run.trigger}"
    )
    console.print(
        f"started {run.started_at:%Y-%m-%d %H:%M:%S} UTC, took {seconds(run.duration_s)}"
        f" (extract {seconds(run.extract_s)}, diff {seconds(run.diff_s)},"
        f" load {seconds(run.load_s)}, commit {seconds(run.commit_s)})"
    )
    counts = Table(show_header=True, title="Records", title_justify="left")
    for column in (
        "extracted",
        "added",
        "updated",
        "deleted",
        "not sent (mode)",
        "loaded new",
        "loaded updated",
        "loaded deleted",
        "failed",
    ):
        counts.add_column(column, justify="right")
    counts.add_row(
        *[
            f"{n:,}"
            for n in (
                run.extracted,
                run.added,
                run.updated,
                run.deleted,
                run.skipped,
                run.loaded_new,
                run.loaded_updated,
                run.loaded_deleted,
                run.failed,
            )
        ]
    )
    console.print(counts)
    if run.error:
        console.print(f"[red]Error:[/] {run.error}")
    if groups:
        console.print(failure_groups_table(groups))


def failure_groups_table(groups: Sequence[FailureGroup]) -> Table:
    table = Table(title="Failed records by error", title_justify="left", show_lines=True)
    for column in ("error class", "count", "message", "sample keys", "recommended action"):
        table.add_column(column, overflow="fold")
    for group in groups:
        table.add_row(
            f"[red]{group.error_class}[/]",
            f"{group.count:,}",
            group.message,
            ", ".join(group.sample_keys),
            ErrorClass(group.error_class).recommended_action,
        )
    return table


def failures_json(failures: Sequence[RecordFailure]) -> list[dict[str, Any]]:
    return [
        {
            "key": json.loads(f.key) if f.key else None,
            "operation": f.operation.value,
            "error_class": f.error_class.value,
            "code": f.code,
            "http_status": f.http_status,
            "message": f.message,
            "payload": f.payload,
            "recommended_action": f.error_class.recommended_action,
        }
        for f in failures
    ]


def plan_view(console: Console, plan: SyncPlan) -> None:
    console.print(
        f"[bold]Plan for {plan.mapping}[/] (mode {plan.mode}): nothing sent, nothing committed"
    )
    table = Table()
    for column in ("extracted", "added", "updated", "deleted", "would send"):
        table.add_column(column, justify="right")
    table.add_row(
        *[
            f"{n:,}"
            for n in (plan.extracted, plan.added, plan.updated, plan.deleted, plan.would_send)
        ]
    )
    console.print(table)
    if plan.guard:
        console.print(f"[red]A guard would stop this sync:[/] {plan.guard} (override with --force)")
    not_sent = sorted({"added", "updated", "deleted"} - set(plan.operations_sent))
    if not_sent:
        console.print(f"Mode {plan.mode} does not send: {', '.join(not_sent)}")
    for sample in plan.samples:
        console.print_json(json.dumps(sample, default=str))
