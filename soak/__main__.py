"""`python -m soak [--trials N] [--seed S]`: kill syncs at random and check every recovery.

See bench/README.md ("make soak"). Exits 1 if any trial broke a rule.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from tests.e2e.harness import ReceiverProcess, Workspace

from soak import checks
from soak.fork import Syncs
from soak.log import LogTail
from soak.recovery import SYNC_TIMEOUT_S
from soak.report import WIDTH, show
from soak.trial import Soak, Trial, describe, run_trial

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, help="default: a random one, printed")
    parser.add_argument("--rows", type=int, default=3000, help="the model's rows at the start")
    parser.add_argument("--most", type=int, default=150, help="most adds/updates/deletes each")
    parser.add_argument("--delay-s", type=float, default=0.02, help="receiver latency")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    return parser.parse_args(argv)


@contextmanager
def data_receiver(log: Path, delay_s: float) -> Iterator[ReceiverProcess]:
    """The harness's receiver handle around `soak.receiver`, whose log carries the data."""
    args = [sys.executable, "-m", "soak.receiver", "--log", str(log), "--delay-s", str(delay_s)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    receiver = ReceiverProcess(process, line.removeprefix("listening on ").strip(), log)
    try:
        if not line.startswith("listening on "):
            raise SystemExit(f"the receiver did not start: {line!r}")
        yield receiver
    finally:
        receiver.stop()


def soak_all(args: argparse.Namespace, console: Console, work: Path) -> list[Trial]:
    with data_receiver(work / "received.jsonl", args.delay_s) as receiver:
        workspace = Workspace.create(work / "ws", receiver.url, args.rows)
        syncs = Syncs(workspace)
        try:
            soak = Soak(workspace, syncs, LogTail(receiver.log), args.seed, args.most)
            _first_sync(soak)
            trials = [_trial(soak, n, console) for n in range(1, args.trials + 1)]
            cross_check_history(workspace, trials, console)
            return trials
        finally:
            syncs.close()


def _first_sync(soak: Soak) -> None:
    process, name = soak.syncs.start()
    process.wait(timeout=SYNC_TIMEOUT_S)
    done = soak.syncs.finished(process, name)
    if done.returncode != 0:
        raise SystemExit(f"the first full sync failed ({done.returncode}): {done.stderr}")


def _trial(soak: Soak, number: int, console: Console) -> Trial:
    trial = run_trial(soak, number)
    for problem in trial.violations:
        _violation(trial, problem, console)
    if number % 20 == 0:
        console.log(f"{number} trials, {soak.tail.read()} records received")
    return trial


def cross_check_history(workspace: Workspace, trials: list[Trial], console: Console) -> None:
    """Each trial read the killed run's status from the state store; `ebbtide runs list
    --json`, run once at the end (a CLI start per trial would cost more than the trials),
    must show every killed run as interrupted or cancelled too."""
    args = [*workspace.cli_args("runs", "list", "--json"), "--limit", "1000000"]
    done = subprocess.run(args, capture_output=True, text=True, env=workspace.env, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"`ebbtide runs list --json` exited {done.returncode}: {done.stderr}")
    listed = {run["id"]: run for run in json.loads(done.stdout)}
    for trial in trials:
        if trial.kill is None or trial.kill.run_id is None or not trial.landed:
            continue
        status = listed.get(trial.kill.run_id, {}).get("status")
        recovered = (trial.recovery and trial.recovery.run) or {}
        for problem in checks.killed_status(trial.plan.kind, status, recovered):
            _violation(trial, f"`runs list --json`: {problem}", console)


def _violation(trial: Trial, problem: str, console: Console) -> None:
    if problem not in trial.violations:
        trial.violations.append(problem)
    console.print(f"[red]VIOLATION[/] {describe(trial)} {problem}", highlight=False)


def changed_sources(since: float) -> list[str]:
    """ebbtide's files written since the soak began. Forked syncs run the modules imported at
    the start with those imported later read from disk: a tree edited meanwhile (say, by a
    colleague) mixes two versions, and the violations after that may be the mix's."""
    root = REPO / "src" / "ebbtide"
    return sorted(
        str(path.relative_to(REPO)) for path in root.rglob("*.py") if path.stat().st_mtime > since
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(1 << 32)
    console = Console() if Console().is_terminal else Console(width=WIDTH)
    console.log(f"crash soak: {args.trials} trials, seed {args.seed}")
    work = Path(tempfile.mkdtemp(prefix="ebbtide-soak-"))
    started, started_at = time.monotonic(), time.time()
    try:
        trials = soak_all(args, console, work)
    finally:
        if args.keep:
            console.log(f"kept the work folder {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    show(console, trials, time.monotonic() - started)
    violations = sum(len(t.violations) for t in trials)
    if changed := changed_sources(started_at):
        console.log(f"[yellow]ebbtide's code changed during the soak:[/] {', '.join(changed)}")
    console.log(f"seed {args.seed}: {violations} violations")
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
