"""One sync in a fresh process: `python -m bench.child ROOT MAPPING` prints the run as JSON.

Kept apart from the parent so `ru_maxrss` is the peak memory of this sync alone.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from ebbtide.config.workspace import STATE_DIR, load_workspace
from ebbtide.services.sync import SyncService
from ebbtide.snapshots.sent_journal import journal_path


def journal_bytes(root: Path, mapping: str, run_id: int) -> int:
    """The size of the run's sent-record journal (kept for replays)."""
    path = journal_path(root / STATE_DIR, mapping, run_id)
    return path.stat().st_size if path.exists() else 0


def main(root: str, mapping: str) -> None:
    started = time.perf_counter()
    run = SyncService(load_workspace(Path(root))).run(mapping)
    wall_s = time.perf_counter() - started
    result = {
        "status": str(run.status),
        "error": run.error,
        "wall_s": round(wall_s, 3),
        "extracted": run.extracted,
        "added": run.added,
        "updated": run.updated,
        "deleted": run.deleted,
        "sent": run.loaded_new + run.loaded_updated + run.loaded_deleted + run.failed,
        "loaded": run.loaded_new + run.loaded_updated + run.loaded_deleted,
        "failed": run.failed,
        "phases": {
            "extract": run.extract_s,
            "diff": run.diff_s,
            "load": run.load_s,
            "commit": run.commit_s,
        },
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "journal_mb": round(journal_bytes(Path(root), mapping, run.id) / 2**20, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:3])
