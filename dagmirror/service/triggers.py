"""What starts a pass: the interval (with jitter, and backoff after failures), a wake-up (SIGUSR1), and the
signals that stop the daemon. The sleep and the randomness are injectable, so tests need no wall clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

log = logging.getLogger("dagmirror")
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class Interval:
    """The delay before a mapping's next pass: the interval +-jitter; after n failures in a row,
    interval x 2^(n-1), at most max_backoff. Jitter spreads a fleet so it does not poll in lockstep."""

    interval: float
    jitter: float
    max_backoff: float
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self, failures: int) -> float:
        base = self.interval
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
