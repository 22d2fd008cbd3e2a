"""Prometheus metrics for the daemon, labelled by mapping. One registry per service: no global state."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from dagmirror.models import SyncReport

_OBJECT_RESULTS = ("listed", "downloaded", "unchanged", "deleted", "rejected", "failed")
_PASS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


def _gauges(registry: CollectorRegistry) -> tuple[Gauge, Gauge, Gauge]:
    """Last success, staleness, and the installed release."""
    return (
        Gauge(
            "dagmirror_last_success_timestamp_seconds",
            "Unix time of the last complete pass",
            ["mapping"],
            registry=registry,
        ),
        Gauge(
            "dagmirror_staleness_seconds",
            "Seconds since the last complete pass (+Inf before the first)",
            ["mapping"],
            registry=registry,
        ),
        Gauge(
            "dagmirror_release_info",
            "The release installed in DEST (1; no series while the mapping lists objects)",
            ["mapping", "release", "seq"],
            registry=registry,
        ),
    )


class Metrics:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._last_success: dict[str, float] = {}
        self._release: dict[str, tuple[str, str]] = {}  # mapping -> the (release, seq) labels now set
        r = self.registry
        self.pass_seconds = Histogram(
            "dagmirror_pass_duration_seconds",
            "Duration of sync passes",
            ["mapping"],
            buckets=_PASS_BUCKETS,
            registry=r,
        )
        self.passes = Counter(
            "dagmirror_passes_total", "Sync passes by outcome", ["mapping", "outcome"], registry=r
        )
        self.objects = Counter(
            "dagmirror_objects_total",
            "Objects by what the pass did with them",
            ["mapping", "result"],
            registry=r,
        )
        self.bytes = Counter(
            "dagmirror_downloaded_bytes_total", "Bytes downloaded and installed", ["mapping"], registry=r
        )
        self.requests = Counter(
            "dagmirror_requests_total",
            "S3 requests by operation and status",
            ["mapping", "operation", "status"],
            registry=r,
        )
        self.retries = Counter("dagmirror_retries_total", "Transient errors retried", ["mapping"], registry=r)
        self.guard_trips = Counter(
            "dagmirror_delete_guard_trips_total",
            "Passes whose deletions the delete guard refused",
            ["mapping"],
            registry=r,
        )
        self.last_success, self.staleness, self.release_info = _gauges(r)
        self.status_writes = Counter(
            "dagmirror_status_writes_total",
            "Instance status writes (metadata/fleet/) by outcome",
            ["mapping", "outcome"],
            registry=r,
        )

    def register(self, mapping: str) -> None:
        """Create every series up front so dashboards see zeros, not gaps."""
        for result in _OBJECT_RESULTS:
            self.objects.labels(mapping, result)
        for outcome in ("ok", "failed"):
            self.passes.labels(mapping, outcome)
            self.status_writes.labels(mapping, outcome)
        self.guard_trips.labels(mapping)
        self.retries.labels(mapping)
        self.bytes.labels(mapping)
        self.staleness.labels(mapping).set_function(lambda: self.stale_for(mapping))

    def observe(self, mapping: str, report: SyncReport) -> None:
        self.pass_seconds.labels(mapping).observe(report.seconds)
        self.passes.labels(mapping, "ok").inc()
        for result in _OBJECT_RESULTS:
            self.objects.labels(mapping, result).inc(getattr(report, result))
        self.bytes.labels(mapping).inc(report.bytes)
        self.retries.labels(mapping).inc(report.retries)
        if report.guard:
            self.guard_trips.labels(mapping).inc()
        for op_status, count in report.requests.items():
            operation, _, status = op_status.partition(" ")
            self.requests.labels(mapping, operation, status or "ok").inc(count)
        self._set_release(mapping, report)
        now = self._clock()
        self._last_success[mapping] = now
        self.last_success.labels(mapping).set(now)

    def _set_release(self, mapping: str, report: SyncReport) -> None:
        labels = (report.release, str(report.release_seq)) if report.release else None
        old = self._release.pop(mapping, None)
        if old is not None and old != labels:
            self.release_info.remove(mapping, *old)
        if labels is not None:
            self.release_info.labels(mapping, *labels).set(1)
            self._release[mapping] = labels

    def status_written(self, mapping: str, ok: bool) -> None:
        self.status_writes.labels(mapping, "ok" if ok else "failed").inc()

    def failed(self, mapping: str, seconds: float) -> None:
        self.pass_seconds.labels(mapping).observe(seconds)
        self.passes.labels(mapping, "failed").inc()

    def stale_for(self, mapping: str) -> float:
        last = self._last_success.get(mapping)
        return float("inf") if last is None else max(0.0, self._clock() - last)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
