"""Bounded exponential backoff with full jitter; the sleep and randomness are injectable for tests."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from dagmirror.errors import DagmirrorError

T = TypeVar("T")
_JITTER = random.Random()  # noqa: S311 - jitter spreads load, it is not a secret; seeding per call costs
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.1
    max_delay: float = 5.0

    def delay(self, retry_number: int, rng: random.Random) -> float:
        """Full jitter (AWS architecture blog): spreads a fleet's retries instead of synchronising them."""
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * (2**retry_number)))


async def retrying(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
    on_retry: Callable[[DagmirrorError], None] | None = None,
) -> T:
    """Run `call`, retrying DagmirrorErrors marked transient; the last error propagates."""
    rng = rng or _JITTER
    for retry_number in range(policy.attempts):
        try:
            return await call()
        except DagmirrorError as exc:
            if not exc.transient or retry_number == policy.attempts - 1:
                raise
            if on_retry is not None:
                on_retry(exc)
            await sleep(policy.delay(retry_number, rng))
    raise AssertionError("unreachable: attempts >= 1")  # pragma: no cover
