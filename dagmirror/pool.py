"""The one bounded worker pool: a queue drained by a fixed number of workers inside the caller's TaskGroup.

The engine's stages (listing, planning, fetching, confirming deletions) and deploy's requests all run on it,
so back-pressure, shutdown and failure work the same way everywhere (rclone's `fs/sync/pipe.go`):

- `put` waits while the queue is full, so a fast producer never runs ahead of slow workers;
- `join` waits until every item put so far is done (work may put more items: a lister adds sub-prefixes);
- `close` says no more items will come; workers finish what is queued, then stop, and `close` returns;
- an exception in a worker fails the caller's TaskGroup, which cancels every other stage of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from dagmirror.errors import DagmirrorError

T = TypeVar("T")
R = TypeVar("R")


class _Stop:
    """The end-of-work marker: one per worker, queued after the last item."""


_STOP = _Stop()


class WorkerPool(Generic[T]):
    """`work` applied to every item put, by `workers` tasks, with at most `maxsize` items waiting (0: no
    bound, for pools whose own workers add items and so must never wait on themselves)."""

    def __init__(self, work: Callable[[T], Awaitable[None]], *, workers: int, maxsize: int = 0) -> None:
        if workers < 1:
            raise ValueError("a pool needs at least one worker")
        self._work = work
        self._workers = workers
        self._queue: asyncio.Queue[T | _Stop] = asyncio.Queue(maxsize=maxsize)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, tg: asyncio.TaskGroup) -> WorkerPool[T]:
        self._tasks = [tg.create_task(self._worker()) for _ in range(self._workers)]
        return self

    async def put(self, item: T) -> None:
        await self._queue.put(item)

    def put_nowait(self, item: T) -> None:
        self._queue.put_nowait(item)

    async def join(self) -> None:
        await self._queue.join()

    async def close(self) -> None:
        for _ in self._tasks:
            await self._queue.put(_STOP)
        if self._tasks:  # not gather: a worker's exception is the TaskGroup's to report, not close()'s
            await asyncio.wait(self._tasks)

    async def _worker(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, _Stop):
                    return
                await self._work(item)
            finally:
                self._queue.task_done()


async def bounded_map(items: Sequence[T], work: Callable[[T], Awaitable[R]], *, concurrency: int) -> list[R]:
    """`work` over `items` by at most `concurrency` workers; results in the order of `items`.

    The first DagmirrorError stops the workers from starting more items (requests in flight finish) and is
    raised as itself once the pool has drained; anything else is a bug and cancels the pool.
    """
    if not items:
        return []
    results: dict[int, R] = {}
    failed: list[DagmirrorError] = []

    async def one(i: int) -> None:
        if failed:
            return
        try:
            results[i] = await work(items[i])
        except DagmirrorError as exc:
            failed.append(exc)

    workers = min(concurrency, len(items))
    async with asyncio.TaskGroup() as tg:
        pool = WorkerPool(one, workers=workers, maxsize=2 * workers).start(tg)
        for i in range(len(items)):
            await pool.put(i)
        await pool.close()
    if failed:
        raise failed[0]
    return [results[i] for i in range(len(items))]
