"""Keeping a run's lease alive, and knowing locally when it may no longer be ours.

A run paused past its lease (a long GC pause, a frozen VM, SIGSTOP) must not send stale
records once it resumes: another run may have taken over and delivered newer values. The
keeper tracks, on the monotonic clock, until when the lease is surely held; past that, sending
waits for the heartbeat to renew the lease or to find it lost.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from ebbtide.errors import EbbtideError, LeaseLostError
from ebbtide.ports import StateStore
from ebbtide.state.store import StateStoreGoneError
from ebbtide.values import Lease

log = logging.getLogger(__name__)

_POLL_S = 0.05


class LeaseKeeper:
    """Heartbeats from a thread; `may_send()` says whether the run still owns its mapping."""

    def __init__(self, state: StateStore, lease: Lease, ttl_s: float) -> None:
        self.state, self.lease, self.ttl_s = state, lease, ttl_s
        self.lost = False
        # Renewed a little before the lease ends on the state store's clock.
        self._held_until = time.monotonic() + ttl_s * 0.8
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="ebbtide-heartbeat", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    async def may_send(self) -> bool:
        """True while the lease is surely held; waits while that is in doubt."""
        while not self.lost:
            if time.monotonic() < self._held_until:
                return True
            await asyncio.sleep(_POLL_S)
        return False

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            started = time.monotonic()
            try:
                self.state.heartbeat(self.lease, self.ttl_s)
            except LeaseLostError:
                log.warning("run %s lost its lease on %s", self.lease.run_id, self.lease.mapping)
                self.lost = True
                return
            except StateStoreGoneError as error:  # nothing more the run does can be recorded
                log.warning("%s", error)
                self.lost = True
                return
            except EbbtideError as error:  # the state store is unreachable: try again soon
                log.warning("heartbeat of run %s failed: %s", self.lease.run_id, error)
                continue
            self._held_until = started + self.ttl_s * 0.8
