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

    @property
    def title(self) -> str:
        still = "still " if self.reminder else ""
        what = EVENT_TITLES.get(self.event, self.event)
        if self.event == "failed" and self.reminder:
            what = "failing"
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
            "recommended_action": self.action,
            "url": self.url,
        }


class Notifier(Protocol):
    """A channel: what it shows as its target (no secrets), and a send that raises on failure."""

    target: str

    def send(self, message: AlertMessage) -> None: ...
