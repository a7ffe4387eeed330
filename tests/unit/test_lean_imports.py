"""The CLI starts lean: `ebbtide --help` loads no driver, framework or service, and
`ebbtide runs list` loads no more than the workspace, the state store and the run's view.

Each check runs a fresh interpreter and looks at `sys.modules`: what a module imports, not how
long it takes (timings belong to `bench/`, not to tests).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import ebbtide.config.alerts
import ebbtide.enums
import ebbtide.state.tokens
import ebbtide.state.users
import ebbtide.values

# Nothing `ebbtide --help` needs: each command imports what it calls when it runs.
NOT_FOR_HELP = (
    "duckdb",
    "pyarrow",
    "sqlalchemy",
    "aiohttp",
    "argon2",
    "fastapi",
    "uvicorn",
    "alembic",
    "pydantic",
    "ebbtide.services",
    "ebbtide.values",
    "ebbtide.config.workspace",
)
# Nothing `ebbtide runs list` needs once the state store exists (the workspace's own checks
# load each source and destination type it names: those are the adapters' to keep light).
NOT_FOR_RUNS_LIST = (
    "ebbtide.services.sync",
    "ebbtide.services.history",
    "ebbtide.engine.run",
    "pyarrow.compute",
    "alembic",
    "argon2",
    "fastapi",
    "uvicorn",
    # The adapters' own drivers and clients come when a source is opened or a destination
    # made; a schedule's cron parser when a cron expression is read.
    "duckdb",
    "aiohttp",
    "yarl",
    "croniter",
)

# Runs the CLI in-process with the arguments given, then reports its exit code and which of
# the named modules were loaded (on stderr, after whatever the command printed).
PROBE = """
import contextlib, io, json, sys
from ebbtide.cli.app import app, main
names, commands = json.loads(sys.argv[1]), json.loads(sys.argv[2])
codes = []
for argv in commands:
    sys.argv = ["ebbtide", *argv]
    with contextlib.redirect_stdout(io.StringIO()) as shown:
        try:
            main()
        except SystemExit as exit:
            codes.append(exit.code or 0)
print(json.dumps({
    "codes": codes, "out": shown.getvalue(),
    "loaded": sorted(m for m in names if m in sys.modules),
}), file=sys.stderr)
"""


def probe(
    names: tuple[str, ...], *commands: list[str], cwd: Path | None = None
) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(names), json.dumps(commands)],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=True,
    )
    report: dict[str, object] = json.loads(done.stderr.strip().splitlines()[-1])
    return report


def new_workspace(folder: Path, *, with_state: bool = False) -> Path:
    """`ebbtide init`'s workspace in `folder`; `with_state`: its state store created too (with
    Alembic, which the command probed afterwards then has no need of)."""
    subprocess.run(
        [sys.executable, "-m", "ebbtide", "init", "ws"], cwd=folder, check=True, capture_output=True
    )
    workspace = folder / "ws"
    if with_state:
        subprocess.run(
            [sys.executable, "-m", "ebbtide", "runs", "list"],
            cwd=workspace,
            check=True,
            capture_output=True,
        )
    return workspace


def every_command() -> list[list[str]]:
    import typer.main

    from ebbtide.cli.app import app

    def walk(command: object, path: list[str]) -> list[list[str]]:
        subcommands: dict[str, object] = getattr(command, "commands", None) or {}
        found = [path]
        for name, sub in subcommands.items():
            found += walk(sub, [*path, name])
        return found

    return walk(typer.main.get_command(app), [])


def test_importing_the_cli_loads_no_driver_framework_or_service() -> None:
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, ebbtide.cli.app;"
            f" print(sorted(m for m in {NOT_FOR_HELP!r} if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == "[]"


def test_the_help_loads_none_of_them() -> None:
    report = probe(NOT_FOR_HELP, ["--help"])
    assert report["codes"] == [0]
    assert report["loaded"] == []


def test_the_help_of_every_command_loads_none_of_them_but_pydantic() -> None:
    """Typer builds a command's parameters with pydantic, so a command's own help loads it.

    Also proves that every command's annotations resolve without the imports that
    `if TYPE_CHECKING:` keeps from running (Typer reads them to build the options)."""
    commands = [[*path, "--help"] for path in every_command()]
    report = probe(tuple(m for m in NOT_FOR_HELP if m != "pydantic"), *commands)
    assert report["codes"] == [0] * len(commands)
    assert report["loaded"] == []


def test_runs_list_reads_without_the_sync_services(tmp_path: Path) -> None:
    workspace = new_workspace(tmp_path, with_state=True)

    report = probe(NOT_FOR_RUNS_LIST, ["runs", "list", "--json"], cwd=workspace)

    assert report["codes"] == [0]
    assert json.loads(str(report["out"])) == []
    assert report["loaded"] == []


def test_a_sync_for_a_script_loads_no_progress_bar_or_server(tmp_path: Path) -> None:
    """`sync run --json` shows no bar, so Rich's progress is not imported; nor is anything of
    the web UI, the users' password hashing or the scheduler's cron parser."""
    workspace = new_workspace(tmp_path, with_state=True)
    names = ("rich.progress", "ebbtide.cli.progress", "argon2", "croniter", "alembic")

    # The run fails (the workspace has no warehouse yet), after going all the way through.
    report = probe(names, ["sync", "run", "users_to_archive", "--json"], cwd=workspace)

    assert report["codes"] == [1]
    assert [run["status"] for run in json.loads(str(report["out"]))] == ["failed"]
    assert report["loaded"] == []


def test_importing_the_users_makes_no_password_hash() -> None:
    """The hash an unknown email is checked against is made at the first login, not at import
    (a quarter of a second for every command that imports the module)."""
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "import ebbtide.state.users as u; print(u._unknown_user_hash.cache_info().currsize)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == "0"


def test_an_adapter_checks_its_settings_without_its_client() -> None:
    """Loading a workspace imports each adapter type it names: the drivers and HTTP clients
    come when a source connects or a destination is made."""
    modules = [
        "ebbtide.sources.duckdb",
        "ebbtide.sources.files",
        "ebbtide.sources.postgres",
        "ebbtide.destinations.webhook",
        "ebbtide.destinations.mixpanel",
        "ebbtide.config.schedule",
    ]
    clients = [
        "duckdb",
        "adbc_driver_manager",
        "adbc_driver_postgresql",
        "pyarrow.compute",
        "aiohttp",
        "yarl",
        "croniter",
        "ebbtide.engine.acknowledgement",  # pyarrow behind it
    ]
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import importlib, sys; [importlib.import_module(m) for m in {modules!r}];"
            f" print(sorted(m for m in {clients!r} if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == "[]"


def test_runs_list_still_refuses_an_unknown_mapping(tmp_path: Path) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "ebbtide", "runs", "list", "users_to_archiv"],
        cwd=new_workspace(tmp_path),
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 2
    assert "users_to_archiv" in shown.stderr and "users_to_archive" in shown.stderr


def test_the_enums_keep_their_old_homes() -> None:
    assert ebbtide.values.RunStatus is ebbtide.enums.RunStatus
    assert ebbtide.values.Trigger is ebbtide.enums.Trigger
    assert ebbtide.values.FailureStatus is ebbtide.enums.FailureStatus
    assert ebbtide.config.alerts.AlertStatus is ebbtide.enums.AlertStatus
    assert ebbtide.config.alerts.Channel is ebbtide.enums.Channel
    assert ebbtide.state.tokens.TokenScope is ebbtide.enums.TokenScope
    assert ebbtide.state.users.Role is ebbtide.enums.Role


def test_the_enums_module_imports_nothing_of_ebbtide() -> None:
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, ebbtide.enums;"
            " print(sorted(m for m in sys.modules if m.startswith('ebbtide')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == "['ebbtide', 'ebbtide.enums']"


def test_a_no_change_sync_of_a_duckdb_model_scans_no_arrow(tmp_path: Path) -> None:
    """Hashed where it lies, a DuckDB model's columns are read as the Arrow trip would type
    them; the trip is learnt once and kept in the snapshot, so the next sync does not scan
    Arrow to learn it again (which imports pyarrow.dataset)."""
    workspace = new_workspace(tmp_path)
    (workspace / "models" / "users.sql").write_text("select id, email, name from users")
    import duckdb

    with duckdb.connect(str(workspace / "warehouse.duckdb")) as con:
        con.execute(
            "CREATE TABLE users AS SELECT i AS id, 'u' || i || '@example.com' AS email,"
            " 'User ' || i AS name FROM range(20) t(i)"
        )
    first = probe(
        ("pyarrow.dataset",), ["sync", "run", "users_to_archive", "--json"], cwd=workspace
    )
    assert [run["added"] for run in json.loads(str(first["out"]))] == [20]
    assert first["loaded"] == ["pyarrow.dataset"]  # the trip, learnt

    again = probe(
        ("pyarrow.dataset",), ["sync", "run", "users_to_archive", "--json"], cwd=workspace
    )

    assert [(r["status"], r["added"]) for r in json.loads(str(again["out"]))] == [("success", 0)]
    assert again["loaded"] == []
