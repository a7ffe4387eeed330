"""The webhook receiver, run in a process of its own: `python -m ebbtide.demo.receiver`."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

RECEIVER_MODULE = Path("src/ebbtide/demo/receiver.py")
_TOTALS = re.compile(r"received (\d+) records in (\d+) requests")


class ReceiverProcess:
    """Starts the receiver on a free loopback port in count-only mode; `url` is where to POST."""

    def __init__(self, repo: Path, startup_timeout_s: float = 30.0) -> None:
        self.repo = repo
        self.startup_timeout_s = startup_timeout_s
        self.url = ""
        self.records: int | None = None
        self.requests: int | None = None
        self.stderr = ""
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> ReceiverProcess:
        self._wait_for_module()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "ebbtide.demo.receiver", "--port", "0", "--count-only"],
            cwd=self.repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if not line.startswith("listening on "):
            self._stop()
            raise RuntimeError(f"the receiver did not start: {line!r}\n{self.stderr[-2000:]}")
        self.url = line.removeprefix("listening on ")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()

    def _wait_for_module(self) -> None:
        """The receiver may still be being written by someone else: poll for it a while."""
        deadline = time.monotonic() + self.startup_timeout_s
        while not (self.repo / RECEIVER_MODULE).is_file():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{RECEIVER_MODULE} does not exist yet")
            time.sleep(1.0)

    def _stop(self) -> None:
        if self._process is None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            _, err = self._process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            _, err = self._process.communicate()
        self.stderr = err or ""
        if found := _TOTALS.search(self.stderr):
            self.records, self.requests = int(found[1]), int(found[2])
        self._process = None
