"""Stage 1, listing: hand each page on as a Batch of objects the collision filter released (plus the keys it
rejected), at close to one LIST per 1,000 keys whatever the layout (docs/architecture.md, "Listing").

`fanout_depth = 0` (the default) lists flat, in at most two ranges:

    page 1 (flat, from the start)      -- not truncated: done, one request
    one delimiter page after page 1, at the deepest folder page 1 shares (runs beside range A's next page)
      -> split key S (plan.split_key: the middle of what remains at that level), or none
    range A: page 1's continuation, up to S    |  range B: flat from after S (StartAfter), to the end

so a pass costs at most ceil(N / 1000) + 2 LISTs: the delimiter page, and one page where A and B meet. B's
keys go through a collision filter of their own at once, except those under a folder whose same-named file
range A may hold (plan.straddling): B hands those to A's filter, which sees them after its own keys.
`fanout_depth >= 1` fans out over sub-prefixes (delimiter '/') down to that depth, then lists each subtree
flat: one LIST per folder at least, however few keys it holds.

A listing error propagates: it fails the pass's TaskGroup before the delete phase, so a bad listing can never
delete anything."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from dagmirror.engine.context import PassContext
from dagmirror.errors import SourceError
from dagmirror.models import ListPage, Rejection, RemoteObject
from dagmirror.plan import CollisionFilter, shared_folder, split_key, straddling
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

    async def run(self) -> None:
        """List everything under the source prefix; returns when every page has been emitted."""
        try:
            if self._ctx.config.fanout_depth == 0:
                await self._flat()
            else:
                await self._fan_out()
        finally:
            self._ctx.tally.listing_done = True

    # -- flat, in at most two ranges ---------------------------------------------------------------------
    async def _flat(self) -> None:
        prefix, collisions = self._ctx.prefix, CollisionFilter()
        first = await self._page(prefix, delimiter=False, token=None)
        await self._feed(collisions, first)
        if first.next_token is not None:
            async with asyncio.TaskGroup() as tg:
                split = tg.create_task(self._split(first))
                held = tg.create_task(self._range_b(split))
                await self._range_a(collisions, first.next_token, split)
            await self._feed(collisions, ListPage(tuple(held.result()), (), None))
        await self._emit(Batch(collisions.finish()))

    async def _split(self, first: ListPage) -> str | None:
        """The split key: one delimiter page, at the folder page 1 shares, after page 1's last key, says
        what remains there. None (no split: range A lists on alone) for a page 1 without keys, which a
        truncated page should never be, but a server may send."""
        if not first.objects:
            return None
        last = first.objects[-1].key
        folder = shared_folder([o.key for o in first.objects], self._ctx.prefix)
        page = await self._page(folder, delimiter=True, token=None, start_after=last, count=False)
        entries = sorted([o.key for o in page.objects] + list(page.prefixes))
        return split_key(entries, after=last, truncated=page.next_token is not None)

    async def _range_a(
        self, collisions: CollisionFilter, token: str, split: asyncio.Task[str | None]
    ) -> None:
        """Page 1's continuation, fed on at once, up to and including the split key."""
        next_token: str | None = token
        while next_token is not None:
            page = await self._page(self._ctx.prefix, delimiter=False, token=next_token)
            end = await split
            if end is not None and page.objects and page.objects[-1].key >= end:
                page = ListPage(tuple(o for o in page.objects if o.key <= end), (), None)
            await self._feed(collisions, page)
            next_token = page.next_token

    async def _range_b(self, split: asyncio.Task[str | None]) -> list[RemoteObject]:
        """Every key after the split key, emitted at once through a collision filter of its own, except the
        keys under a folder whose same-named file range A may hold (plan.straddling): those are returned,
        for range A's filter to see after its own keys (nothing at all when there is no split)."""
        start = await split
        if start is None:
            return []
        folders = tuple(f + "/" for f in straddling(start, self._ctx.prefix))
        own, held = CollisionFilter(), []
        token: str | None = None
        while True:
            page = await self._page(self._ctx.prefix, delimiter=False, token=token, start_after=start)
            mine = [o for o in page.objects if not o.key.startswith(folders)]
            held += [o for o in page.objects if o.key.startswith(folders)]
            await self._feed(own, ListPage(tuple(mine), (), None))
            token = page.next_token
            if token is None:
                await self._emit(Batch(own.finish()))
                return held

    async def _page(
        self,
        prefix: str,
        *,
        delimiter: bool,
        token: str | None,
        start_after: str | None = None,
        count: bool = True,
    ) -> ListPage:
        """One page, retried; counted against `max_objects` unless it only helps to split."""
        ctx = self._ctx
        page = await ctx.retry(
            partial(ctx.source.list_page, prefix, delimiter=delimiter, token=token, start_after=start_after)
        )
        if count:
            self._count(len(page.objects) + len(page.prefixes))
        return page

    async def _feed(self, collisions: CollisionFilter, page: ListPage) -> None:
        """One page through `collisions`, emitted as one Batch."""
        entries: list[tuple[str, RemoteObject | None]] = [(o.key, o) for o in page.objects]
        entries += [(p, None) for p in page.prefixes]
        entries.sort(key=lambda e: e[0])
        self.listed_any = self.listed_any or bool(entries)
        batch = Batch()
        for key, obj in entries:
            released, rejected = collisions.feed(key, obj)
            batch.objects.extend(released)
            batch.rejections.extend(rejected)
        await self._emit(batch)

    # -- fan-out over sub-prefixes -----------------------------------------------------------------------
    async def _fan_out(self) -> None:
        def more(item: tuple[str, int]) -> None:  # `pool` is bound by the time a subtree finds a folder
            pool.put_nowait(item)

        pool: WorkerPool[tuple[str, int]] = WorkerPool(
            partial(self._list_subtree, more), workers=self._ctx.config.list_concurrency
        )
        async with asyncio.TaskGroup() as tg:
            pool.start(tg)
            pool.put_nowait((self._ctx.prefix, 0))
            await pool.join()
            await pool.close()

    async def _list_subtree(self, more: Callable[[tuple[str, int]], None], item: tuple[str, int]) -> None:
        prefix, depth = item
        delimiter = depth < self._ctx.config.fanout_depth
        collisions = CollisionFilter()
        token: str | None = None
        while True:
            page = await self._page(prefix, delimiter=delimiter, token=token)
            await self._feed(collisions, page)
            for sub in page.prefixes:
                more((sub, depth + 1))
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
