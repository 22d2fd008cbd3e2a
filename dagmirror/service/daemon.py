"""The daemon: one `MappingRunner` per mapping inside one TaskGroup, probes, audit shipping, and the staged
shutdown.

Shutdown happens in one place (`Service.run`), in stages: stop starting passes, let the passes in flight
finish within `grace`, cancel what is left (installs in threads still finish or remove their temp file),
close each mirror (state is written), finish the audit shipment, stop the HTTP server. Every stage runs even
when an earlier one failed; a failure is one error line. A runner that dies of a bug (not a failed pass:
those are retried) is logged with its mapping, makes /healthz fail and stops the service, which then exits
1 so that its supervisor (Kubernetes) restarts it instead of it hanging on half its mappings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

from dagmirror.audit import S3_PREFIX, AuditLog
from dagmirror.config import Mapping, MirrorConfig, ServiceConfig, redact_url
from dagmirror.engine import Mirror
from dagmirror.errors import DagmirrorError
from dagmirror.fleet import StatusPublisher, publishers
from dagmirror.http import HttpServer, Probes
from dagmirror.metrics import Metrics
from dagmirror.models import SyncReport
from dagmirror.service.hooks import Hook, Hooks, configured_hooks
from dagmirror.service.triggers import (
    EventTrigger,
    Interval,
    Signals,
    Sleep,
    SyncRequests,
    open_sqs_queue,
    sleep_or_wake,
    watches,
)
from dagmirror.source import ObjectSink
from dagmirror.source.queue import EventQueue

log = logging.getLogger("dagmirror")
SinkFactory = Callable[[], Awaitable[ObjectSink]]
QueueFactory = Callable[[ServiceConfig], Awaitable[EventQueue]]
# After a successful pass: (mapping, pass number counted from 1, pass id, report).
AfterPass = Callable[[str, int, str, SyncReport], None]


class MappingRunner:
    """One mapping's loop: a pass, then wait for the interval (or backoff) or a wake-up, until stopped."""

    def __init__(
        self,
        mapping: Mapping,
        mirror: Mirror,
        *,
        metrics: Metrics,
        audit: AuditLog,
        on_audited: Callable[[], None],
        interval: Interval,
        sleep: Sleep,
        after_pass: Sequence[AfterPass] = (),
        status: StatusPublisher | None = None,
    ) -> None:
        self.name = mapping.name
        self.mirror = mirror
        self.completed_once = False
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.passes = 0  # passes started: an event covers the passes started after it came
        self.mode = "objects"  # how the last successful pass learned what changed: sets the interval
        self._after_pass = after_pass
        self._metrics = metrics
        self._audit = audit
        self._on_audited = on_audited
        self._interval = interval
        self._sleep = sleep
        self._status = status

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            self.wake.clear()
            ok = await self.one_pass()
            failures = 0 if ok else failures + 1
            await sleep_or_wake(self._interval.next_delay(failures, self.mode), self.wake, self._sleep)

    async def one_pass(self) -> bool:
        """One pass; a DagmirrorError is a failed pass (logged, retried later), anything else is a bug."""
        pass_id = uuid.uuid4().hex[:12]
        self.passes += 1
        number = self.passes
        started = time.monotonic()
        try:
            report = await self.mirror.sync_once()
        except DagmirrorError as exc:
            self._metrics.failed(self.name, time.monotonic() - started)
            if self._status is not None:
                self._status.failed(str(exc))
            log.error(  # noqa: TRY400 - a failed pass is one line; -vv shows tracebacks elsewhere
                "pass failed, keeping the last good tree: %s",
                exc,
                extra={"mapping": self.name, "pass_id": pass_id},
            )
            return False
        self.completed_once = True
        self.mode = report.mode
        self._metrics.observe(self.name, report)
        if self._status is not None:
            self._status.passed(report)
        if self._audit.append(report, mapping=self.name, pass_id=pass_id):
            self._on_audited()
        log.info(
            "pass: %d downloaded, %d deleted, %d unchanged, %d failed in %.2fs",
            report.downloaded,
            report.deleted,
            report.unchanged,
            report.failed,
            report.seconds,
            extra={"mapping": self.name, "pass_id": pass_id, "guard": report.guard},
        )
        for listener in self._after_pass:
            listener(self.name, number, pass_id, report)
        return True


class Service:
    def __init__(
        self,
        config: ServiceConfig,
        *,
        mirror_factory: Callable[[MirrorConfig], Mirror] = Mirror,
        sink_factory: SinkFactory | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        ship_timeout: float = 5.0,
        queue_factory: QueueFactory | None = None,
        hooks: Sequence[Hook] | None = None,
    ) -> None:
        self.config = config
        self.metrics = Metrics(clock)
        self.audit = AuditLog(config.audit_directory, config.host, clock)
        hooks = configured_hooks(config) if hooks is None else hooks
        self.hooks = Hooks(hooks, self.metrics.triggers, host=config.host, clock=clock)
        runners: dict[str, MappingRunner] = {}  # filled below: the trigger wakes runners by name
        self.events = event_trigger(config, queue_factory, runners, self.metrics, sleep)
        interval = Interval(
            config.interval_for,
            config.jitter,
            config.max_backoff,
            rng or random.Random(),  # noqa: S311 - jitter, not a secret
        )
        self.status = publishers(config, clock=clock, on_write=self.metrics.status_written)
        self._runners = [
            MappingRunner(
                m,
                mirror_factory(m.config),
                metrics=self.metrics,
                audit=self.audit,
                on_audited=self._ship_audit,
                interval=interval,
                sleep=sleep,
                after_pass=(self.hooks.after_pass, self.events.after_pass),
                status=self.status.get(m.name),
            )
            for m in config.mappings
        ]
        self._sink_factory = sink_factory
        self._ship_timeout = ship_timeout
        self._stop = asyncio.Event()
        self._crashed: list[str] = []  # mappings whose runner died of a bug
        self._shipping: asyncio.Task[None] | None = None
        self.http: HttpServer | None = None
        for runner in self._runners:
            self.metrics.register(runner.name)
            runners[runner.name] = runner

    # -- probes --
    def healthy(self) -> bool:
        return not self._crashed

    def readiness(self) -> tuple[bool, dict[str, object]]:
        return _readiness(self._runners, self.metrics, self.config.staleness_limit)

    # -- control --
    def request_pass(self) -> None:
        for r in self._runners:
            r.wake.set()

    def stop(self) -> None:
        self._stop.set()
        self.request_pass()  # wake sleeping loops so they see the stop

    # -- the run --
    async def run(self, *, install_signals: bool = True) -> int:
        """Serve until stopped; 0 after a clean stop, 1 when a runner died of a bug."""
        signals = Signals(on_pass=self.request_pass, on_stop=self.stop, grace=self.config.grace)
        loop = asyncio.get_running_loop()
        with signals.installed(loop) if install_signals else contextlib.nullcontext():
            try:
                await self._start_http()
                await self._run_mappings()
            finally:
                await self._shutdown()
        return 1 if self._crashed else 0

    async def _start_http(self) -> None:
        if not self.config.http:
            return
        sync = SyncRequests([r.wake for r in self._runners], self.metrics.triggers, self.request_pass)
        self.http = HttpServer(
            self.config.http,
            Probes(self.healthy, self.readiness, self.metrics.exposition, sync),
        )
        await self.http.start()
        log.info("serving /healthz /readyz /metrics, POST /sync on %s:%s", self.http.host, self.http.port)

    async def _run_mappings(self) -> None:
        """Every runner is a task of one TaskGroup, so none outlives `run`; stop waits `grace` for the
        passes in flight, then cancels them."""
        async with asyncio.TaskGroup() as group:
            events_stop = asyncio.Event()
            hooks = group.create_task(self.hooks.run(), name="hooks")
            events = group.create_task(self.events.serve(events_stop), name="events")
            for r in self._runners:
                r.task = group.create_task(self._supervised(r), name=f"mirror-{r.name}")
            heartbeats = [group.create_task(p.run(), name=f"status-{n}") for n, p in self.status.items()]
            await self._stop.wait()
            _, pending = await asyncio.wait(
                [r.task for r in self._runners if r.task], timeout=self.config.grace
            )
            for task in pending:
                task.cancel()
            if pending:
                log.warning(
                    "cancelled %d pass(es) still running after the %ss grace period",
                    len(pending),
                    self.config.grace,
                )
            events_stop.set()  # after the last passes: their messages are deleted before we go
            await asyncio.gather(events, return_exceptions=True)
            hooks.cancel()  # a hook command still running is killed with its process group
            for task in heartbeats:  # the last status ('stopped') is written by _shutdown
                task.cancel()

    async def _supervised(self, runner: MappingRunner) -> None:
        try:
            await runner.run(self._stop)
        except Exception as exc:  # a bug: catching it here lets the other mappings stop in stages
            self._crashed.append(runner.name)
            log.error(  # noqa: TRY400 - one line; the traceback only at -vv (debug)
                "mapping %s stopped by an internal error, shutting down: %s: %s",
                runner.name,
                type(exc).__name__,
                exc,
                extra={"mapping": runner.name},
                exc_info=exc if log.isEnabledFor(logging.DEBUG) else None,
            )
            self.stop()

    async def _shutdown(self) -> None:
        """Each stage runs even when an earlier one failed; a failure is one error line."""
        stages: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            (f"publishing the last status of {name}", p.close) for name, p in self.status.items()
        ]
        stages += [(f"closing mapping {r.name}", r.mirror.aclose) for r in self._runners]
        stages += [
            ("closing the event queue", self.events.aclose),
            ("finishing the audit shipment", self._finish_shipping),
            ("stopping HTTP", self._stop_http),
        ]
        for what, stage in stages:
            try:
                await stage()
            except Exception as exc:
                log.error(  # noqa: TRY400 - one line; the traceback only at -vv (debug)
                    "shutdown: %s failed: %s: %s",
                    what,
                    type(exc).__name__,
                    exc,
                    exc_info=exc if log.isEnabledFor(logging.DEBUG) else None,
                )

    async def _finish_shipping(self) -> None:
        task = self._shipping
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=self._ship_timeout)
        if not done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise TimeoutError(
                f"still running after {self._ship_timeout:g}s, cancelled (the records stay in "
                f"{self.audit.directory} and ship after the next change)"
            )
        if not task.cancelled():
            task.result()

    async def _stop_http(self) -> None:
        if self.http is not None:
            await self.http.stop()

    def _ship_audit(self) -> None:
        """Ship in the background, one shipment at a time: a slow or failing S3 never delays a pass."""
        if self._sink_factory is None or (self._shipping is not None and not self._shipping.done()):
            return
        self._shipping = asyncio.create_task(self._ship_once(self._sink_factory))

    async def _ship_once(self, factory: SinkFactory) -> None:
        prefix = self.config.audit_s3.prefix if self.config.audit_s3 else ""
        try:
            sink = await factory()
        except DagmirrorError as exc:  # e.g. bad credentials: the records stay local, the next change retries
            log.warning("audit shipment failed, will retry: %s", exc)
            return
        try:
            await self.audit.ship(sink, prefix=prefix or S3_PREFIX)
        finally:
            await sink.aclose()


def _readiness(
    runners: Sequence[MappingRunner], metrics: Metrics, limit: float
) -> tuple[bool, dict[str, object]]:
    """Ready when every mapping completed a pass and its last one is younger than `limit`."""
    detail: dict[str, object] = {}
    ready = True
    for r in runners:
        stale = metrics.stale_for(r.name)
        ok = r.completed_once and stale < limit
        ready &= ok
        detail[r.name] = {
            "ready": ok,
            "completed_once": r.completed_once,
            "staleness_seconds": _finite(stale),
        }
    return ready, detail


def s3_audit_sink(config: ServiceConfig) -> SinkFactory | None:
    """Where `audit_s3` ships: the bucket, reached like the first mapping's source (endpoint, region,
    profile). None when no audit bucket is configured."""
    target = config.audit_s3
    if target is None:
        return None
    first = config.mappings[0].config

    async def open_sink() -> ObjectSink:
        from dagmirror.source.store import S3Store  # the SDK loads only when shipping is configured

        return await S3Store.open(
            target.bucket, endpoint_url=first.endpoint_url, region=first.region, profile=first.profile
        )

    return open_sink


def event_trigger(
    config: ServiceConfig,
    queue_factory: QueueFactory | None,
    runners: dict[str, MappingRunner],
    metrics: Metrics,
    sleep: Sleep,
) -> EventTrigger:
    """The SQS trigger; it opens the queue when it runs, and does nothing when none is configured."""
    factory = queue_factory or (open_sqs_queue if config.sqs_queue else None)
    if factory is not None:
        log.info("waking passes on S3 events from %s", redact_url(config.sqs_queue or "a queue"))
    return EventTrigger(
        None if factory is None else lambda: factory(config),
        watches(config),
        wake=lambda mapping: runners[mapping].wake.set(),
        started=lambda mapping: runners[mapping].passes,
        metrics=metrics.triggers,
        sleep=sleep,
    )


def _finite(value: float) -> float | None:
    return None if value == float("inf") else round(value, 3)
