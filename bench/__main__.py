"""`python -m bench [sync|serve|destinations] [--sizes N,N] [--records N] [--json FILE] [--keep]
[--repeat N] [--quick]`, or `python -m bench warehouse [--pg-rows N] [--mysql-rows N]
[--only postgres|mysql] [--json FILE] [--keep]` (bench/warehouse_diff.py): see bench/README.md."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from bench.destinations import RECORDS, DestinationRow, run_destinations
from bench.destinations import table as destinations_table
from bench.measure import Measurement
from bench.receiver import ReceiverProcess
from bench.report import WIDTH, load_note, receiver_note, write_json
from bench.serve import Knobs, ServeRow, run_serve, serve_json, show_all
from bench.suite import Suite

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(tempfile.gettempdir()) / "ebbtide-bench-cache"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "part",
        nargs="?",
        choices=("all", "sync", "serve", "destinations", "warehouse"),
        default="all",
        help="sync: the sync scenarios only; serve: the serve scenarios only; destinations:"
        " each vendor emulator at its default limits; warehouse: diff: local against diff:"
        " warehouse on PostgreSQL and MariaDB, its own options (not part of all;"
        " `python -m bench warehouse --help`) (default: all)",
    )
    parser.add_argument(
        "--sizes",
        default="1000000,10000000",
        type=lambda text: [int(n.replace("_", "")) for n in text.split(",") if n],
        help="model sizes in rows, comma-separated (default: 1000000,10000000)",
    )
    parser.add_argument(
        "--records",
        type=int,
        default=RECORDS,
        help=f"destinations: records sent to each emulator (default: {RECORDS:,})",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder afterwards")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every scenario N times and keep the fastest (for a busy machine)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="serve: a 30 s spread schedule and half the API requests (about 1.5 minutes)",
    )
    return parser.parse_args(argv)


def run_all(args: argparse.Namespace, console: Console, work: Path) -> None:
    """The sync scenarios against one receiver process, then the serve scenarios, then the
    table (and the JSON file)."""
    load_before = os.getloadavg()[0]
    results: list[Measurement] = []
    note = ""
    if args.part in ("all", "sync"):
        results, note = run_syncs(args, console, work)
    serve_rows: list[ServeRow] = []
    if args.part in ("all", "serve"):
        knobs = Knobs.quick() if args.quick else Knobs()
        serve_rows = run_serve(REPO, work, knobs, console.log)
    destination_rows: list[DestinationRow] = []
    if args.part in ("all", "destinations"):
        destination_rows = run_destinations(REPO, work, console.log, args.records)
    note = f"{note} {load_note(load_before, os.getloadavg()[0])}".strip()
    if results or serve_rows:
        show_all(console, results, serve_rows, note)
    if destination_rows:
        console.print(destinations_table(destination_rows, args.records))
        for row in destination_rows:
            if row.error:
                console.print(f"{row.type}: {row.error}", markup=False, highlight=False)
    if args.json:
        write_json(args.json, results, note)
        document = json.loads(args.json.read_text(encoding="utf-8"))
        document["serve"] = serve_json(serve_rows)
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        console.log(f"results written to {args.json}")


def run_syncs(
    args: argparse.Namespace, console: Console, work: Path
) -> tuple[list[Measurement], str]:
    """Every sync scenario against one receiver process; the note checks its count."""
    results: list[Measurement] = []
    with ReceiverProcess(REPO) as receiver:
        console.log(f"receiver in its own process at {receiver.url}; work folder {work}")
        suite = Suite(REPO, work, CACHE, receiver.url, console.log, args.keep, args.repeat)
        for rows in args.sizes:
            results += suite.size(rows)
        results.append(suite.bare_client())
        results.append(suite.payloads())
    return results, receiver_note(receiver.records, receiver.requests, sum(suite.sent))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["warehouse"]:  # its own options: bench/warehouse_diff.py
        from bench.warehouse_diff import main as warehouse_main

        warehouse_main(argv[1:])
        return
    args = parse_args(argv)
    console = Console()
    if not console.is_terminal:  # a pipe or a file: 80 columns would squeeze the table
        console = Console(width=WIDTH)
    work = Path(tempfile.mkdtemp(prefix="ebbtide-bench-"))
    try:
        run_all(args, console, work)
    finally:
        if args.keep:
            console.log(f"kept the work folder {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
