"""What starts a pass: the interval (with jitter, and backoff after failures), a wake-up (SIGUSR1, POST /sync,
an S3 event from SQS), and the signals that stop the daemon. The sleep and the randomness are injectable, so
tests need no wall clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

from dagmirror.config import ServiceConfig
from dagmirror.errors import DagmirrorError, SourceError
from dagmirror.events import Inbox, Watch, parse_message, result_of, route
from dagmirror.http import SyncAnswer
from dagmirror.metrics import TriggerMetrics
from dagmirror.models import SyncReport
from dagmirror.source.queue import EventQueue, QueueMessage

log = logging.getLogger("dagmirror")
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class Interval:
    """The delay before a mapping's next pass: the interval +-jitter; after n failures in a row,
    interval x 2^(n-1), at most max_backoff. Jitter spreads a fleet so it does not poll in lockstep.
    The interval depends on how the mapping's last pass learned what changed (`ServiceConfig.interval_for`:
    a release poll is one request, a listing one per 1,000 files)."""

    interval_for: Callable[[str], float]
    jitter: float
    max_backoff: float
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self, failures: int, mode: str = "objects") -> float:
        base = self.interval_for(mode)
        if failures:
            base = min(self.max_backoff, base * 2 ** (failures - 1))
        spread = self.jitter * base
        return max(0.0, base + self.rng.uniform(-spread, spread))


async def sleep_or_wake(delay: float, wake: asyncio.Event, sleep: Sleep = asyncio.sleep) -> None:
    """Return after `delay` (as `sleep` counts it) or as soon as `wake` is set, whichever comes first."""
    if wake.is_set():
        return
    sleeper = asyncio.ensure_future(sleep(delay))
    waker = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, waker):
            task.cancel()
        await asyncio.gather(sleeper, waker, return_exceptions=True)


class Signals:
    """SIGUSR1 asks for a pass now; the first SIGTERM/SIGINT asks for the staged shutdown, a second one
    exits at once (128+signal): renames are atomic, so even then no torn file is ever visible."""

    HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

    def __init__(self, *, on_pass: Callable[[], None], on_stop: Callable[[], None], grace: float) -> None:
        self._on_pass = on_pass
        self._on_stop = on_stop
        self._grace = grace
        self._stops = 0

    @contextlib.contextmanager
    def installed(self, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        for sig in self.HANDLED:
            loop.add_signal_handler(sig, self.handle, sig)
        try:
            yield
        finally:
            for sig in self.HANDLED:
                loop.remove_signal_handler(sig)

    def handle(self, signum: int) -> None:
        if signum == signal.SIGUSR1:
            log.info("SIGUSR1: immediate pass requested")
            self._on_pass()
            return
        self._stops += 1
        name = signal.Signals(signum).name
        if self._stops > 1:
            log.error("second %s: exiting at once", name)
            os._exit(128 + signum)
        log.info("%s: finishing the pass in flight (grace %ss), then exiting", name, self._grace)
        self._on_stop()


class EventTrigger:
    """S3 event notifications from a queue: a message that concerns a mapping wakes it at once; the message
    is deleted only after a pass of every mapping it concerns, started after it came, succeeded (`Inbox`).
    Events can come late, twice, out of order or not at all, so they only ever wake a pass that reads the
    bucket afresh; the interval stays the backstop. A queue that fails is retried with backoff and never
    stops the daemon: it then polls at its interval as it would without events."""

    def __init__(
        self,
        open_queue: Callable[[], Awaitable[EventQueue]] | None,
        watches: Sequence[Watch],
        *,
        wake: Callable[[str], None],
        started: Callable[[str], int],
        metrics: TriggerMetrics,
        sleep: Sleep = asyncio.sleep,
        wait: float = 20.0,
        visibility: float = 60.0,
        max_backoff: float = 300.0,
    ) -> None:
        self.queue: EventQueue | None = None  # opened by run(), retried like a receive when that fails
        self._open_queue = open_queue
        self._watches = tuple(watches)
        self._wake = wake
        self._started = started
        self._metrics = metrics
        self._sleep = sleep
        self._wait = wait
        self._visibility = visibility
        self._max_backoff = max_backoff
        self.inbox = Inbox()
        self._deletable: list[str] = []
        self._flush = asyncio.Event()

    def _backoff(self, failures: int) -> float:
        return min(self._max_backoff, 2.0**failures)

    def after_pass(self, mapping: str, number: int, pass_id: str, report: SyncReport) -> None:
        """Called by a mapping's runner after its pass `number` (counted from 1) succeeded."""
        self.pass_succeeded(mapping, number)

    def pass_succeeded(self, mapping: str, number: int) -> None:
        covered = self.inbox.covered(mapping, number)
        if covered:
            self._deletable += covered
            self._flush.set()

    async def serve(self, stop: asyncio.Event) -> None:
        """`run`, where a bug stops the events, not the daemon: the interval still polls. Without a queue
        (`open_queue` None), nothing."""
        if self._open_queue is None:
            return
        try:
            await self.run(stop)
        except Exception as exc:
            log.error(  # noqa: TRY400 - one line; the traceback only at -vv (debug)
                "events stopped by an internal error, polling only: %s: %s",
                type(exc).__name__,
                exc,
                exc_info=exc if log.isEnabledFor(logging.DEBUG) else None,
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Receive until `stop`, then delete what the last passes covered (within 5 s: what is left comes
        back after its visibility timeout, and the next start's first pass covers it)."""
        receiver = asyncio.create_task(self._receive_loop(stop), name="events-receive")
        deleter = asyncio.create_task(self._delete_loop(stop), name="events-delete")
        try:
            await stop.wait()
        finally:
            receiver.cancel()
            self._flush.set()
            await asyncio.gather(receiver, return_exceptions=True)
            try:  # bounded: the shutdown has a grace period to keep
                await asyncio.wait_for(deleter, timeout=5.0)
            except TimeoutError:
                left = len(self._deletable)
                log.warning("events: %d message(s) not deleted at shutdown; they come back", left)

    async def aclose(self) -> None:
        if self.queue is not None:
            await self.queue.aclose()

    async def _receive_loop(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                assert self._open_queue is not None  # serve() runs this only with a queue
                self.queue = self.queue or await self._open_queue()
                messages = await self.queue.receive(
                    max_messages=10, wait=self._wait, visibility=self._visibility
                )
            except DagmirrorError as exc:  # SourceError, or a ConfigError opening the queue
                failures += 1
                self._metrics.queue_errors.labels("receive").inc()
                delay = self._backoff(failures)
                log.warning("events: cannot receive, polling only; retry in %.0fs: %s", delay, exc)
                await sleep_or_wake(delay, stop, self._sleep)
                continue
            failures = 0
            for message in messages:
                self.take(message)

    def take(self, message: QueueMessage) -> None:
        """Route one message: wake the mappings it concerns, or drop it (deleted, counted) if none."""
        parsed = parse_message(message.body)
        mappings = route(parsed, self._watches)
        result: str = result_of(parsed, mappings)
        if not mappings:
            log.debug("events: dropped a %s message %s %s", result, message.message_id, parsed.reason)
            self._deletable.append(message.receipt)
            self._flush.set()
        elif self.inbox.add(message.message_id, message.receipt, {m: self._started(m) for m in mappings}):
            for mapping in sorted(mappings):
                self._wake(mapping)
        else:
            result = "duplicate"
        self._metrics.events.labels(result).inc()

    async def _delete_loop(self, stop: asyncio.Event) -> None:
        failures = 0
        while True:
            await self._flush.wait()
            self._flush.clear()
            while self._deletable and self.queue is not None:
                batch = self._deletable[:10]
                try:
                    await self.queue.delete(batch)
                except SourceError as exc:
                    failures += 1
                    self._metrics.queue_errors.labels("delete").inc()
                    log.warning("events: cannot delete %d message(s), will retry: %s", len(batch), exc)
                    if stop.is_set():
                        return
                    await self._sleep(self._backoff(failures))
                    continue
                failures = 0
                del self._deletable[: len(batch)]
                self._metrics.events_deleted.inc(len(batch))
            if stop.is_set():
                return


async def open_sqs_queue(config: ServiceConfig) -> EventQueue:
    """The SQS queue of `sqs_queue`, with the first mapping's region and profile."""
    from dagmirror.source.sqs import SqsQueue  # the SDK loads only when a queue is configured

    first = config.mappings[0].config
    return await SqsQueue.open(
        config.sqs_queue or "",
        endpoint_url=config.sqs_endpoint_url,
        region=first.region,
        profile=first.profile,
    )


def watches(config: ServiceConfig) -> list[Watch]:
    """What each mapping's events look like: its bucket, prefix and mode."""
    return [
        Watch(m.name, m.config.source.bucket, m.config.source.prefix, m.config.mode) for m in config.mappings
    ]


class SyncLimiter:
    """A token bucket for POST /sync: `burst` passes at once, then one per `refill` seconds. A pass costs
    one GET in releases mode but a whole listing in objects mode, so a caller in a loop must not be able to
    turn the daemon into a LIST flood."""

    def __init__(self, *, burst: int = 3, refill: float = 10.0, clock: Callable[[], float]) -> None:
        self._burst, self._refill, self._clock = burst, refill, clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> float:
        """0 when a pass may start now (a token is taken), else the seconds until one may."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) / self._refill)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) * self._refill


class SyncRequests:
    """POST /sync: a pass of every mapping soon. Idempotent: while a requested pass has not started yet (the
    runners' wake events are all set), another request joins it; beyond that `SyncLimiter` decides."""

    def __init__(
        self,
        wakes: Sequence[asyncio.Event],
        metrics: TriggerMetrics,
        request_pass: Callable[[], None],
        limiter: SyncLimiter | None = None,
    ) -> None:
        self._wakes = tuple(wakes)
        self._metrics = metrics
        self._request_pass = request_pass
        self._limiter = limiter or SyncLimiter(clock=time.monotonic)

    def __call__(self) -> SyncAnswer:
        if all(w.is_set() for w in self._wakes):
            outcome, retry_after = "coalesced", 0.0
        else:
            retry_after = self._limiter.take()
            outcome = "limited" if retry_after else "accepted"
        self._metrics.sync_requests.labels(outcome).inc()
        if outcome == "accepted":
            log.info("POST /sync: immediate pass requested")
            self._request_pass()
        return SyncAnswer(outcome, retry_after)
