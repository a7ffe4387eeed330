"""`python -m bench [--sizes N,N] [--json FILE] [--keep] [--repeat N]`: see bench/README.md."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from rich.console import Console

from bench.measure import Measurement
from bench.receiver import ReceiverProcess
from bench.report import WIDTH, load_note, receiver_note, show, write_json
from bench.suite import Suite

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(tempfile.gettempdir()) / "ebbtide-bench-cache"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--sizes",
        default="1000000,10000000",
        type=lambda text: [int(n.replace("_", "")) for n in text.split(",") if n],
        help="model sizes in rows, comma-separated (default: 1000000,10000000)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder afterwards")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every scenario N times and keep the fastest (for a busy machine)",
    )
    return parser.parse_args(argv)


def run_all(args: argparse.Namespace, console: Console, work: Path) -> None:
    """Every scenario against one receiver process, then the table (and the JSON file)."""
    load_before = os.getloadavg()[0]
    results: list[Measurement] = []
    with ReceiverProcess(REPO) as receiver:
        console.log(f"receiver in its own process at {receiver.url}; work folder {work}")
        suite = Suite(REPO, work, CACHE, receiver.url, console.log, args.keep, args.repeat)
        for rows in args.sizes:
            results += suite.size(rows)
        results.append(suite.bare_client())
        results.append(suite.payloads())
    note = receiver_note(receiver.records, receiver.requests, sum(suite.sent))
    note += " " + load_note(load_before, os.getloadavg()[0])
    show(console, results, note)
    if args.json:
        write_json(args.json, results, note)
        console.log(f"results written to {args.json}")


def main(argv: list[str] | None = None) -> None:
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
