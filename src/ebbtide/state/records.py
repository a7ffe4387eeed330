"""The history's values under their first address; they live in `ebbtide.values` now, below
the ports that name them. Kept for code written against this path (`services/scheduler.py`)."""

from ebbtide.values import FailureGroup as FailureGroup
from ebbtide.values import Lease as Lease
from ebbtide.values import RunRecord as RunRecord

__all__ = ["FailureGroup", "Lease", "RunRecord"]
