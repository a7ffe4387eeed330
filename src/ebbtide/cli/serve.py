"""`ebbtide serve` (the scheduler loop and the REST API) and `ebbtide sync now`."""

from __future__ import annotations

import getpass
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from ebbtide.cli import render
from ebbtide.cli.context import JsonFlag, err, options, out
from ebbtide.cli.context import workspace as current_workspace
from ebbtide.cli.syncs import EXIT_FOR_STATUS

if TYPE_CHECKING:
    from ebbtide.server.api.server import ApiServer
    from ebbtide.server.scheduler import ServeLoop
    from ebbtide.services.scheduler import SyncRequestOutcome
    from ebbtide.values import RunRecord


def serve(
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Syncs that may run at once.")
    ] = 2,
    grace_s: Annotated[
        float,
        typer.Option(
            "--grace-s",
            min=0,
            help="On SIGTERM, how long runs in flight may take to finish before they are"
            " cancelled (as `sync run` is on SIGTERM).",
        ),
    ] = 30.0,
    host: Annotated[
        str, typer.Option(help="Where the REST API and the web UI listen.")
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(min=0, max=65535, help="Their port (0: any free port)."),
    ] = 8700,
) -> None:
    """Run mappings on their schedules, and the syncs `ebbtide sync now` asks for.

    Logs one line per run claimed, started and finished on stderr. Editing ebbtide.yml takes
    effect without a restart (an invalid edit is logged and the last valid workspace keeps
    running). SIGTERM or Ctrl-C: nothing new starts, runs in flight get --grace-s to finish,
    then are cancelled; exit 0. Several serve processes may share one state store: each due
    run starts once. The REST API (/api/v1) and the web UI (/) listen on --host and --port.
    """
    # Imported here: the scheduler's metrics and queue would slow every other command's start.
    from ebbtide.config.workspace import find_workspace
    from ebbtide.server.scheduler import ServeLoop, ServeSettings

    root = (options.workspace or find_workspace(Path.cwd())).resolve()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    if options.debug:  # ebbtide's own details, a failed run's traceback among them
        logging.getLogger("ebbtide").setLevel(logging.DEBUG)
    loop = ServeLoop(ServeSettings(root, workers, grace_s), _say)
    options.redact = loop.workspace.redact

    def stop(signum: int, frame: object) -> None:
        loop.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    api = _api(loop, host, port)
    url = api.start()
    loop.say(f"api listening on {url}")
    loop.say(f"web UI at {url}/{_first_login_hint(loop)}")
    try:
        loop.run()
    finally:
        api.stop()


def _api(loop: ServeLoop, host: str, port: int) -> ApiServer:
    """The REST API over the loop's workspace (as last reloaded) and state store."""
    # Imported here: FastAPI and uvicorn would slow every other command's start.
    from ebbtide.server.api.app import create_app
    from ebbtide.server.api.context import services_over
    from ebbtide.server.api.server import ApiServer

    services = services_over(
        lambda: loop.workspace, loop.state, metrics=loop.metrics, not_ready=loop.not_ready
    )
    return ApiServer(create_app(services), host, port)


def _first_login_hint(loop: ServeLoop) -> str:
    from ebbtide.state.users import UserBook

    if UserBook(loop.state.engine).listed():
        return ""
    return " (no users yet: `ebbtide users create EMAIL --role admin` makes the first admin)"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def sync_now(
    mapping: str,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Wait for the run to end; exit with its status's code."),
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Ask a running `ebbtide serve` to sync MAPPING now, whatever its schedule.

    The request waits in the state store until a serve process starts it; a second request
    while one waits is merged into it.
    """
    from ebbtide.services.scheduler import ScheduleService

    workspace = current_workspace()
    service = ScheduleService(workspace)
    try:
        outcome = service.request_sync(mapping, actor=_actor())
        if not wait:
            _said(outcome, json_output)
            return
        if not json_output:
            _said(outcome, json_output)
        run = service.wait_for_run(outcome)
    finally:
        service.close()
    if json_output:
        render.print_json(out, {**outcome.to_json(), "run": _run_json(run)})
    else:
        loaded = run.loaded_new + run.loaded_updated + run.loaded_deleted
        out.print(
            f"{escape(mapping)} run {run.id}: {run.status.value} (extracted {run.extracted},"
            f" loaded {loaded}, failed {run.failed}); details: ebbtide runs show {run.id}"
        )
        if run.error:
            err.print(f"[red]{escape(mapping)}:[/] {escape(run.error)}")
    raise typer.Exit(EXIT_FOR_STATUS[run.status])


def _run_json(run: RunRecord) -> dict[str, object]:
    return {
        "id": run.id,
        "mapping": run.mapping,
        "status": run.status.value,
        "trigger": run.trigger,
        "error": run.error,
    }


def _said(outcome: SyncRequestOutcome, json_output: bool) -> None:
    mapping = outcome.mapping
    if json_output:
        render.print_json(out, outcome.to_json())
    elif outcome.queued:
        out.print(
            f"queued: {escape(mapping)} syncs as soon as `ebbtide serve` picks it up"
            " (runs list shows it)"
        )
    else:
        by = f" by {outcome.requested_by}" if outcome.requested_by else ""
        out.print(
            f"merged: a sync of {escape(mapping)} requested{escape(by)} at"
            f" {outcome.requested_at:%H:%M:%S} UTC is already waiting; it stands for this one"
        )


def _actor() -> str:
    """Who asks, as the history records it."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"
