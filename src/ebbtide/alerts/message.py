"""An alert as every channel renders it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

EVENT_TITLES = {
    "failed": "failed",
    "partial_success": "partially succeeded",
    "recovered": "recovered",
    "test": "test alert",
}


@dataclass(frozen=True)
class AlertMessage:
    """What happened to a mapping's sync, with what a person needs to act on it."""

    event: str  # failed | partial_success | recovered | test
    mapping: str
    run_id: int | None
    status: str
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    top_error: str | None = None  # the largest group of failed records
    action: str | None = None  # its recommended action
    url: str | None = None  # the run in `ebbtide serve`
    reminder: bool = False  # still failing, told again after `remind_every`
    # Error groups this incident had not announced yet: why this alert went out.
    new_errors: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        still = "still " if self.reminder else ""
        what = EVENT_TITLES.get(self.event, self.event)
        if self.reminder:
            what = {"failed": "failing", "partial_success": "partly failing"}.get(self.event, what)
        run = f" (run {self.run_id})" if self.run_id is not None else ""
        return f"[ebbtide] {self.mapping} {still}{what}{run}"

    def counts_line(self) -> str:
        c = self.counts
        return (
            f"extracted {c.get('extracted', 0):,}; changes +{c.get('added', 0):,}"
            f" ~{c.get('updated', 0):,} -{c.get('deleted', 0):,}; loaded"
            f" {c.get('loaded', 0):,}; failed {c.get('failed', 0):,}"
        )

    def text(self) -> str:
        """The plain-text body (email, in-app)."""
        lines = [self.title, "", f"Status: {self.status}", f"Records: {self.counts_line()}"]
        if self.error:
            lines.append(f"Error: {self.error}")
        lines += [f"New error: {e}" for e in self.new_errors]
        if self.top_error:
            lines.append(f"Most failed records: {self.top_error}")
        if self.action:
            lines.append(f"Recommended action: {self.action}")
        if self.url:
            lines.append(f"Run: {self.url}")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "reminder": self.reminder,
            "mapping": self.mapping,
            "run_id": self.run_id,
            "status": self.status,
            "title": self.title,
            "counts": dict(self.counts),
            "error": self.error,
            "top_error": self.top_error,
            "new_errors": list(self.new_errors),
            "recommended_action": self.action,
            "url": self.url,
        }


class AlertTimeout(Exception):
    """A channel did not answer in time; the text says who and how long (never empty)."""

    def __init__(self, endpoint: str, timeout_s: float) -> None:
        super().__init__(f"no answer from {endpoint} within {round(timeout_s, 2):g} s")


class Notifier(Protocol):
    """A channel: its name and the host:port it reaches (no secrets), and a send that raises on
    failure or raises AlertTimeout once `timeout_s` has passed, connecting included."""

    label: str
    endpoint: str

    def send(self, message: AlertMessage, timeout_s: float) -> None: ...
