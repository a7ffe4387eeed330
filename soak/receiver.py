"""`python -m soak.receiver --log FILE.jsonl --delay-s S`: the demo receiver, logging data too.

The demo receiver's log keeps op and key only; the soak rebuilds the destination's whole view
from the log, so each line here also carries the record's data.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path
from typing import Any

from ebbtide.demo.receiver import Receiver

_LOGGED = ("op", "key", "data", "idempotency_key", "accepted")


class DataLoggingReceiver(Receiver):
    def _write_log(self, seen: list[dict[str, Any]]) -> None:
        if self._log is None:
            return
        self._log.writelines(json.dumps({k: r[k] for k in _LOGGED}) + "\n" for r in seen)
        self._log.flush()  # before the answer: a record is in the log once it has arrived


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m soak.receiver", description=__doc__)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--delay-s", type=float, default=0.0)
    args = parser.parse_args()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    receiver = DataLoggingReceiver(port=0, log_path=args.log)
    receiver.delay_s = args.delay_s
    with receiver:
        print(f"listening on {receiver.url}", flush=True)
        stopping.wait()


if __name__ == "__main__":
    main()
