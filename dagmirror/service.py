"""The daemon: passes on an interval with jitter, backoff after failures, SIGUSR1 for an immediate pass,
staged shutdown on SIGTERM/SIGINT, metrics, readiness and audit. Several mappings in one process.

Shutdown happens in one place (`Service.run`), in stages: stop starting passes, let the passes in flight
finish within `grace`, cancel what is left (installs in threads still finish or remove their temp file),
write state, stop the HTTP server. A second signal exits at once; renames are atomic, so even then no
torn file is ever visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
import uuid
from collections.abc import Awaitable, Callable

from dagmirror.audit import AuditLog
from dagmirror.config import Mapping, MirrorConfig, ServiceConfig
from dagmirror.engine import Mirror
from dagmirror.errors import DagmirrorError
from dagmirror.http import HttpServer, Probes
from dagmirror.metrics import Metrics
from dagmirror.source import ObjectSink

log = logging.getLogger("dagmirror")
__all__ = ["Mapping", "Service", "ServiceConfig"]


class _Runner:
    """One mapping: its Mirror, whether it ever completed a pass, and a wake-up event for SIGUSR1."""

    def __init__(self, mapping: Mapping, mirror: Mirror) -> None:
        self.name = mapping.name
        self.mirror = mirror
        self.completed_once = False
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class Service:
    def __init__(
        self,
        config: ServiceConfig,
        *,
        mirror_factory: Callable[[MirrorConfig], Mirror] = Mirror,
        sink_factory: Callable[[], Awaitable[ObjectSink]] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.metrics = Metrics(clock)
        self.audit = AuditLog(config.audit_directory, config.host, clock)
        self._runners = [_Runner(m, mirror_factory(m.config)) for m in config.mappings]
        self._sink_factory = sink_factory
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._stop = asyncio.Event()
        self._signals = 0
        self._shipping: asyncio.Task[None] | None = None
        self.http: HttpServer | None = None
        for runner in self._runners:
            self.metrics.register(runner.name)

    # -- probes --
    def healthy(self) -> bool:
        return not any(
            r.task is not None and r.task.done() and not self._stop.is_set() for r in self._runners
        )

    def readiness(self) -> tuple[bool, dict[str, object]]:
        detail: dict[str, object] = {}
        ready = True
        for r in self._runners:
            stale = self.metrics.stale_for(r.name)
            ok = r.completed_once and stale < self.config.staleness_limit
            ready &= ok
            detail[r.name] = {
                "ready": ok,
                "completed_once": r.completed_once,
                "staleness_seconds": _finite(stale),
            }
        return ready, detail

    # -- control --
    def request_pass(self) -> None:
        for r in self._runners:
            r.wake.set()

    def stop(self) -> None:
        self._stop.set()
        self.request_pass()  # wake sleeping loops so they see the stop

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGUSR1:
            log.info("SIGUSR1: immediate pass requested")
            self.request_pass()
            return
        self._signals += 1
        if self._signals > 1:
            log.error("second %s: exiting at once", signal.Signals(signum).name)
            os._exit(128 + signum)
        log.info(
            "%s: finishing the pass in flight (grace %ss), then exiting",
            signal.Signals(signum).name,
            self.config.grace,
        )
        self.stop()

    # -- the run --
    async def run(self, *, install_signals: bool = True) -> int:
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            if self.config.http:
                self.http = HttpServer(
                    self.config.http, Probes(self.healthy, self.readiness, self.metrics.exposition)
                )
                await self.http.start()
                log.info("serving /healthz /readyz /metrics on %s:%s", self.http.host, self.http.port)
            for r in self._runners:
                r.task = asyncio.create_task(self._loop(r), name=f"mirror-{r.name}")
            await self._stop.wait()
            await self._shutdown()
        finally:
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
                    loop.remove_signal_handler(sig)
        return 0

    async def _shutdown(self) -> None:
        tasks = [r.task for r in self._runners if r.task is not None]
        _, pending = await asyncio.wait(tasks, timeout=self.config.grace) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            log.warning(
                "cancelled %d pass(es) still running after the %ss grace period",
                len(pending),
                self.config.grace,
            )
        for r in self._runners:
            await r.mirror.aclose()
        if self._shipping is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._shipping, timeout=5)
        if self.http is not None:
            await self.http.stop()

    async def _loop(self, runner: _Runner) -> None:
        failures = 0
        while not self._stop.is_set():
            runner.wake.clear()
            ok = await self.run_pass(runner)
            failures = 0 if ok else failures + 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runner.wake.wait(), timeout=self._next_delay(failures))

    def _next_delay(self, failures: int) -> float:
        """The interval with +-jitter; after failures, exponential backoff up to max_backoff."""
        base = self.config.interval
        if failures:
            base = min(self.config.max_backoff, base * 2 ** (failures - 1))
        spread = self.config.jitter * base
        return max(0.0, base + self._rng.uniform(-spread, spread))

    async def run_pass(self, runner: _Runner) -> bool:
        pass_id = uuid.uuid4().hex[:12]
        started = time.monotonic()
        try:
            report = await runner.mirror.sync_once()
        except DagmirrorError as exc:
            self.metrics.failed(runner.name, time.monotonic() - started)
            log.error(  # noqa: TRY400 - a failed pass is one line; -vv shows tracebacks elsewhere
                "pass failed, keeping the last good tree: %s",
                exc,
                extra={"mapping": runner.name, "pass_id": pass_id},
            )
            return False
        runner.completed_once = True
        self.metrics.observe(runner.name, report)
        if self.audit.append(report, mapping=runner.name, pass_id=pass_id):
            self._ship_audit()
        log.info(
            "pass: %d downloaded, %d deleted, %d unchanged, %d failed in %.2fs",
            report.downloaded,
            report.deleted,
            report.unchanged,
            report.failed,
            report.seconds,
            extra={"mapping": runner.name, "pass_id": pass_id, "guard": report.guard},
        )
        return True

    def _ship_audit(self) -> None:
        """Ship in the background, one shipment at a time: a slow or failing S3 never delays a pass."""
        if self._sink_factory is None or (self._shipping is not None and not self._shipping.done()):
            return
        self._shipping = asyncio.create_task(self._ship_once(self._sink_factory))

    async def _ship_once(self, factory: Callable[[], Awaitable[ObjectSink]]) -> None:
        sink = await factory()
        try:
            await self.audit.ship(sink)
        finally:
            await sink.aclose()


def _finite(value: float) -> float | None:
    return None if value == float("inf") else round(value, 3)
