"""`ebbtide` exits 0 success, 3 partial, 1 failed, 2 bad usage, 4 busy, 5 storage, 6 damaged."""

from __future__ import annotations

import dataclasses
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from ebbtide.cli import context, render
from ebbtide.cli.alerts import alerts_app, notifications
from ebbtide.cli.context import JsonFlag, err, options, out
from ebbtide.cli.serve import serve, sync_now
from ebbtide.cli.syncs import EXIT_FOR_STATUS, SyncOutcome, run_one, show_errors, show_syncs
from ebbtide.cli.tokens import tokens_app
from ebbtide.cli.users import users_app
from ebbtide.enums import FailureStatus, RunStatus, Trigger
from ebbtide.errors import ConfigErrors, EbbtideError, UsageError

# The services (and DuckDB, pyarrow, SQLAlchemy, aiohttp behind them) are imported inside the
# commands that call them: `ebbtide --help` and `ebbtide runs list` start without them.
if TYPE_CHECKING:
    from ebbtide.config.workspace import Workspace
    from ebbtide.services.history import History

EXIT_CANCELLED = 130  # as a shell reports a process stopped by a signal

app = typer.Typer(
    help="ebbtide: sync warehouse models to the tools where people act on them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
sync_app = typer.Typer(help="Plan and run syncs.", no_args_is_help=True)
runs_app = typer.Typer(help="The sync history.", no_args_is_help=True)
app.add_typer(sync_app, name="sync")
app.add_typer(runs_app, name="runs")
records_app = typer.Typer(help="Records across runs.", no_args_is_help=True)
app.add_typer(records_app, name="records")
journals_app = typer.Typer(
    help="The records each run sent, kept for replays.", no_args_is_help=True
)
app.add_typer(journals_app, name="journals")
app.add_typer(alerts_app, name="alerts")
app.add_typer(tokens_app, name="tokens")
app.add_typer(users_app, name="users")
app.command("notifications")(notifications)
app.command("serve")(serve)
sync_app.command("now")(sync_now)


@app.callback()
def _global(
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace",
            "-w",
            envvar="EBBTIDE_WORKSPACE",
            help="Workspace folder (default: here or a parent).",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    options.workspace = workspace
    options.debug = debug


_workspace = context.workspace
_service = context.service


def _history() -> History:
    return context.history(_service())


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the workspace.")] = Path("."),
    demo: Annotated[
        bool, typer.Option("--demo", help="Add a sample warehouse and mappings.")
    ] = False,
) -> None:
    """Create a workspace: ebbtide.yml, a models/ folder and a .gitignore."""
    from ebbtide.services.workspace_init import init_workspace

    created = init_workspace(directory, demo=demo)
    for path in created:
        out.print(f"created {escape(str(path))}")
    out.print(f"Next: cd {escape(str(directory))} && ebbtide validate")


@app.command()
def validate(
    json_output: JsonFlag = False,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Do not connect to sources: skip checking mappings against models' columns.",
        ),
    ] = False,
    check_credentials_too: Annotated[
        bool,
        typer.Option(
            "--check-credentials",
            help="Also call each destination's account endpoint with its credentials.",
        ),
    ] = False,
) -> None:
    """Check the whole workspace without sending anything.

    Each mapping is checked against its destination action and, unless --offline, against
    its model's columns and their types (the model is queried for no rows). With
    --check-credentials, each destination's credentials are tried on one cheap call that
    changes nothing (exit 1 if any is refused).
    """
    from ebbtide.services.credentials import check_credentials
    from ebbtide.services.sync import SyncService
    from ebbtide.services.workspace_services import check_mappings

    workspace = _workspace()
    check_mappings(SyncService(workspace), offline=offline)
    summary: dict[str, object] = {
        "ok": True,
        "file": str(workspace.file),
        "sources": len(workspace.spec.sources),
        "models": len(workspace.spec.models),
        "destinations": len(workspace.spec.destinations),
        "mappings": len(workspace.spec.mappings),
    }
    checks = check_credentials(workspace) if check_credentials_too else []
    if checks:
        summary["credentials"] = [dataclasses.asdict(c) for c in checks]
        summary["ok"] = all(c.ok is not False for c in checks)
    if json_output:
        render.print_json(out, summary)
    else:
        out.print(
            f"[green]✓[/] {escape(str(workspace.file))} is valid: {summary['sources']} source(s),"
            f" {summary['models']} model(s), {summary['destinations']} destination(s),"
            f" {summary['mappings']} mapping(s)"
        )
        for check in checks:
            mark = {True: "[green]✓[/]", False: "[red]✗[/]", None: "[dim]-[/]"}[check.ok]
            out.print(
                f"{mark} destination {escape(check.destination)} ({check.type}):"
                f" {escape(check.message)}"
            )
    if not summary["ok"]:
        raise typer.Exit(1)


@sync_app.command("plan")
def sync_plan(
    mapping: str,
    json_output: JsonFlag = False,
    samples: Annotated[int, typer.Option(help="Sample records per operation.")] = 3,
) -> None:
    """What the next sync would send: counts and samples; nothing sent, nothing committed."""
    plan = _service().plan(mapping, samples=samples)
    if json_output:
        render.print_views(out, plan.view())
    else:
        render.plan_view(out, plan)


@sync_app.command("run")
def sync_run(
    mappings: Annotated[list[str] | None, typer.Argument(help="Mappings to sync.")] = None,
    all_mappings: Annotated[
        bool, typer.Option("--all", help="Sync every enabled mapping.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Send even if a guard (max_deletes, …) trips, once.")
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Sync mappings now, one after the other, and show what happened.

    A mapping that cannot run (busy, …) is reported and the others still run; the exit code is
    the worst of them all (see `cli.syncs.RANK`).
    """
    service = _service()
    names = _chosen(service.workspace, mappings or [], all_mappings)
    outcome = SyncOutcome()
    try:
        for name in names:
            outcome.current = name
            try:
                outcome.records.append(run_one(service, name, force, json_output))
            except EbbtideError as error:
                outcome.refused.append((name, error))
    except KeyboardInterrupt:
        show_syncs(service, outcome, json_output)
        # Typer would exit silently: say what happened to the run and what happens next.
        err.print(
            f"[yellow]cancelled[/]: the sync of {escape(repr(outcome.current))} was stopped and"
            " recorded as cancelled; what it delivered is kept, and the next sync sends the rest"
        )
        raise typer.Exit(EXIT_CANCELLED) from None
    show_syncs(service, outcome, json_output)
    raise typer.Exit(outcome.exit_code())


def _chosen(workspace: Workspace, mappings: list[str], all_mappings: bool) -> list[str]:
    if all_mappings == bool(mappings):
        raise typer.BadParameter("name one or more mappings, or --all (not both)")
    if all_mappings:
        return [n for n, m in workspace.spec.mappings.items() if m.enabled]
    for name in mappings:
        workspace.mapping(name)
    return mappings


@runs_app.command("list")
def runs_list(
    mapping: Annotated[str | None, typer.Argument(help="Only this mapping's runs.")] = None,
    limit: Annotated[int, typer.Option(help="How many runs, newest first.")] = 20,
    status: Annotated[RunStatus | None, typer.Option(help="Only runs of this status.")] = None,
    trigger: Annotated[Trigger | None, typer.Option(help="Only runs started so.")] = None,
    before: Annotated[
        int | None, typer.Option(help="Only runs older than this run id (the next page).")
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Recent runs, newest first."""
    from ebbtide.values import RunFilter

    where = RunFilter(status=status, trigger=trigger.value if trigger else None, before=before)
    runs = context.recent_runs(mapping, limit, where)
    if json_output:
        render.print_views(out, runs)
    else:
        out.print(render.runs_table(runs))


@runs_app.command("show")
def runs_show(run_id: int, json_output: JsonFlag = False) -> None:
    """One run: status, phases, counts and failed records grouped by error."""
    details = _history().run_details(run_id)
    if json_output:
        render.print_views(out, details)
    else:
        render.run_details(out, details)


@runs_app.command("failed")
def runs_failed(
    run_id: int,
    limit: Annotated[int, typer.Option(help="How many records at most.")] = 1000,
    json_output: JsonFlag = False,
) -> None:
    """The records that failed in one run, with error, payload and recommended action."""
    failures = _history().run_failures(run_id, limit)
    if json_output:
        render.print_views(out, failures)
    else:
        out.print(render.failures_table(failures, f"Failed records of run {run_id}"))


@records_app.command("failed")
def records_failed(
    mapping: str,
    status: Annotated[
        list[FailureStatus] | None,
        typer.Option(help="Which statuses (default: pending and expired)."),
    ] = None,
    limit: Annotated[int, typer.Option(help="How many records at most.")] = 1000,
    json_output: JsonFlag = False,
) -> None:
    """Records of a mapping that failed: pending retry, or expired (given up)."""
    from ebbtide.services.history import DEFAULT_STATUSES

    records = _history().failed_records(mapping, status or DEFAULT_STATUSES, limit)
    if json_output:
        render.print_views(out, records)
    else:
        out.print(render.failed_records_table(records, mapping))


@app.command()
def reset(
    mapping: str,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm without asking.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Forget what the destination has: the next sync sends the whole model again."""
    from ebbtide.services.reset import ResetService
    from ebbtide.services.views import RunView
    from ebbtide.services.workspace_services import default_actor

    service = _service()
    resets = ResetService(service)
    plan = resets.plan(mapping)
    _confirm(plan.explain(), yes, f"reset {mapping}")
    record = resets.reset(mapping, actor=default_actor())
    if json_output:
        run = RunView.of(record).model_dump(mode="json")
        render.print_json(out, {**plan.view().model_dump(mode="json"), "run": run})
    else:
        out.print(
            f"[green]✓[/] {escape(mapping)} reset (run {record.id}); the next sync sends all"
            f" {plan.model_rows:,} record(s): ebbtide sync run {escape(mapping)}"
        )


@app.command()
def replay(
    run_id: int,
    latest: Annotated[
        bool, typer.Option("--latest", help="Send those keys with the model's current data.")
    ] = False,
    only_failed: Annotated[
        bool, typer.Option("--only-failed", help="Only the records that failed in that run.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm without asking.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Resend the records of a past run, as a run of its own."""
    from ebbtide.services.replay import ReplayService
    from ebbtide.services.views import RunView
    from ebbtide.services.workspace_services import default_actor

    service = _service()
    replays = ReplayService(service)
    plan = replays.plan(run_id, latest=latest, only_failed=only_failed)
    _confirm(plan.explain(), yes, f"replay run {run_id}")
    if json_output or not sys.stderr.isatty():
        record = replays.replay(plan, actor=default_actor())
    else:
        from ebbtide.cli.progress import ProgressListener  # Rich's progress bars: only to show

        with ProgressListener(plan.run.mapping, err) as listener:
            record = replays.replay(plan, actor=default_actor(), listener=listener)
    if json_output:
        render.print_views(out, RunView.of(record))
    else:
        out.print(render.runs_table([RunView.of(record)], title=f"Replay of run {run_id}"))
        show_errors(service, record)
    raise typer.Exit(EXIT_FOR_STATUS[record.status])


@journals_app.command("prune")
def journals_prune(
    keep_days: Annotated[
        float | None,
        typer.Option(help="Keep this many days (default: the workspace's journals.keep_days)."),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Delete the sent-record journals of runs older than the retention."""
    from ebbtide.services.replay import ReplayService
    from ebbtide.services.sync import SyncService

    workspace = _workspace()
    days = keep_days if keep_days is not None else workspace.spec.journals.keep_days
    files, size = ReplayService(SyncService(workspace)).prune(days)
    if json_output:
        render.print_json(out, {"files": files, "bytes": size, "keep_days": days})
    else:
        out.print(f"removed {files} journal(s), {size / 2**20:,.1f} MB, older than {days:g} days")


def _confirm(explanation: str, yes: bool, what: str) -> None:
    """Explain, then ask; without a terminal only --yes confirms."""
    err.print(explanation, markup=False, highlight=False)
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(
            f"not confirmed: there is no terminal to ask, so pass --yes to {what}."
            " Nothing was changed."
        )
    if not typer.confirm(f"{what[0].upper()}{what[1:]}?", default=False, err=True):
        err.print("nothing was changed")
        raise typer.Exit(1)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Treated like Ctrl-C: the run is recorded as cancelled and the next sync sends the rest.

    While the load's event loop runs, asyncio's own Ctrl-C handler is in place: handed the
    signal, it cancels the load so that every request task ends cleanly before the
    KeyboardInterrupt. Raised here instead, it would land inside whichever task was running
    (an HTTP client's writer, say), whose exception nobody would then collect."""
    on_interrupt = signal.getsignal(signal.SIGINT)
    if callable(on_interrupt) and on_interrupt is not signal.default_int_handler:
        on_interrupt(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt


def main() -> None:
    """Console entry point: one clear message and an exit code, never a traceback."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        _run_app()
    finally:
        # The outcome is recorded and said: a signal now would only print a traceback from
        # whatever Python is tearing down (an event loop's __del__, say).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_app() -> None:
    try:
        app()
    except ConfigErrors as error:
        if options.debug:
            raise
        err.print(f"[red]The workspace has {len(error.errors)} error(s):[/]")
        for item in error.errors:
            err.print(f"  {item.describe()}", markup=False, highlight=False)
        sys.exit(error.exit_code)
    except EbbtideError as error:
        if options.debug:
            raise
        err.print(f"[red]error:[/] {escape(str(error))}", highlight=False)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        err.print("[yellow]cancelled[/]: the next sync sends what this one did not")
        sys.exit(EXIT_CANCELLED)
    except Exception as error:  # noqa: BLE001 - a bug gets one clear line, never a traceback
        if options.debug:
            raise
        what = options.redact(f"{type(error).__name__}: {error}")
        err.print(
            f"[red]internal error:[/] {escape(what)}\n"
            "This is a bug in ebbtide: run the command again with --debug for the traceback"
            " and report it.",
            highlight=False,
        )
        sys.exit(1)
