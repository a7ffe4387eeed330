"""`/metrics` in Prometheus's text format.

Counters are this process's: runs it finished, records it loaded and failed, how long its runs
took (several serve processes are summed by Prometheus, as usual). Gauges are read from the
state store when scraped, so every process reports the same: syncs waiting for a worker, and
seconds since each mapping's last successful sync.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ebbtide.values import RunRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))


class _StateGauges(Collector):
    def __init__(
        self,
        queue: Callable[[], dict[str, int]],
        last_successes: Callable[[], dict[str, datetime | None]],
    ) -> None:
        self.queue, self.last_successes = queue, last_successes

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "ebbtide_queue_depth", "Syncs waiting for a worker, by why they run", labels=["kind"]
        )
        for kind, waiting in sorted(self.queue().items()):
            depth.add_metric([kind], waiting)
        yield depth
        since = GaugeMetricFamily(
            "ebbtide_seconds_since_last_success",
            "Seconds since the mapping's last successful sync (absent: never succeeded)",
            labels=["mapping"],
        )
        now = datetime.now(UTC)
        for mapping, finished in sorted(self.last_successes().items()):
            if finished is not None:
                since.add_metric([mapping], (now - finished).total_seconds())
        yield since


class ServeMetrics:
    def __init__(
        self,
        queue: Callable[[], dict[str, int]],
        last_successes: Callable[[], dict[str, datetime | None]],
    ) -> None:
        self.registry = CollectorRegistry()
        self.runs = Counter(
            "ebbtide_runs",
            "Runs this process finished, by mapping and status",
            ["mapping", "status"],
            registry=self.registry,
        )
        self.loaded = Counter(
            "ebbtide_records_loaded",
            "Records the destination accepted, by destination and operation",
            ["destination", "operation"],
            registry=self.registry,
        )
        self.failed = Counter(
            "ebbtide_records_failed",
            "Records that failed to load, by destination and error class",
            ["destination", "error_class"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "ebbtide_run_duration_seconds",
            "How long runs took, by mapping",
            ["mapping"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateGauges(queue, last_successes))

    def observe(self, run: RunRecord, destination: str) -> None:
        """A run this process finished."""
        self.runs.labels(run.mapping, run.status.value).inc()
        for operation, count in (
            ("new", run.loaded_new),
            ("updated", run.loaded_updated),
            ("deleted", run.loaded_deleted),
        ):
            self.loaded.labels(destination, operation).inc(count)
        for error_class, count in run.failed_by_class.items():
            self.failed.labels(destination, error_class).inc(count)
        if run.duration_s is not None:
            self.duration.labels(run.mapping).observe(run.duration_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
