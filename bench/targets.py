"""The targets a 2-core machine must meet, and each measurement's verdict against them."""

from __future__ import annotations

from dataclasses import dataclass

from bench.measure import Measurement

FULL = "full sync"
NO_CHANGE = "no-change sync"
CHANGED = "1% updated, 0.5% deleted"
BARE = "bare aiohttp client"
PAYLOADS = "payloads: customized object + array"
PAYLOAD_ROWS = 1_000_000

# Issue 16's targets: whole-command wall time of a fresh `ebbtide sync run`, 2 cores.
MIN_FULL_RATE = 400_000  # records/s
MIN_PAYLOAD_RATE = 1_000_000  # payloads built per second
MAX_SLOWDOWN_VS_BARE = 2.0
MAX_RSS_MB = {1_000_000: 250, 10_000_000: 700}
MAX_WALL_S = {
    (NO_CHANGE, 1_000_000): 0.5,
    (NO_CHANGE, 10_000_000): 3.0,
    (CHANGED, 1_000_000): 0.7,
    (FULL, 1_000_000): 2.5,
    (FULL, 10_000_000): 25.0,
}


@dataclass(frozen=True)
class Verdict:
    """The targets that apply to one measurement and whether it met them (None: no target)."""

    target: str
    passed: bool | None
    why: str = ""  # what missed, when it did


def verdict(m: Measurement, bare: Measurement | None) -> Verdict:
    """Check `m` against every target that applies to its scenario and size."""
    if m.scenario == BARE:
        return Verdict("yardstick", None)
    checks: list[tuple[str, bool]] = []  # (target, met)
    limit = MAX_WALL_S.get((m.scenario, m.rows))
    if limit is not None:
        checks.append((f"≤ {limit:g} s", m.wall_s <= limit))
    if m.scenario == PAYLOADS:
        checks.append((f"≥ {MIN_PAYLOAD_RATE // 1000}k rec/s", m.rate >= MIN_PAYLOAD_RATE))
    if m.scenario == FULL:
        checks.append((f"≥ {MIN_FULL_RATE // 1000}k rec/s", m.rate >= MIN_FULL_RATE))
        if bare is not None:
            # Judged on the whole sync; the load phase alone is shown beside it.
            slower = bare.rate / m.rate if m.rate else float("inf")
            load_s = m.phases.get("load", 0.0)
            load_slower = bare.rate * load_s / m.sent if m.sent else float("inf")
            checks.append(
                (
                    f"≤ 2× bare ({slower:.1f}×; load phase {load_slower:.1f}×)",
                    slower <= MAX_SLOWDOWN_VS_BARE,
                )
            )
    memory = MAX_RSS_MB.get(m.rows)
    if memory is not None and m.scenario in (FULL, NO_CHANGE, CHANGED):
        checks.append((f"≤ {memory} MB", m.max_rss_mb <= memory))
    missed = [target.split(" (")[0] for target, met in checks if not met]
    if m.status != "success" or m.sent != m.expected:
        # A fast sync that did not deliver what it should is no pass.
        missed.insert(0, f"{m.status}: sent {m.sent:,} of {m.expected:,}")
    target = ", ".join(target for target, _ in checks) or "—"
    if not checks and not missed:
        return Verdict(target, None)
    return Verdict(target, not missed, "; ".join(missed))
