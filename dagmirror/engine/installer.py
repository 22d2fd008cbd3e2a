"""Stage 4, installing: verified bodies go to DEST in batches, one thread call per batch (Tree.install_many).

A fetcher awaits its own file's outcome, as before; what changes is the cost around it. One thread hop per
file (a future, a queue put, a wake-up of the loop) was a sixth of the loop's time on a cold pass; here a body
waits only while every lane is busy, and the next free lane takes all that waited (up to BATCH) at once. At
low load a batch is one file, installed at once; under load batches grow, and the fsyncs of one batch are
issued back to back (on a journaling filesystem one commit then carries most of them; Tree.install_many).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future as ThreadFuture

from dagmirror.engine.context import PassContext
from dagmirror.errors import InstallError
from dagmirror.models import LocalStat

BATCH = 64  # files per thread call at most


class BatchInstaller:
    def __init__(self, ctx: PassContext, *, lanes: int, batch: int = BATCH) -> None:
        """`lanes`: batches in flight at once (at most the mirror's install threads)."""
        self._ctx = ctx
        self._lanes = max(1, lanes)
        self._batch = batch
        self._busy = 0
        self._waiting: list[tuple[str, bytes, asyncio.Future[LocalStat]]] = []

    async def install(self, path: str, body: bytes) -> LocalStat:
        """Install `body` at `path` durably; raises InstallError (PathBlocked) as Tree.install does."""
        done: asyncio.Future[LocalStat] = asyncio.get_running_loop().create_future()
        self._waiting.append((path, body, done))
        if self._busy < self._lanes:
            self._launch()
        return await done

    def _launch(self) -> None:
        batch, self._waiting = self._waiting[: self._batch], self._waiting[self._batch :]
        self._busy += 1
        ctx, loop = self._ctx, asyncio.get_running_loop()
        items = [(path, body) for path, body, _ in batch]
        work: ThreadFuture[list[LocalStat | InstallError]] = ctx.executor.submit(ctx.tree.install_many, items)
        work.add_done_callback(lambda w: loop.call_soon_threadsafe(self._landed, batch, w))

    def _landed(
        self,
        batch: list[tuple[str, bytes, asyncio.Future[LocalStat]]],
        work: ThreadFuture[list[LocalStat | InstallError]],
    ) -> None:
        self._busy -= 1
        try:
            results: list[LocalStat | InstallError] | BaseException = work.result()
        except BaseException as exc:  # handed to every waiting fetcher, who raises it
            results = exc
        for i, (_, _, done) in enumerate(batch):
            if done.done():  # its fetcher was cancelled: the file is in place and journaled, or not at all
                continue
            outcome = results if isinstance(results, BaseException) else results[i]
            if isinstance(outcome, BaseException):
                done.set_exception(outcome)
            else:
                done.set_result(outcome)
        if self._waiting and self._busy < self._lanes:
            self._launch()
