"""Prometheus metrics for the daemon, labelled by mapping. One registry per service: no global state."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from dagmirror.models import SyncReport

_OBJECT_RESULTS = ("listed", "downloaded", "unchanged", "deleted", "rejected", "failed")
_PASS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_EVENT_RESULTS = ("matched", "unrelated", "duplicate", "setup", "foreign", "malformed")
_SYNC_OUTCOMES = ("accepted", "coalesced", "limited")
_HOOK_OUTCOMES = ("ok", "failed", "timeout", "dropped")


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


def _alarms(r: CollectorRegistry) -> tuple[Counter, Counter, Counter]:
    """Per mapping: refused deletions, refused releases, and instance status writes by outcome."""
    guard_trips = Counter(
        "dagmirror_delete_guard_trips_total",
        "Passes whose deletions the delete guard refused",
        ["mapping"],
        registry=r,
    )
    untrusted = Counter(
        "dagmirror_untrusted_releases_total",
        "Passes that refused a release its trust did not verify (signed releases)",
        ["mapping"],
        registry=r,
    )
    status_writes = Counter(
        "dagmirror_status_writes_total",
        "Instance status writes (metadata/fleet/) by outcome",
        ["mapping", "outcome"],
        registry=r,
    )
    return guard_trips, untrusted, status_writes


class TriggerMetrics:
    """What woke passes and what ran after them: queue messages, POST /sync, hooks. Not per mapping: one
    queue, one endpoint and one set of hooks serve every mapping of the daemon."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.events = Counter(
            "dagmirror_events_total", "Queue messages by what became of them", ["result"], registry=r
        )
        self.events_deleted = Counter("dagmirror_events_deleted_total", "Queue messages deleted", registry=r)
        self.queue_errors = Counter(
            "dagmirror_event_queue_errors_total", "Failed queue calls", ["operation"], registry=r
        )
        self.sync_requests = Counter(
            "dagmirror_sync_requests_total", "POST /sync requests by outcome", ["outcome"], registry=r
        )
        self.hooks = Counter(
            "dagmirror_hook_runs_total", "Hook runs by outcome", ["hook", "outcome"], registry=r
        )
        self.hook_seconds = Histogram(
            "dagmirror_hook_duration_seconds", "Hook run time", ["hook"], buckets=_PASS_BUCKETS, registry=r
        )
        for result in _EVENT_RESULTS:
            self.events.labels(result)
        for op in ("receive", "delete"):
            self.queue_errors.labels(op)
        for outcome in _SYNC_OUTCOMES:
            self.sync_requests.labels(outcome)

    def register_hook(self, hook: str) -> None:
        for outcome in _HOOK_OUTCOMES:
            self.hooks.labels(hook, outcome)


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
        self.guard_trips, self.untrusted, self.status_writes = _alarms(r)
        self.last_success, self.staleness, self.release_info = _gauges(r)
        self.triggers = TriggerMetrics(r)

    def register(self, mapping: str) -> None:
        """Create every series up front so dashboards see zeros, not gaps."""
        for result in _OBJECT_RESULTS:
            self.objects.labels(mapping, result)
        for outcome in ("ok", "failed"):
            self.passes.labels(mapping, outcome)
            self.status_writes.labels(mapping, outcome)
        self.guard_trips.labels(mapping)
        self.untrusted.labels(mapping)
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
        if report.untrusted:
            self.untrusted.labels(mapping).inc()
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
