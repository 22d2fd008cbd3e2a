"""Stage 3, fetching: GET each job's object (bounded by its listed size), verify the bytes, and install them
atomically through install.Tree. An install blocked by a managed path that the delete phase will remove is
deferred until after it."""

from __future__ import annotations

from dataclasses import dataclass, replace

from dagmirror.engine.context import PassContext
from dagmirror.engine.installer import BatchInstaller
from dagmirror.engine.planner import Job
from dagmirror.errors import DagmirrorError, InstallError, ObjectVanished, PathBlocked
from dagmirror.models import BODY_ROOM, FetchedObject, Installed, NotModified, StateEntry
from dagmirror.source import ObjectSource
from dagmirror.verify import verify

INSTALL_LANES = 8  # install batches in flight (each one thread of the mirror's pool)


@dataclass(frozen=True, slots=True)
class Deferred:
    """A fetched and verified body whose path was blocked by `blocker`, a managed path."""

    job: Job
    fetched: FetchedObject
    digest: str
    blocker: str


async def get_bounded(
    source: ObjectSource, key: str, if_none_match: str | None, size: int
) -> FetchedObject | NotModified:
    """GET with the body bounded by the listed size plus BODY_ROOM."""
    return await source.get(key, if_none_match=if_none_match, max_bytes=max(size, 0) + BODY_ROOM)


class Fetcher:
    def __init__(self, ctx: PassContext) -> None:
        self._ctx = ctx
        self._installer = BatchInstaller(ctx, lanes=INSTALL_LANES)
        self.deferred: list[Deferred] = []

    async def fetch(self, job: Job) -> None:
        ctx = self._ctx
        try:
            result = await ctx.retry(lambda: self._get_verified(job))
        except ObjectVanished:
            ctx.tally.vanished += 1
            return
        except DagmirrorError as exc:
            ctx.fail(job.obj.key, str(exc))
            return
        if isinstance(result, NotModified):
            entry = ctx.ledger.entries[job.path]
            ctx.ledger.record(job.path, replace(entry, etag=result.etag or entry.etag))
            ctx.tally.unchanged += 1
            ctx.tally.not_modified += 1
            return
        fetched, digest = result
        await self.install(job, fetched, digest, defer_blocked=True)

    async def _get_verified(self, job: Job) -> tuple[FetchedObject, str] | NotModified:
        result = await get_bounded(self._ctx.source, job.obj.key, job.decision.if_none_match, job.obj.size)
        if isinstance(result, NotModified):
            return result
        return result, verify(result, listed=job.obj)

    async def install(self, job: Job, fetched: FetchedObject, digest: str, *, defer_blocked: bool) -> None:
        ctx = self._ctx
        try:
            local = await self._installer.install(job.path, fetched.body)
        except PathBlocked as exc:
            if defer_blocked and self._is_managed_subtree(exc.blocker):
                self.deferred.append(Deferred(job, fetched, digest, exc.blocker))
            else:
                ctx.fail(job.obj.key, str(exc))
            return
        except InstallError as exc:
            ctx.fail(job.obj.key, str(exc))
            return
        size = len(fetched.body)
        ctx.ledger.record(
            job.path, StateEntry(fetched.etag, size, digest, local.size, local.mtime_ns, local.ino)
        )
        ctx.tally.installed.append(
            Installed(job.path, ctx.prefix, fetched.etag, digest, size, job.decision.reason)
        )
        ctx.tally.downloaded += 1
        ctx.tally.restored += job.decision.reason == "restore"
        ctx.tally.bytes += size

    async def install_deferred(self, guard: str | None) -> None:
        """After the delete phase: retry the installs it unblocked (unless the guard kept the blockers)."""
        for d in self.deferred:
            if guard:
                self._ctx.fail(d.job.obj.key, f"path blocked by '{d.blocker}', which the delete guard kept")
            else:
                await self.install(d.job, d.fetched, d.digest, defer_blocked=False)

    def _is_managed_subtree(self, blocker: str) -> bool:
        entries = self._ctx.ledger.entries
        below = blocker + "/"
        return blocker in entries or any(p.startswith(below) for p in entries)
