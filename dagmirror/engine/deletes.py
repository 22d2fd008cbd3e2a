"""Stage 4, deleting: managed paths the complete listing no longer has, behind the delete guard. A listing
can leave keys out and still look complete (a broken server, proxy or cache), so a path whose key was not
listed at all is deleted only once a conditional GET answers S3's own NoSuchKey."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Set

from dagmirror.engine.context import PassContext
from dagmirror.engine.fetcher import get_bounded
from dagmirror.errors import DagmirrorError, ObjectVanished
from dagmirror.models import DeletePlan, Tombstone
from dagmirror.plan import empty_parents, plan_deletions
from dagmirror.pool import WorkerPool

log = logging.getLogger("dagmirror")


class Deleter:
    def __init__(self, ctx: PassContext) -> None:
        self._ctx = ctx

    def plan(self, listed_paths: Set[str], *, listed_any: bool) -> DeletePlan:
        cfg = self._ctx.config
        return plan_deletions(
            self._ctx.ledger.entries.keys(),
            listed_paths,
            mirrored=cfg.filters.wants,
            listed_any=listed_any,
            max_fraction=cfg.max_delete_fraction,
            allow_mass_delete=cfg.allow_mass_delete,
        )

    async def run(self, listed_paths: Set[str], *, listed_any: bool) -> tuple[str | None, list[Tombstone]]:
        """Delete what the listing no longer has; (the guard's refusal or None, what was deleted)."""
        return await self.apply(self.plan(listed_paths, listed_any=listed_any), confirm=True)

    async def apply(self, plan: DeletePlan, *, confirm: bool) -> tuple[str | None, list[Tombstone]]:
        """Carry out `plan`. `confirm`: ask S3 about each path first (a listing; a verified release's manifest
        needs no second opinion)."""
        ctx, entries = self._ctx, self._ctx.ledger.entries
        if plan.refused:
            log.error("delete guard: %s", plan.refused)
            return plan.refused, []
        if ctx.config.dry_run:
            return None, [Tombstone(p, ctx.prefix + p, entries[p].etag, 0.0) for p in plan.paths]
        paths = await self._confirmed_gone(plan.paths) if confirm else plan.paths
        now = ctx.clock()
        tombstones = [Tombstone(p, ctx.prefix + p, entries[p].etag, now) for p in paths]
        if paths:
            await ctx.io(self._delete_paths, paths)
            for path in paths:
                ctx.ledger.forget(path)
            ctx.ledger.state.bury(tombstones)
        return None, tombstones

    async def _confirmed_gone(self, paths: tuple[str, ...]) -> tuple[str, ...]:
        """The paths whose objects are really gone. Keys listed but rejected need no question."""
        listed = {r.key for r in self._ctx.tally.rejections}
        gone = {p for p in paths if self._ctx.prefix + p in listed}
        todo = [p for p in paths if p not in gone]

        async def confirm(path: str) -> None:
            if await self._is_gone(path):
                gone.add(path)

        if todo:
            async with asyncio.TaskGroup() as tg:
                pool = WorkerPool(confirm, workers=min(self._ctx.config.concurrency, len(todo))).start(tg)
                for path in todo:
                    pool.put_nowait(path)
                await pool.close()
        return tuple(p for p in paths if p in gone)

    async def _is_gone(self, path: str) -> bool:
        ctx = self._ctx
        key, entry = ctx.prefix + path, ctx.ledger.entries[path]
        try:
            await ctx.retry(lambda: get_bounded(ctx.source, key, entry.etag or None, entry.size))
        except ObjectVanished:
            return True
        except DagmirrorError as exc:
            if (await ctx.io(ctx.tree.stat_many, [path]))[0] is None:
                # Deleted by hand: nothing left to delete, so nothing to confirm. Forgetting the path is how
                # an operator clears a deletion no server answer can ever confirm.
                log.info("forgot %s: its file was deleted by hand and its key is not listed", path)
                ctx.ledger.forget(path)
                return False
            ctx.fail(
                key,
                f"kept: not in the listing, and its deletion could not be confirmed: {exc}; "
                f"delete {path} from DEST by hand to stop retrying",
            )
            return False
        ctx.fail(key, "kept: not in the listing, yet the object exists (the listing was incomplete)")
        return False

    def _delete_paths(self, paths: tuple[str, ...]) -> None:
        for path in paths:
            self._ctx.tree.delete(path)
        self._ctx.tree.remove_empty_dirs(empty_parents(paths))
