"""`make demo`: build a sample warehouse, sync it twice through the real CLI, explain each sync."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from ebbtide.demo.receiver import Receiver
from ebbtide.demo.warehouse import change_warehouse
from ebbtide.services.workspace_init import init_workspace

console = Console()

# The demo warehouse has users whose email lacks an "@" (see warehouse.py); the local CRM
# rejects them, so the walk-through shows how a partially successful sync explains itself.
BROKEN_EMAIL_KEYS = [13, 1010, 2007]


def ebbtide(workspace: Path, *args: str) -> int:
    """Run the real `ebbtide` command, showing it as a person would type it."""
    console.print(f"\n[bold cyan]$ ebbtide {' '.join(args)}[/]")
    env = {**os.environ, "COLUMNS": os.environ.get("COLUMNS", "120")}
    done = subprocess.run(
        [sys.executable, "-m", "ebbtide", "--workspace", str(workspace), *args],
        env=env,
        check=False,
    )
    console.print(f"[dim](exit code {done.returncode})[/]")
    return done.returncode


def main(workspace: Path = Path("demo-workspace")) -> None:
    shutil.rmtree(workspace, ignore_errors=True)
    console.print(Rule("1. A new workspace with a sample warehouse"))
    for path in init_workspace(workspace, demo=True):
        console.print(f"created {path}")
    with Receiver() as crm:
        for key in BROKEN_EMAIL_KEYS:
            crm.reject(key, code="INVALID_EMAIL", message="email: not a valid address")
        os.environ["DEMO_HOOK_URL"] = crm.url
        console.print(f"A local webhook plays the CRM at {crm.url}")
        ebbtide(workspace, "validate")

        console.print(Rule("2. First sync: every row is new"))
        ebbtide(workspace, "sync", "run", "--all")

        console.print(Rule("3. The warehouse changes; the plan shows what the next sync sends"))
        for what, n in change_warehouse(workspace / "warehouse.duckdb").items():
            console.print(f"{what}: {n}")
        ebbtide(workspace, "sync", "plan", "users_to_crm", "--samples", "1")

        console.print(Rule("4. Second sync: only the changes travel"))
        ebbtide(workspace, "sync", "run", "--all")
        console.print(
            f"\nThe CRM received {crm.record_count:,} records in {crm.requests:,} requests."
        )

    console.print(Rule("5. The sync history, and one sync explained"))
    ebbtide(workspace, "runs", "list")
    ebbtide(workspace, "runs", "show", "2")
    console.print(
        f"\nThe workspace is in {workspace}/: try `ebbtide -w {workspace} runs list --json`."
    )


if __name__ == "__main__":
    main()
