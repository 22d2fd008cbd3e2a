"""The one bounded worker pool (dagmirror/pool.py) that the engine's stages and deploy share."""

from __future__ import annotations

import asyncio

import pytest

from dagmirror.errors import SourceUnavailable
from dagmirror.pool import WorkerPool, bounded_map


async def test_put_waits_while_the_queue_is_full_so_producers_never_run_ahead() -> None:
    release = asyncio.Event()
    started: list[int] = []

    async def work(item: int) -> None:
        started.append(item)
        await release.wait()

    async with asyncio.TaskGroup() as tg:
        pool = WorkerPool(work, workers=2, maxsize=3).start(tg)
        for i in range(5):  # 2 taken by the workers, 3 waiting
            await pool.put(i)
        sixth = asyncio.create_task(pool.put(5))
        await asyncio.sleep(0.01)
        assert not sixth.done()
        assert started == [0, 1]
        release.set()
        await sixth
        await pool.close()
    assert sorted(started) == list(range(6))


async def test_join_waits_for_work_that_work_itself_adds_and_close_stops_every_worker() -> None:
    seen: list[int] = []

    async def expand(n: int) -> None:
        seen.append(n)
        if n < 40:
            pool.put_nowait(2 * n)
            pool.put_nowait(2 * n + 1)

    async with asyncio.TaskGroup() as tg:
        pool = WorkerPool(expand, workers=4).start(tg)
        pool.put_nowait(1)
        await pool.join()
        assert sorted(seen) == list(range(1, 80))
        await pool.close()
    assert all(t.done() for t in pool._tasks)


async def test_a_failing_worker_fails_the_taskgroup_and_cancels_the_other_stages() -> None:
    other_cancelled = asyncio.Event()

    async def fail(_: int) -> None:
        raise SourceUnavailable("boom")

    async def other() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            other_cancelled.set()
            raise

    async def stages() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(other())
            pool = WorkerPool(fail, workers=2, maxsize=2).start(tg)
            await pool.put(1)
            await pool.close()

    with pytest.raises(ExceptionGroup) as caught:
        await stages()
    assert caught.group_contains(SourceUnavailable)
    assert other_cancelled.is_set()


async def test_bounded_map_keeps_order_and_raises_the_first_error_after_draining() -> None:
    async def slow_double(n: int) -> int:
        await asyncio.sleep(0.001 * (n % 3))
        return 2 * n

    assert await bounded_map(list(range(30)), slow_double, concurrency=4) == [2 * n for n in range(30)]
    assert await bounded_map([], slow_double, concurrency=4) == []
