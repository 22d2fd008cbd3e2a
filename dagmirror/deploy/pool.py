"""A bounded worker pool for deploy requests, in the engine's style: one TaskGroup, a bounded queue of
work, a fixed number of workers, an explicit end-of-work marker per worker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from dagmirror.errors import DagmirrorError

T = TypeVar("T")
R = TypeVar("R")


async def bounded_map(items: Sequence[T], work: Callable[[T], Awaitable[R]], *, concurrency: int) -> list[R]:
    """`work` over `items` by at most `concurrency` workers; results in the order of `items`.

    The first DagmirrorError stops the workers from taking more items (requests in flight finish) and is
    raised as itself once the pool has drained; anything else is a bug and cancels the pool.
    """
    if not items:
        return []
    workers = min(concurrency, len(items))
    queue: asyncio.Queue[int | None] = asyncio.Queue(maxsize=2 * workers)
    results: dict[int, R] = {}
    failed: list[DagmirrorError] = []

    async def feed() -> None:
        for i in range(len(items)):
            await queue.put(i)
        for _ in range(workers):
            await queue.put(None)

    async def worker() -> None:
        while (i := await queue.get()) is not None:
            if failed:
                continue
            try:
                results[i] = await work(items[i])
            except DagmirrorError as exc:
                failed.append(exc)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(feed())
        for _ in range(workers):
            tg.create_task(worker())
    if failed:
        raise failed[0]
    return [results[i] for i in range(len(items))]
