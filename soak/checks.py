"""What must hold after every recovery; each broken rule is one violation, in words."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from soak.model import Change

STATUS_OF_KILLED = {
    "SIGKILL": {"interrupted"},
    "SIGTERM": {"cancelled", "interrupted"},
    "SIGSTOP": {"interrupted"},  # taken over while stopped
}


def view_matches(view: dict[int, Any], model: dict[int, Any]) -> list[str]:
    missing = sorted(model.keys() - view.keys())
    extra = sorted(view.keys() - model.keys())
    stale = sorted(k for k in model.keys() & view.keys() if model[k] != view[k])
    problems = []
    for what, keys in (("missing", missing), ("deleted but still there", extra)):
        if keys:
            problems.append(f"the receiver's view: {len(keys)} keys {what}, e.g. {keys[:5]}")
    if stale:
        k = stale[0]
        problems.append(
            f"the receiver's view: {len(stale)} keys with stale data,"
            f" e.g. {k}: has {view[k]}, model {model[k]}"
        )
    return problems


def deliveries(records: list[dict[str, Any]], change: Change, in_flight: int) -> list[str]:
    """Every record of the trial carries a changed key; resends stay within the in-flight."""
    keys = [r["key"] for r in records]
    problems = []
    if unexpected := sorted(set(keys) - change.keys):
        problems.append(f"{len(unexpected)} unchanged keys were sent, e.g. {unexpected[:5]}")
    if (resent := resends(records)) > in_flight:
        problems.append(f"{resent} records resent, more than the {in_flight} in flight")
    if refused := [r["key"] for r in records if not r["accepted"]]:
        problems.append(f"the receiver refused {len(refused)} records, e.g. {refused[:5]}")
    return problems


def resends(records: list[dict[str, Any]]) -> int:
    return len(records) - len({r["key"] for r in records})


def killed_status(kind: str, status: str | None, recovered: dict[str, Any]) -> list[str]:
    """A kill that landed after the run had committed leaves `success`: then the next run
    must have found nothing to send."""
    if status in STATUS_OF_KILLED[kind]:
        return []
    changes = sum(recovered.get(k, 0) for k in ("added", "updated", "deleted"))
    if status == "success" and changes == 0:
        return []
    return [f"the killed run is {status!r} in the history after {kind}"]


def statuses(state_db: Path) -> dict[int, str]:
    """Every run's status, read from the state store without writing to it."""
    con = sqlite3.connect(f"file:{state_db}?mode=ro", uri=True, timeout=30)
    try:
        return {int(i): str(s) for i, s in con.execute("SELECT id, status FROM runs")}
    finally:
        con.close()


def tracebacks(root: Path, names: list[str]) -> list[str]:
    return [
        f"a Python traceback on the stderr of {name}"
        for name in names
        if "Traceback" in (root / f"{name}.err").read_text()
    ]
