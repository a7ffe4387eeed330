"""Sync processes forked from the soak itself, with the CLI already imported.

`ebbtide sync run` spends about a second and a half of CPU importing before it does anything;
two syncs per trial, 200 trials, on two cores, would be most of the soak's time. So the soak
imports the CLI once and forks a child per sync, which runs the CLI's entry point with the
sync's arguments, environment and output files: its own process, PID and lease, killed and
stopped like any other. The soak forks only while it runs no thread of its own.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from tests.e2e.harness import LEASE_TTL_S, MAPPING, Finished, Workspace

# Read when ebbtide.services.sync is imported, so set before the CLI is.
os.environ["EBBTIDE_LEASE_TTL_S"] = f"{LEASE_TTL_S:g}"
# A sync frozen inside a state store write holds SQLite's lock: the others give up after this.
os.environ["EBBTIDE_STATE_LOCK_WAIT_S"] = "5"

from ebbtide.cli.app import main as ebbtide  # noqa: E402

_POLL_S = 0.01


class Forked:
    """A forked sync, with the parts of `subprocess.Popen` the soak and the harness use."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"sync process {self.pid} still running after {timeout:g}s")
            time.sleep(_POLL_S)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def stop_for_good(self) -> None:
        """At the end of the soak: whatever is left, stopped or not, goes."""
        self.send_signal(signal.SIGCONT)
        self.send_signal(signal.SIGKILL)
        if self.returncode is None:
            self.wait(10)


class Syncs:
    """Starts `ebbtide -w ROOT sync run users --json` in forked children, numbered."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.started: list[Forked] = []

    def start(self) -> tuple[Forked, str]:
        """A running sync and the name of its output files (`<name>.out`, `<name>.err`)."""
        name = f"sync-{len(self.started) + 1:04d}"
        base = self.workspace.root.parent / name
        args = ["-w", str(self.workspace.root), "sync", "run", MAPPING, "--json"]
        process = Forked(_fork(args, self.workspace.env, base))
        self.started.append(process)
        return process, name

    def finished(self, process: Forked, name: str) -> Finished:
        base = self.workspace.root.parent / name
        assert process.returncode is not None
        out, err = (base.with_suffix(suffix).read_text() for suffix in (".out", ".err"))
        return Finished(process.returncode, out, err)

    def close(self) -> None:
        for process in self.started:
            process.stop_for_good()


def _fork(args: list[str], env: dict[str, str], base: Path) -> int:
    # A thread holding a lock at the fork would leave the child that lock forever. Native
    # threads started by imports stay: jemalloc's (pyarrow) has fork handlers, and DuckDB's
    # belongs to its default connection, which ebbtide never uses.
    if threading.active_count() > 1:
        raise RuntimeError("the soak has a thread running: it cannot fork a sync safely")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(args, env, base)
    return pid


def _child(args: list[str], env: dict[str, str], base: Path) -> None:
    code = 1
    try:
        for fd, suffix in ((1, ".out"), (2, ".err")):
            os.dup2(os.open(base.with_suffix(suffix), os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = ["ebbtide", *args]
        ebbtide()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child must never return into the soak
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
