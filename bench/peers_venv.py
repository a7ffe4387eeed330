"""The throwaway virtualenv that holds the peers (drt, dlt) for `python -m bench.peers`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

VENV = Path("/tmp/ebbtide-peers-venv")
INSTALL_TIMEOUT_S = 900

# The warehouse engine and Arrow at the project's own versions, so every tool reads the same
# DuckDB file with the same engine. Then one pinned requirement per peer.
BASE_PINS = ("duckdb==1.5.6", "pyarrow==26.0.1")
PEER_PINS = {
    "drt": ("drt-core[duckdb]==1.2.1",),
    "dlt": ("dlt[duckdb,parquet]==1.31.0",),
}
DISTRIBUTIONS = {"drt": "drt-core", "dlt": "dlt"}


@dataclass(frozen=True)
class Peer:
    """A peer as installed: its version, or why it could not be installed."""

    name: str
    version: str | None
    problem: str | None = None


def python() -> Path:
    return VENV / "bin" / "python"


def prepare(log: Callable[[str], None]) -> dict[str, Peer]:
    """Create the venv (or reuse it when its pins are the same) and install every peer."""
    problem = _create()
    if problem:
        return {name: Peer(name, None, problem) for name in PEER_PINS}
    failed: dict[str, str] = {}
    if _marker_pins() != _all_pins():
        log(f"installing {', '.join(_all_pins())} into {VENV} (pip, from PyPI)")
        problem = _pip_install(BASE_PINS)
        if problem:
            return {name: Peer(name, None, problem) for name in PEER_PINS}
        for name, pins in PEER_PINS.items():
            if problem := _pip_install(pins):
                failed[name] = problem
    peers = {
        name: Peer(name, None, failed[name]) if name in failed else _installed(name)
        for name in PEER_PINS
    }
    if all(p.problem is None for p in peers.values()):
        (VENV / "ebbtide-pins.json").write_text(json.dumps(_all_pins()), encoding="utf-8")
    return peers


def _all_pins() -> list[str]:
    return [*BASE_PINS, *(pin for pins in PEER_PINS.values() for pin in pins)]


def _marker_pins() -> list[str] | None:
    marker = VENV / "ebbtide-pins.json"
    if not marker.is_file() or not python().is_file():
        return None
    pins: list[str] = json.loads(marker.read_text(encoding="utf-8"))
    return pins


def _create() -> str | None:
    if python().is_file():
        return None
    done = subprocess.run(
        [sys.executable, "-m", "venv", str(VENV)], capture_output=True, text=True, check=False
    )
    return None if done.returncode == 0 else f"venv failed: {done.stderr.strip()[-500:]}"


def _pip_install(pins: tuple[str, ...]) -> str | None:
    argv = [str(python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    try:
        done = subprocess.run(
            [*argv, *pins], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return f"pip install {' '.join(pins)} timed out"
    if done.returncode == 0:
        return None
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    return f"pip install {' '.join(pins)} failed: {' '.join(errors)[-400:]}"


def _installed(name: str) -> Peer:
    """The peer's installed version, read by the venv's interpreter."""
    code = f"import importlib.metadata as m; print(m.version({DISTRIBUTIONS[name]!r}))"
    done = subprocess.run([str(python()), "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pins = " ".join(PEER_PINS[name])
        return Peer(name, None, f"not installed ({pins}): {done.stderr.strip()[-300:]}")
    return Peer(name, done.stdout.strip())
