"""One pass: listing -> planner -> fetchers, in one TaskGroup with the checkpoint task, then the deletes.

    Lister --Batch--> planner pool (1 worker) --Job--> fetcher pool (`concurrency` workers)

Both queues are bounded, so listing never runs far ahead of the GETs. Each stage is closed in order once
the one before it is done. A failure in any stage (a listing error above all) fails the TaskGroup, which
cancels the others, and the pass ends before the delete phase: a bad listing can never delete anything.
"""

from __future__ import annotations

import asyncio
import time

from dagmirror.bodies import ContentStore
from dagmirror.engine.context import PassContext
from dagmirror.engine.deletes import Deleter
from dagmirror.engine.fetcher import Fetcher
from dagmirror.engine.listing import Batch, Lister
from dagmirror.engine.planner import Job, Planner
from dagmirror.engine.releasepass import ReleasePass
from dagmirror.engine.tally import request_delta
from dagmirror.errors import DagmirrorError, PassFailed, ReleaseError, first_leaf
from dagmirror.manifest import pointer_key
from dagmirror.models import SyncReport
from dagmirror.pool import WorkerPool

PAGE_QUEUE = 64  # listing pages waiting for the planner


async def run_pass(ctx: PassContext, store: ContentStore) -> SyncReport:
    """One pass in the configured mode. auto: the release pointer when the prefix has one (ReleasePass),
    else the listing, exactly as in objects mode; releases: a prefix without a pointer fails the pass."""
    before = ctx.source.request_counts()
    if ctx.config.mode != "objects":
        report = await ReleasePass(ctx, store, before).run()
        if report is not None:
            return report
        if ctx.config.mode == "releases" or ctx.config.switch == "symlink" or ctx.config.trust is not None:
            why = "--mode releases" if ctx.config.mode == "releases" else "--switch symlink switches releases"
            why = "--trust: only signed releases are installed" if ctx.config.trust is not None else why
            cause = ReleaseError(f"no release pointer at {pointer_key(ctx.prefix)} ({why})")
            raise PassFailed(f"pass aborted, nothing changed: {cause}", cause)
    if ctx.ledger.state.release is not None:  # the listing takes over: DEST no longer follows a release
        ctx.ledger.state.release = None
        ctx.ledger.dirty = True
    return await SyncPass(ctx, before).run()


class SyncPass:
    """The listing pass (objects mode). `requests_before`: the counts at the start of the whole pass, so a
    release pointer probed first (auto mode) is in the report too."""

    def __init__(self, ctx: PassContext, requests_before: dict[str, int]) -> None:
        self._ctx = ctx
        self._fetcher = Fetcher(ctx)
        self._requests_before = requests_before

    async def run(self) -> SyncReport:
        ctx = self._ctx
        started = time.monotonic()
        fetchers: WorkerPool[Job] = WorkerPool(
            self._fetcher.fetch, workers=ctx.config.concurrency, maxsize=ctx.config.concurrency * 2
        )
        planner = Planner(ctx, fetchers.put)
        planning: WorkerPool[Batch] = WorkerPool(planner.plan, workers=1, maxsize=PAGE_QUEUE)
        lister = Lister(ctx, planning.put)
        try:
            async with asyncio.TaskGroup() as tg:
                checkpoints = tg.create_task(self._checkpoint_loop())
                fetchers.start(tg)
                planning.start(tg)
                await lister.run()
                await planning.close()
                await fetchers.close()
                checkpoints.cancel()
        except* DagmirrorError as group:
            await self._save_state()
            cause = first_leaf(group)
            assert isinstance(cause, DagmirrorError)  # the except* clause caught only those
            raise PassFailed(f"pass aborted, nothing deleted: {cause}", cause) from None
        guard, tombstones = await Deleter(ctx).run(planner.claims.files, listed_any=lister.listed_any)
        await self._fetcher.install_deferred(guard)
        await self._save_state(final=True)
        return ctx.tally.report(
            source=str(ctx.config.source),
            dest=str(ctx.config.dest),
            dry_run=ctx.config.dry_run,
            seconds=time.monotonic() - started,
            guard=guard,
            tombstones=tombstones,
            requests=request_delta(self._requests_before, ctx.source.request_counts()),
        )

    async def _save_state(self, *, final: bool = False) -> None:
        ctx = self._ctx
        if ctx.config.dry_run or not (ctx.ledger.dirty or final):
            return
        data = ctx.ledger.state.dump()
        await ctx.io(ctx.tree.write_meta, "state.json", data)
        ctx.ledger.dirty = False
        if final:
            await ctx.io(ctx.tree.reset_journal)

    async def _checkpoint_loop(self) -> None:
        """Persist progress during long passes so a killed pass resumes without downloading again."""
        while True:
            await asyncio.sleep(self._ctx.config.checkpoint_interval)
            if self._ctx.ledger.dirty:
                await self._save_state()
