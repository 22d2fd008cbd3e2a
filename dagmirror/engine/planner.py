"""Stage 2, planning: each listed object is mapped to a path (or rejected), filtered, claimed, and decided
against state and disk by the pure functions of plan.py; what needs a GET goes on to the fetchers as a Job."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dagmirror.engine.context import PassContext
from dagmirror.engine.listing import Batch
from dagmirror.keys import key_to_path
from dagmirror.models import Action, Decision, LocalStat, Rejection, RemoteObject, StateEntry
from dagmirror.plan import PathClaims, decide, decide_after_check


@dataclass(frozen=True, slots=True)
class Job:
    """One object to fetch, verify and install at `path`, and why."""

    path: str
    obj: RemoteObject
    decision: Decision


class Planner:
    def __init__(self, ctx: PassContext, submit: Callable[[Job], Awaitable[None]]) -> None:
        self._ctx = ctx
        self._submit = submit
        self.claims = PathClaims()  # every path accepted in this pass: the delete phase keeps these

    async def plan(self, batch: Batch) -> None:
        ctx = self._ctx
        ctx.tally.listed += len(batch.rejections)
        for rejection in batch.rejections:
            ctx.reject(rejection)
        accepted: list[tuple[str, RemoteObject]] = []
        for obj in batch.objects:
            mapped = key_to_path(obj.key, ctx.prefix)
            if mapped is None:
                continue  # folder marker
            ctx.tally.listed += 1
            if isinstance(mapped, Rejection):
                ctx.reject(mapped)
            elif not ctx.config.filters.wants(mapped):
                ctx.tally.excluded += 1
            elif why := self.claims.claim(mapped):
                ctx.reject(Rejection(obj.key, why))
            else:
                accepted.append((mapped, obj))
        if accepted:
            stats = await ctx.io(ctx.tree.stat_many, [p for p, _ in accepted])
            await self._decide(accepted, stats)

    async def _decide(self, accepted: list[tuple[str, RemoteObject]], stats: list[LocalStat | None]) -> None:
        ctx = self._ctx
        entries = ctx.ledger.entries
        to_check: list[tuple[str, RemoteObject, LocalStat]] = []
        for (path, obj), local in zip(accepted, stats, strict=True):
            decision = decide(obj, entries.get(path), local)
            if decision.action is Action.VERIFY_LOCAL and local is not None:
                to_check.append((path, obj, local))
            else:
                await self._act(path, obj, decision)
        if not to_check:
            return
        digests = await ctx.io(ctx.tree.digest_many, [p for p, _, _ in to_check])
        for (path, obj, local), digest in zip(to_check, digests, strict=True):
            decision = decide_after_check(obj, entries.get(path), digest)
            if decision.action is Action.KEEP and digest is not None:
                entry = StateEntry(obj.etag, obj.size, digest.xxh3, local.size, local.mtime_ns, local.ino)
                ctx.ledger.record(path, entry)
            await self._act(path, obj, decision)

    async def _act(self, path: str, obj: RemoteObject, decision: Decision) -> None:
        tally = self._ctx.tally
        if decision.action is Action.KEEP:
            tally.unchanged += 1
            tally.adopted += decision.reason == "adopt"
        elif self._ctx.config.dry_run:
            tally.downloaded += 1
            tally.bytes += obj.size
        else:
            tally.queued += 1
            await self._submit(Job(path, obj, decision))
