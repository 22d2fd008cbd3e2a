"""The status publisher of `dagmirror run`: one per mapping, it keeps the mapping's `Status` up to date from
the passes (`passed`, `failed`) and writes it to `metadata/fleet/<prefix><instance>.json`:

- at once (in the background) when what it says changed: the release, the mode, the error, files moved;
- otherwise every `heartbeat` seconds, so readers can tell a live instance from a dead one;
- a last time, as `stopped`, during the daemon's staged shutdown.

Publishing never breaks the mirror: writes run in their own task under a time limit, a failure is one
warning line (repeated only when the reason changes) and a count, and the next attempt comes sooner than
the heartbeat (10 s, doubling up to the heartbeat)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from dagmirror.config import MirrorConfig, ServiceConfig
from dagmirror.fleet.status import STOPPED, Status, one_line, status_key
from dagmirror.models import SyncReport
from dagmirror.source import ObjectSink

if TYPE_CHECKING:
    from dagmirror.source.store import S3Store

log = logging.getLogger("dagmirror")
SinkFactory = Callable[[], Awaitable[ObjectSink]]
Pause = Callable[[float, asyncio.Event], Awaitable[None]]
RETRY_AFTER = 10.0  # seconds before the first retry of a failed write; doubles up to the heartbeat
FIRST_WRITE = 10.0  # a first pass that takes longer than this is announced before it ends
LAST_WRITE_TIMEOUT = 5.0  # the 'stopped' write during shutdown: the pod's grace period counts it


def dagmirror_version() -> str:
    try:
        return importlib.metadata.version("dagmirror")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


async def pause(delay: float, wake: asyncio.Event) -> None:
    """Return after `delay` seconds or as soon as `wake` is set. (Not `asyncio.wait_for`: on Python 3.11
    it can swallow a cancellation that comes as `wake` is set, and the shutdown would wait a heartbeat.)"""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay):
            await wake.wait()


class StatusPublisher:
    """One mapping's status: updated by the runner after every pass, written by `run` and `close`."""

    def __init__(
        self,
        instance: str,
        prefix: str,
        open_sink: SinkFactory,
        *,
        heartbeat: float,
        clock: Callable[[], float] = time.time,
        pause: Pause = pause,
        on_write: Callable[[bool], None] = lambda ok: None,
        timeout: float = 10.0,
    ) -> None:
        self.key = status_key(prefix, instance)
        self.status = Status(instance, prefix, 0.0, heartbeat, clock(), dagmirror_version())
        self._open_sink = open_sink
        self._sink: ObjectSink | None = None
        self._clock = clock
        self._pause = pause
        self._on_write = on_write
        self._timeout = timeout
        self._changed = asyncio.Event()
        self._failures = 0  # failed writes in a row
        self._logged: str | None = None  # the last failure logged, so a lasting one is one line

    @property
    def pending(self) -> bool:
        """Whether a change waits to be written (before the next heartbeat)."""
        return self._changed.is_set()

    # -- what the runner tells us --------------------------------------------------------------------------
    def passed(self, report: SyncReport) -> None:
        """A complete pass (`report.seconds` long, ending now)."""
        self._update(
            replace(
                self.status,
                mode=report.mode,
                release=report.release,
                release_seq=report.release_seq,
                last_success=self._clock() - report.seconds,
                last_error=_problem(report),
                failures=0,
            ),
            moved=report.changed,
        )

    def failed(self, error: str) -> None:
        """A failed pass: DEST kept its last good tree."""
        self._update(
            replace(self.status, last_error=one_line(error), failures=self.status.failures + 1), moved=False
        )

    def _update(self, new: Status, *, moved: bool) -> None:
        if moved or _says(new) != _says(self.status):
            self._changed.set()
        self.status = new

    # -- writing -------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Until cancelled: write when the status changed, else every heartbeat; after a failed write, retry
        sooner than the heartbeat."""
        delay = min(FIRST_WRITE, self.status.heartbeat)
        while True:
            await self._pause(delay, self._changed)
            if await self.write():
                delay = self.status.heartbeat
            else:
                delay = min(self.status.heartbeat, RETRY_AFTER * 2 ** min(self._failures - 1, 16))

    async def close(self) -> None:
        """The last write: `stopped`, so readers do not wait for this instance; then close the sink."""
        self.status = replace(self.status, state=STOPPED)
        try:
            await self.write(within=min(self._timeout, LAST_WRITE_TIMEOUT))
        finally:
            if self._sink is not None:
                sink, self._sink = self._sink, None
                await sink.aclose()

    async def write(self, *, within: float | None = None) -> bool:
        """Write the status now, `within` seconds (default: the publisher's time limit); False (logged and
        counted, never raised) when that did not work."""
        timeout = self._timeout if within is None else within
        self._changed.clear()  # this write carries the change; a failed one is retried by `run`
        status = self.status = replace(self.status, written=self._clock())
        try:
            async with asyncio.timeout(timeout):
                if self._sink is None:
                    self._sink = await self._open_sink()
                await self._sink.put(self.key, status.encode())
        except Exception as exc:  # whatever goes wrong here, the mirror must go on
            self._failed(exc, timeout)
            return False
        if self._failures:
            log.info("status published again to %s", self.key)
        self._failures, self._logged = 0, None
        self._on_write(True)
        return True

    def _failed(self, exc: Exception, timeout: float) -> None:
        self._failures += 1
        self._on_write(False)
        why = f"{type(exc).__name__}: {exc}" if not str(exc) or isinstance(exc, TimeoutError) else str(exc)
        if isinstance(exc, TimeoutError):
            why = f"no answer within {timeout:g}s"
        if why != self._logged:
            log.warning("status not published to %s (the mirror goes on): %s", self.key, why)
            self._logged = why


def _says(status: Status) -> tuple[object, ...]:
    """What a reader acts on: a change of any of these is written at once, not at the next heartbeat."""
    return (status.state, status.mode, status.release, status.release_seq, status.last_error)


def _problem(report: SyncReport) -> str | None:
    """Why a complete pass was not clean: the delete guard, or files that failed."""
    if report.guard:
        return one_line(f"delete guard: {report.guard}")
    if report.failures:
        first = report.failures[0]
        return one_line(f"{report.failed} files failed, e.g. {first.key}: {first.error}")
    return None


def s3_sink(config: MirrorConfig) -> SinkFactory:
    """The status goes to the mapping's own bucket, reached like its source (endpoint, region, profile)."""

    async def open_sink() -> ObjectSink:
        # The SDK loads with the first status write, in a thread: its import would stall the event loop.
        S3Store = await asyncio.to_thread(_store_class)
        c = config
        return await S3Store.open(
            c.source.bucket, endpoint_url=c.endpoint_url, region=c.region, profile=c.profile
        )

    return open_sink


def _store_class() -> type[S3Store]:
    from dagmirror.source.store import S3Store

    return S3Store


def publishers(
    config: ServiceConfig,
    *,
    clock: Callable[[], float] = time.time,
    sink: Callable[[MirrorConfig], SinkFactory] = s3_sink,
    on_write: Callable[[str, bool], None] = lambda mapping, ok: None,
) -> dict[str, StatusPublisher]:
    """One publisher per mapping, by mapping name ({} when `status` is off). Two mappings of the same bucket
    and prefix would write the same key: only the first one publishes."""
    found: dict[str, StatusPublisher] = {}
    if not config.status:
        return found
    owners: dict[tuple[str, str], str] = {}
    for m in config.mappings:
        where = (m.config.source.bucket, m.config.source.prefix)
        if where in owners:
            log.warning("mapping %s: %s publishes the status of %s", m.name, owners[where], m.config.source)
            continue
        owners[where] = m.name
        found[m.name] = StatusPublisher(
            config.instance_id,
            m.config.source.prefix,
            sink(m.config),
            heartbeat=config.heartbeat,
            clock=clock,
            on_write=functools.partial(on_write, m.name),
        )
    return found
