"""Stage 1, listing: fan out over sub-prefixes (delimiter '/') down to `fanout_depth`, then list each subtree
flat, and hand each page on as a Batch of objects the collision filter released (plus the keys it rejected).

A listing error propagates: it fails the pass's TaskGroup before the delete phase, so a bad listing can never
delete anything."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from dagmirror.engine.context import PassContext
from dagmirror.errors import SourceError
from dagmirror.models import Rejection, RemoteObject
from dagmirror.plan import CollisionFilter
from dagmirror.pool import WorkerPool


@dataclass(frozen=True, slots=True)
class Batch:
    """Objects the collision filter released, plus the keys it rejected, from one listing page."""

    objects: list[RemoteObject] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


class Lister:
    def __init__(self, ctx: PassContext, emit: Callable[[Batch], Awaitable[None]]) -> None:
        self._ctx = ctx
        self._emit = emit
        self.listed_any = False  # whether the listing returned anything at all (the delete guard asks)
        self._entries = 0  # objects and prefixes listed in this pass, against config.max_objects
        self._pool: WorkerPool[tuple[str, int]] = WorkerPool(
            self._list_subtree, workers=ctx.config.list_concurrency
        )

    async def run(self) -> None:
        """List everything under the source prefix; returns when every page has been emitted."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._pool.start(tg)
                self._pool.put_nowait((self._ctx.prefix, 0))
                await self._pool.join()
                await self._pool.close()
        finally:
            self._ctx.tally.listing_done = True

    async def _list_subtree(self, item: tuple[str, int]) -> None:
        prefix, depth = item
        ctx = self._ctx
        delimiter = depth < ctx.config.fanout_depth
        collisions = CollisionFilter()
        token: str | None = None
        while True:
            page = await ctx.retry(partial(ctx.source.list_page, prefix, delimiter=delimiter, token=token))
            entries: list[tuple[str, RemoteObject | None]] = [(o.key, o) for o in page.objects]
            entries += [(p, None) for p in page.prefixes]
            entries.sort(key=lambda e: e[0])
            self._count(len(entries))
            self.listed_any = self.listed_any or bool(entries)
            batch = Batch()
            for key, obj in entries:
                released, rejected = collisions.feed(key, obj)
                batch.objects.extend(released)
                batch.rejections.extend(rejected)
            for sub in page.prefixes:
                self._pool.put_nowait((sub, depth + 1))
            await self._emit(batch)
            token = page.next_token
            if token is None:
                break
        await self._emit(Batch(collisions.finish()))

    def _count(self, entries: int) -> None:
        self._entries += entries
        limit = self._ctx.config.max_objects
        if self._entries > limit:  # fails the pass before any delete, like any listing error
            raise SourceError(
                f"listing of {self._ctx.prefix!r} passed {limit} objects (max_objects): refusing the pass",
                transient=False,
                code="TooManyObjects",
            )
