"""One pass in releases mode: pointer -> manifest -> plan -> bodies -> one install burst -> deletes -> record.

    poll (one conditional GET of the pointer)
      304 -> drift repair of the installed release's files: stat all, hash the changed, restore from the
             local content store (a request only for a body the store lost)
      200 -> manifest (content store or one GET) -> paths checked and planned (plan.py, pure) -> delete plan:
             the guard refuses the whole release -> every changed body gathered and verified (store, archive
             or GETs) -> one install burst on the thread pool -> deletes -> deferred installs -> state

Nothing of a release is installed before all its changed bodies are in memory and verified: a release that
cannot be fetched whole fails the pass and leaves DEST at the release it had.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from dagmirror.bodies import ContentStore
from dagmirror.engine.context import PassContext
from dagmirror.engine.deletes import Deleter
from dagmirror.engine.fetcher import Fetcher
from dagmirror.engine.planner import Job
from dagmirror.engine.release import Polled, ReleaseFetcher
from dagmirror.engine.tally import request_delta
from dagmirror.engine.trustgate import TrustGate
from dagmirror.errors import DagmirrorError, PassFailed, ReleaseError
from dagmirror.manifest import FileEntry, Pointer, pointer_key
from dagmirror.models import (
    Action,
    Decision,
    FetchedObject,
    RemoteObject,
    StateEntry,
    SyncReport,
    Tombstone,
)
from dagmirror.plan import (
    RELEASE_ETAG,
    accept_release_paths,
    decide_release,
    decide_release_after_check,
    release_etag,
)
from dagmirror.pool import bounded_map
from dagmirror.state import InstalledRelease
from dagmirror.trust import Untrusted
from dagmirror.verify import xxh3_hex

log = logging.getLogger("dagmirror")
Install = tuple[str, FileEntry, Decision]


class ReleasePass:
    def __init__(self, ctx: PassContext, store: ContentStore, requests_before: dict[str, int]) -> None:
        self._ctx = ctx
        self._store = store
        self._fetch = ReleaseFetcher(ctx, store)
        self._fetcher = Fetcher(ctx)
        self._gate = TrustGate(ctx)
        self._requests_before = requests_before  # run_pass's: the whole pass's requests are reported
        self._started = time.monotonic()
        self._installing = False

    async def run(self) -> SyncReport | None:
        """The pass's report, or None when the prefix has no release pointer (nothing was changed).

        In auto mode, while DEST follows no release, a pointer that cannot be read at the first try is also
        None (logged at info): a mirror whose credentials reach only dags/<env>/ (AccessDenied), or one in an
        outage, lists as before releases, and an outage costs one failed request more, not a retry budget."""
        installed = self._ctx.ledger.state.release
        may_list = installed is None and self._ctx.config.mode == "auto" and not self._gate.on
        try:
            polled = await self._fetch.poll(self._gate.poll_etag(installed), retry=not may_list)
        except DagmirrorError as exc:
            refusal = self._gate.refuse(exc)
            if refusal is not None:
                return self._refused(refusal, installed)
            if may_list:
                log.info("release pointer not readable, listing objects instead: %s", exc)
                return None
            raise PassFailed(f"pass aborted, nothing changed: {exc}", exc) from None
        if polled is None:
            return None
        try:
            if not self._ctx.config.dry_run:
                await self._ctx.io(self._store.open)
            if isinstance(polled, Polled):
                return await self._follow(polled, installed)
            if installed is None:  # a 304 to a GET without If-None-Match: not an answer to trust
                raise ReleaseError("the pointer was answered 304 Not Modified to an unconditional GET")
            self._gate.not_modified(installed)
            return await self._repair(installed)
        except Untrusted as exc:
            return self._refused(exc, installed)
        except DagmirrorError as exc:
            if self._installing:
                raise PassFailed(f"release pass failed: {exc}", exc) from None
            at = f"release {installed.release}" if installed else "the files it had"
            raise PassFailed(f"release not installed, DEST stays at {at}: {exc}", exc) from None

    async def _repair(self, installed: InstalledRelease) -> SyncReport:
        """Nothing changed in the bucket: put back what changed on disk, from the local content store."""
        ctx = self._ctx
        files = {
            path: FileEntry(entry.etag.removeprefix(RELEASE_ETAG), entry.size)
            for path, entry in ctx.ledger.entries.items()
            if entry.etag.startswith(RELEASE_ETAG) and ctx.config.filters.wants(path)
        }
        ctx.tally.listed = len(files)
        await self._put(await self._plan(files), None)
        await self._save_state()
        return self._report(None, [], installed)

    async def _follow(self, polled: Polled, installed: InstalledRelease | None) -> SyncReport:
        """A pointer read whole: install its release (or confirm it is the one DEST has)."""
        ctx, pointer = self._ctx, polled.pointer
        self._gate.pointer(pointer, polled.body, installed)
        limit = self._gate.manifest_limit(pointer)
        checked = await self._gate.manifest(self._fetch.manifest(pointer.release, limit))
        files, collisions, excluded = accept_release_paths(
            ctx.prefix, checked.manifest.files, ctx.config.filters.wants
        )
        for rejection in (*checked.rejections, *collisions):
            ctx.reject(rejection)
        ctx.tally.listed = len(checked.manifest.files) + len(checked.rejections)
        ctx.tally.excluded = excluded
        deleter = Deleter(ctx)
        plan = deleter.plan(files.keys(), listed_any=ctx.tally.listed > 0)
        if plan.refused:  # a release that drops most files is refused whole: DEST stays as it is
            log.error("delete guard: %s; release %s not installed", plan.refused, pointer.release)
            return self._report(plan.refused, [], installed)
        previous = {e.etag for e in ctx.ledger.entries.values() if e.etag.startswith(RELEASE_ETAG)}
        await self._put(await self._plan(files), pointer)
        guard, tombstones = await deleter.apply(plan, confirm=False)
        await self._fetcher.install_deferred(guard)
        clean = not ctx.tally.failures
        etag = polled.etag if clean else None
        now = InstalledRelease(pointer.release, pointer.seq, etag, self._gate.expires(pointer))
        if not ctx.config.dry_run:
            ctx.ledger.state.release = now
            ctx.ledger.dirty = True
            if installed is None or installed.release != pointer.release:
                keep = {e.sha256 for e in files.values()} | {p.removeprefix(RELEASE_ETAG) for p in previous}
                keep |= {pointer.release} | ({installed.release} if installed else set())
                await ctx.io(self._store.prune, keep)
        await self._save_state()
        return self._report(guard, tombstones, now)

    async def _plan(self, files: dict[str, FileEntry]) -> list[Install]:
        """Keep, adopt or install each file: lstat all, hash only those whose stat says they may differ."""
        ctx, entries = self._ctx, self._ctx.ledger.entries
        paths = list(files)
        stats = await ctx.io(ctx.tree.stat_many, paths)
        installs: list[Install] = []
        checks = []
        for path, local in zip(paths, stats, strict=True):
            decision = decide_release(files[path], entries.get(path), local)
            if decision.action is Action.KEEP:
                ctx.tally.unchanged += 1
            elif decision.action is Action.VERIFY_LOCAL and local is not None:
                checks.append((path, decision, local))
            else:
                installs.append((path, files[path], decision))
        hashes = await ctx.io(ctx.tree.hash_many, [p for p, _, _ in checks]) if checks else []
        for (path, check, local), hashed in zip(checks, hashes, strict=True):
            want = files[path]
            decision = decide_release_after_check(want, check, hashed[0] if hashed else None)
            if decision.action is Action.KEEP and hashed is not None:
                entry = StateEntry(
                    release_etag(want.sha256), want.size, hashed[1], local.size, local.mtime_ns, local.ino
                )
                ctx.ledger.record(path, entry)
                ctx.tally.unchanged += 1
                ctx.tally.adopted += decision.reason == "adopt"
            else:
                installs.append((path, want, decision))
        return installs

    async def _put(self, installs: list[Install], pointer: Pointer | None) -> None:
        """Gather every body first (all or nothing), then install them all in one burst."""
        ctx = self._ctx
        if not installs:
            return
        if ctx.config.dry_run:
            ctx.tally.downloaded += len(installs)
            ctx.tally.bytes += sum(want.size for _, want, _ in installs)
            return
        ctx.tally.queued += len(installs)
        bodies = await self._fetch.gather({path: want for path, want, _ in installs}, pointer)
        self._installing = True

        async def install(item: Install) -> None:
            path, want, decision = item
            body, etag = bodies[want.sha256], release_etag(want.sha256)
            job = Job(path, RemoteObject(ctx.prefix + path, etag, want.size), decision)
            await self._fetcher.install(
                job, FetchedObject(job.obj.key, body, etag, len(body)), xxh3_hex(body), defer_blocked=True
            )

        await bounded_map(installs, install, concurrency=ctx.config.concurrency)

    async def _save_state(self) -> None:
        ctx = self._ctx
        if ctx.config.dry_run or not ctx.ledger.dirty:
            return
        await ctx.io(ctx.tree.write_meta, "state.json", ctx.ledger.state.dump())
        ctx.ledger.dirty = False
        await ctx.io(ctx.tree.reset_journal)

    def _refused(self, exc: Untrusted, installed: InstalledRelease | None) -> SyncReport:
        """Trust refused the release: nothing of it was installed; the report names why."""
        at = f"release {installed.release}" if installed else "the files it had"
        log.error("untrusted release refused, DEST stays at %s: %s", at, exc)
        self._ctx.fail(pointer_key(self._ctx.prefix), f"untrusted: {exc}")
        return replace(self._report(None, [], installed), untrusted=str(exc))

    def _report(
        self, guard: str | None, tombstones: list[Tombstone], installed: InstalledRelease | None
    ) -> SyncReport:
        ctx = self._ctx
        report = ctx.tally.report(
            source=str(ctx.config.source),
            dest=str(ctx.config.dest),
            dry_run=ctx.config.dry_run,
            seconds=time.monotonic() - self._started,
            guard=guard,
            tombstones=tombstones,
            requests=request_delta(self._requests_before, ctx.source.request_counts()),
        )
        release, seq = (installed.release, installed.seq) if installed else (None, None)
        return replace(report, mode="releases", release=release, release_seq=seq)
