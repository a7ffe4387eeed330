"""Exponential backoff with full jitter, honouring the destination's Retry-After."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """How often and how long to wait before a retriable batch counts as failed."""

    attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        if retry_after is not None and math.isfinite(retry_after):
            # The destination said when: waiting less would only earn another 429.
            return min(max(retry_after, 0.0), self.cap_s * 4)
        ceiling = min(self.cap_s, self.base_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)
