"""One trial: change the model, start a sync, kill it at a chosen point, recover, check."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tests.e2e.harness import IN_FLIGHT_RECORDS, Workspace

from soak import checks
from soak.fork import Syncs
from soak.kill import Kill, KillContext, Plan, choose, kill
from soak.log import LogTail
from soak.model import Change, change_model, model_view
from soak.recovery import SYNC_TIMEOUT_S, Recovery, recover


@dataclass
class Soak:
    """What lives across trials: the workspace, its processes and the receiver's log."""

    workspace: Workspace
    syncs: Syncs
    tail: LogTail
    seed: int
    most: int  # the most rows added, updated or deleted per trial, each


@dataclass
class Trial:
    number: int
    plan: Plan
    change: Change
    kill: Kill | None = None
    recovery: Recovery | None = None
    resent: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def landed(self) -> bool:
        return self.kill is not None and self.kill.landed


def run_trial(soak: Soak, number: int) -> Trial:
    workspace = soak.workspace
    # A generator per trial: how the previous trials' kills fell does not change this one.
    rng = random.Random(f"{soak.seed}:{number}")
    change = change_model(workspace.root / "warehouse.duckdb", rng, number, soak.most)
    trial = Trial(number, choose(rng, change.size), change)
    first_record = soak.tail.read()
    last_run = max(checks.statuses(workspace.state_db), default=0)
    process, killed_name = soak.syncs.start()
    context = KillContext(workspace, soak.tail, last_run, change.size, rng)
    trial.kill = kill(trial.plan, process, context)
    stopped = process if trial.landed and trial.plan.kind == "SIGSTOP" else None
    trial.recovery = recover(workspace, soak.syncs, trial.kill, stopped)
    process.wait(timeout=SYNC_TIMEOUT_S)
    soak.tail.read()
    trial.resent = checks.resends(soak.tail.records[first_record:])
    trial.violations = _check(soak, trial, first_record, killed_name)
    return trial


def _check(soak: Soak, trial: Trial, first_record: int, killed_name: str) -> list[str]:
    assert trial.kill is not None and trial.recovery is not None
    workspace, recovery = soak.workspace, trial.recovery
    problems = _recovered(recovery)
    problems += checks.view_matches(soak.tail.view, model_view(workspace.root / "warehouse.duckdb"))
    trial_records = soak.tail.records[first_record:]
    problems += checks.deliveries(trial_records, trial.change, IN_FLIGHT_RECORDS)
    if trial.kill.run_id is None:
        problems.append("the killed sync exited before its run appeared in the history")
    elif trial.landed:
        status = checks.statuses(workspace.state_db).get(trial.kill.run_id)
        problems += checks.killed_status(trial.plan.kind, status, recovery.run or {})
    problems += checks.tracebacks(workspace.root.parent, [killed_name, *recovery.names])
    return problems


def _recovered(recovery: Recovery) -> list[str]:
    run, finished = recovery.run, recovery.finished
    if finished.returncode == 0 and run is not None and run.get("status") == "success":
        return []
    tail = (finished.stderr.strip() or finished.stdout.strip()).splitlines()[-3:]
    return [f"the recovery sync exited {finished.returncode}: {' / '.join(tail)}"]


def describe(trial: Trial) -> str:
    """A violating trial's details, enough to see what happened and to replay it."""
    kill, change = trial.kill, trial.change
    parts = [
        f"trial {trial.number}: {trial.plan.kind} at {trial.plan.point}",
        f"(after {trial.plan.records} records)" if trial.plan.point == "records" else "",
        f"run {kill.run_id if kill else None}, landed={trial.landed};",
        f"change +{len(change.added)} ~{len(change.updated)} -{len(change.deleted)};",
        f"resent {trial.resent};",
    ]
    if trial.recovery:
        parts.append(f"recovery after {trial.recovery.refused} refusals;")
    return " ".join(p for p in parts if p)
