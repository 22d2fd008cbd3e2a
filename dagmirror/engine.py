"""One sync pass: lister -> bounded page queue -> planner -> bounded job queue -> worker pool -> deletes.

All stages run in one asyncio.TaskGroup: a failure in any stage (a listing error above all) cancels the
pass before the delete phase, so a bad listing can never delete anything. Decisions come from plan.py,
bytes are checked by verify.py, and reach disk only through install.Tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

from dagmirror.config import MirrorConfig
from dagmirror.errors import (
    DagmirrorError,
    InstallError,
    ObjectVanished,
    PassFailed,
    PathBlocked,
    SourceConfigError,
    SourceError,
    SourceUnavailable,
)
from dagmirror.install import Tree
from dagmirror.keys import key_to_path
from dagmirror.models import (
    Action,
    Decision,
    Failure,
    FetchedObject,
    Installed,
    LocalStat,
    NotModified,
    Rejection,
    RemoteObject,
    StateEntry,
    SyncReport,
    Tombstone,
)
from dagmirror.plan import (
    CollisionFilter,
    PathClaims,
    decide,
    decide_after_check,
    empty_parents,
    plan_deletions,
)
from dagmirror.retry import Sleep, retrying
from dagmirror.source import ObjectSource
from dagmirror.state import State, adopt_journal, load_state
from dagmirror.verify import verify

log = logging.getLogger("dagmirror")
T = TypeVar("T")
# How far a body may outgrow its listed size before the GET is abandoned: room for an object rewritten
# between LIST and GET, while a server sending a huge body for a small key costs at most this much memory.
BODY_ROOM = 1 << 20


@dataclass(slots=True)
class Progress:
    """Live counters of the pass in flight; the CLI's progress line and metrics read them."""

    listed: int = 0
    queued: int = 0
    downloaded: int = 0
    bytes: int = 0
    listing_done: bool = False


@dataclass(frozen=True, slots=True)
class _Batch:
    """Objects the collision filter released, plus the keys it rejected, from one listing page."""

    objects: list[RemoteObject]
    rejections: list[Rejection]


@dataclass(frozen=True, slots=True)
class _Job:
    path: str
    obj: RemoteObject
    decision: Decision


class Mirror:
    """Makes `config.dest` an exact, safe mirror of `config.source`. Use as `async with Mirror(cfg) as m`."""

    def __init__(
        self,
        config: MirrorConfig,
        *,
        source: ObjectSource | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.progress = Progress()
        self._source = source
        self._owns_source = source is None
        self._sleep = sleep
        self._clock = clock
        self._tree = Tree(config.dest, fsync=config.fsync)
        self._state: State | None = None
        self._pass_lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(
            max_workers=min(16, config.concurrency), thread_name_prefix="dagmirror-io"
        )
        self._logged_rejections: set[str] = set()

    async def __aenter__(self) -> Mirror:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        if self._source is None:
            from dagmirror.source.s3 import S3Source  # the SDK loads only when a real S3 source is needed

            self._source = await S3Source.open(self.config)

    async def aclose(self) -> None:
        if self._source is not None and self._owns_source:
            await self._source.aclose()
            self._source = None
        self._executor.shutdown(wait=True)  # an install in a thread finishes its rename or removes its temp
        self._tree.close()

    async def wait_for_source(self, seconds: float) -> None:
        """Return once the prefix lists at least one object; retry until `timeout` (init containers: the
        workers must not start before their DAGs exist). Missing buckets and outages are retried too."""
        deadline = time.monotonic() + seconds
        delay = 0.25
        while True:
            last: SourceError | None = None
            try:
                await self.open()  # inside the loop: credentials (IRSA, IMDS) may not be ready either
                assert self._source is not None
                page = await self._source.list_page(self.config.source.prefix, delimiter=False, token=None)
                if page.objects:
                    return
                why = f"{self.config.source} lists no objects"
            except SourceError as exc:
                why, last = str(exc), exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # Still a missing bucket or a refusal after the wait: the configuration's fault (exit 2),
                # as without the wait; an outage or an empty prefix stays "not ready" (exit 1).
                fatal = isinstance(last, SourceConfigError)
                raise (SourceConfigError if fatal else SourceUnavailable)(
                    f"source not ready after {seconds:g}s: {why}"
                )
            log.info("waiting for the source: %s", why)
            await self._sleep(min(delay, remaining))
            delay = min(delay * 2, 5.0)

    async def sync_once(self) -> SyncReport:
        """One pass. Raises PassFailed if the listing could not complete (nothing is deleted then)."""
        async with self._pass_lock:
            await self.open()
            assert self._source is not None
            self.progress = Progress()
            return await _Pass(self, self._source).run()

    # -- helpers the pass uses -------------------------------------------------------------------------------
    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _load_state(self) -> State:
        if self._state is None:
            source = str(self.config.source)
            journal: list[str] = []
            if not self.config.dry_run:
                journal = await self._io(self._tree.open)
            self._state = await self._io(load_state, self._tree.meta, source)
            if adopt_journal(self._state, journal):
                log.info("recovered %d paths from an interrupted pass", len(journal))
        elif not self.config.dry_run:
            await self._io(self._tree.clean_temps)
        return self._state

    def _note_rejection(self, rejection: Rejection) -> None:
        if rejection.key not in self._logged_rejections:
            self._logged_rejections.add(rejection.key)
            log.warning("rejected key %r: %s", rejection.key, rejection.reason)


class _Pass:
    """The state of one pass; lives only inside Mirror.sync_once."""

    def __init__(self, mirror: Mirror, source: ObjectSource) -> None:
        cfg = mirror.config
        self.m = mirror
        self.cfg = cfg
        self.source = source
        self.prefix = cfg.source.prefix
        self.pages: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=64)
        self.jobs: asyncio.Queue[_Job | None] = asyncio.Queue(maxsize=cfg.concurrency * 2)
        self.claims = PathClaims()
        self.listed_any = False
        self.dirty = False
        self.counts = {
            k: 0 for k in ("unchanged", "not_modified", "restored", "adopted", "excluded", "vanished")
        }
        self.counts |= {"downloaded": 0, "bytes": 0, "retries": 0, "listed": 0}
        self.rejections: list[Rejection] = []
        self.failures: list[Failure] = []
        self.installed: list[Installed] = []
        self.deferred: list[tuple[_Job, FetchedObject, str, str]] = []
        self.state: State = State(str(cfg.source))
        self.requests_before = source.request_counts()

    async def run(self) -> SyncReport:
        started = time.monotonic()
        self.state = await self.m._load_state()
        checkpoints = asyncio.create_task(self._checkpoint_loop())
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._list_all())
                tg.create_task(self._plan())
                for _ in range(self.cfg.concurrency):
                    tg.create_task(self._worker())
        except* DagmirrorError as group:
            await self._save_state()
            cause = _first_leaf(group)
            raise PassFailed(f"pass aborted, nothing deleted: {cause}", cause) from None
        finally:
            checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checkpoints
        guard, tombstones = await self._delete_phase()
        await self._install_deferred(guard)
        await self._save_state(final=True)
        return self._report(time.monotonic() - started, guard, tombstones)

    # -- list ------------------------------------------------------------------------------------------------
    async def _list_all(self) -> None:
        """Fan out over sub-prefixes (delimiter '/') down to `fanout_depth`, then list each subtree flat."""
        work: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        work.put_nowait((self.prefix, 0))

        async def lister() -> None:
            while True:
                prefix, depth = await work.get()
                try:
                    await self._list_stream(prefix, depth, work)
                finally:
                    work.task_done()

        try:
            async with asyncio.TaskGroup() as tg:
                listers = [tg.create_task(lister()) for _ in range(self.cfg.list_concurrency)]
                await work.join()
                for task in listers:
                    task.cancel()
        finally:
            self.m.progress.listing_done = True
        await self.pages.put(None)

    async def _list_stream(self, prefix: str, depth: int, work: asyncio.Queue[tuple[str, int]]) -> None:
        delimiter = depth < self.cfg.fanout_depth
        collisions = CollisionFilter()
        token: str | None = None
        while True:
            page = await self._retry(partial(self.source.list_page, prefix, delimiter=delimiter, token=token))
            entries: list[tuple[str, RemoteObject | None]] = [(o.key, o) for o in page.objects]
            entries += [(p, None) for p in page.prefixes]
            entries.sort(key=lambda e: e[0])
            self.listed_any = self.listed_any or bool(entries)
            batch = _Batch([], [])
            for key, obj in entries:
                released, rejected = collisions.feed(key, obj)
                batch.objects.extend(released)
                batch.rejections.extend(rejected)
            for sub in page.prefixes:
                work.put_nowait((sub, depth + 1))
            await self.pages.put(batch)
            token = page.next_token
            if token is None:
                break
        await self.pages.put(_Batch(collisions.finish(), []))

    # -- plan ------------------------------------------------------------------------------------------------
    async def _plan(self) -> None:
        while (batch := await self.pages.get()) is not None:
            await self._plan_batch(batch)
        for _ in range(self.cfg.concurrency):
            await self.jobs.put(None)

    async def _plan_batch(self, batch: _Batch) -> None:
        self.counts["listed"] += len(batch.rejections)
        for rejection in batch.rejections:
            self._reject(rejection)
        accepted: list[tuple[str, RemoteObject]] = []
        for obj in batch.objects:
            mapped = key_to_path(obj.key, self.prefix)
            if mapped is None:
                continue  # folder marker
            self.counts["listed"] += 1
            if isinstance(mapped, Rejection):
                self._reject(mapped)
            elif not self.cfg.filters.wants(mapped):
                self.counts["excluded"] += 1
            elif why := self.claims.claim(mapped):
                self._reject(Rejection(obj.key, why))
            else:
                accepted.append((mapped, obj))
        self.m.progress.listed = self.counts["listed"]
        if accepted:
            stats = await self.m._io(self.m._tree.stat_many, [p for p, _ in accepted])
            await self._dispatch(accepted, stats)

    async def _dispatch(
        self, accepted: list[tuple[str, RemoteObject]], stats: list[LocalStat | None]
    ) -> None:
        to_check: list[tuple[str, RemoteObject, LocalStat]] = []
        for (path, obj), local in zip(accepted, stats, strict=True):
            decision = decide(obj, self.state.entries.get(path), local)
            if decision.action is Action.VERIFY_LOCAL and local is not None:
                to_check.append((path, obj, local))
            else:
                await self._act(path, obj, decision, local)
        if to_check:
            digests = await self.m._io(self.m._tree.digest_many, [p for p, _, _ in to_check])
            for (path, obj, local), digest in zip(to_check, digests, strict=True):
                decision = decide_after_check(obj, self.state.entries.get(path), digest)
                if decision.action is Action.KEEP and digest is not None:
                    self._record(
                        path,
                        StateEntry(obj.etag, obj.size, digest.xxh3, local.size, local.mtime_ns, local.ino),
                    )
                await self._act(path, obj, decision, local)

    async def _act(self, path: str, obj: RemoteObject, decision: Decision, local: LocalStat | None) -> None:
        if decision.action is Action.KEEP:
            self.counts["unchanged"] += 1
            self.counts["adopted"] += decision.reason == "adopt"
        elif self.cfg.dry_run:
            self.counts["downloaded"] += 1
            self.counts["bytes"] += obj.size
        else:
            self.m.progress.queued += 1
            await self.jobs.put(_Job(path, obj, decision))

    def _reject(self, rejection: Rejection) -> None:
        self.rejections.append(rejection)
        self.m._note_rejection(rejection)

    # -- fetch, verify, install ------------------------------------------------------------------------------
    async def _worker(self) -> None:
        while (job := await self.jobs.get()) is not None:
            await self._run_job(job)

    async def _run_job(self, job: _Job) -> None:
        try:
            result = await self._retry(lambda: self._fetch(job))
        except ObjectVanished:
            self.counts["vanished"] += 1
            return
        except DagmirrorError as exc:
            self._fail(job.obj.key, str(exc))
            return
        if isinstance(result, NotModified):
            entry = self.state.entries[job.path]
            self._record(job.path, replace(entry, etag=result.etag or entry.etag))
            self.counts["unchanged"] += 1
            self.counts["not_modified"] += 1
            return
        fetched, digest = result
        await self._install(job, fetched, digest, defer_blocked=True)

    async def _fetch(self, job: _Job) -> tuple[FetchedObject, str] | NotModified:
        result = await self._get(job.obj.key, job.decision.if_none_match, job.obj.size)
        if isinstance(result, NotModified):
            return result
        return result, verify(result, listed=job.obj)

    async def _get(self, key: str, if_none_match: str | None, size: int) -> FetchedObject | NotModified:
        """GET with the body bounded by the expected size where the source can bound it (S3Source can;
        ObjectSource.get has no such parameter yet, so the engine asks for it by name)."""
        at_most = getattr(self.source, "get_at_most", None)
        if at_most is None:
            return await self.source.get(key, if_none_match=if_none_match)
        result: FetchedObject | NotModified = await at_most(
            key, if_none_match=if_none_match, max_bytes=max(size, 0) + BODY_ROOM
        )
        return result

    async def _install(self, job: _Job, fetched: FetchedObject, digest: str, *, defer_blocked: bool) -> None:
        try:
            local = await self.m._io(self.m._tree.install, job.path, fetched.body)
        except PathBlocked as exc:
            if defer_blocked and self._is_managed_subtree(exc.blocker):
                self.deferred.append((job, fetched, digest, exc.blocker))  # retried after the delete phase
            else:
                self._fail(job.obj.key, str(exc))
            return
        except InstallError as exc:
            self._fail(job.obj.key, str(exc))
            return
        size = len(fetched.body)
        self._record(job.path, StateEntry(fetched.etag, size, digest, local.size, local.mtime_ns, local.ino))
        self.installed.append(
            Installed(job.path, job.obj.key, fetched.etag, digest, size, job.decision.reason)
        )
        self.counts["downloaded"] += 1
        self.counts["restored"] += job.decision.reason == "restore"
        self.counts["bytes"] += size
        self.m.progress.downloaded += 1
        self.m.progress.bytes += size

    def _is_managed_subtree(self, blocker: str) -> bool:
        below = blocker + "/"
        return blocker in self.state.entries or any(p.startswith(below) for p in self.state.entries)

    def _fail(self, key: str, error: str) -> None:
        self.failures.append(Failure(key, error))
        log.error("failed %s: %s", key, error)

    def _record(self, path: str, entry: StateEntry) -> None:
        self.state.entries[path] = entry
        self.dirty = True

    async def _retry(self, call: Callable[[], Any]) -> Any:
        def count(exc: DagmirrorError) -> None:
            self.counts["retries"] += 1
            log.debug("retrying after: %s", exc)

        return await retrying(call, self.cfg.retry, sleep=self.m._sleep, on_retry=count)

    # -- delete, record --------------------------------------------------------------------------------------
    async def _delete_phase(self) -> tuple[str | None, list[Tombstone]]:
        plan = plan_deletions(
            self.state.entries,
            self.claims.files,
            mirrored=self.cfg.filters.wants,
            listed_any=self.listed_any,
            max_fraction=self.cfg.max_delete_fraction,
            allow_mass_delete=self.cfg.allow_mass_delete,
        )
        if plan.refused:
            log.error("delete guard: %s", plan.refused)
            return plan.refused, []
        if self.cfg.dry_run:
            return None, [Tombstone(p, self.prefix + p, self.state.entries[p].etag, 0.0) for p in plan.paths]
        paths = await self._confirmed_gone(plan.paths)
        now = self.m._clock()
        tombstones = [Tombstone(p, self.prefix + p, self.state.entries[p].etag, now) for p in paths]
        if paths:
            await self.m._io(self._delete_paths, paths)
            for path in paths:
                del self.state.entries[path]
            self.state.bury(tombstones)
            self.dirty = True
        return None, tombstones

    async def _confirmed_gone(self, paths: tuple[str, ...]) -> tuple[str, ...]:
        """The paths whose objects are really gone. A listing can leave keys out and still look complete
        (a broken server, proxy or cache), so a path whose key the listing did not return at all is deleted
        only once a conditional GET answers 404. Keys listed but rejected need no question."""
        listed = {r.key for r in self.rejections}
        gone = {p for p in paths if self.prefix + p in listed}
        todo: asyncio.Queue[str] = asyncio.Queue()
        for path in paths:
            if path not in gone:
                todo.put_nowait(path)

        async def confirmer() -> None:
            while not todo.empty():
                path = todo.get_nowait()
                if await self._is_gone(path):
                    gone.add(path)

        async with asyncio.TaskGroup() as tg:
            for _ in range(min(self.cfg.concurrency, todo.qsize())):
                tg.create_task(confirmer())
        return tuple(p for p in paths if p in gone)

    async def _is_gone(self, path: str) -> bool:
        key, entry = self.prefix + path, self.state.entries[path]
        try:
            await self._retry(partial(self._get, key, entry.etag or None, entry.size))
        except ObjectVanished:
            return True
        except DagmirrorError as exc:
            self._fail(key, f"kept: not in the listing, and its deletion could not be confirmed: {exc}")
            return False
        self._fail(key, "kept: not in the listing, yet the object exists (the listing was incomplete)")
        return False

    def _delete_paths(self, paths: tuple[str, ...]) -> None:
        for path in paths:
            self.m._tree.delete(path)
        self.m._tree.remove_empty_dirs(empty_parents(paths))

    async def _install_deferred(self, guard: str | None) -> None:
        for job, fetched, digest, blocker in self.deferred:
            if guard:
                self._fail(job.obj.key, f"path blocked by '{blocker}', which the delete guard kept")
            else:
                await self._install(job, fetched, digest, defer_blocked=False)

    async def _save_state(self, *, final: bool = False) -> None:
        if self.cfg.dry_run or not (self.dirty or final):
            return
        data = self.state.dump()
        await self.m._io(self.m._tree.write_meta, "state.json", data)
        self.dirty = False
        if final:
            await self.m._io(self.m._tree.reset_journal)

    async def _checkpoint_loop(self) -> None:
        """Persist progress during long passes so a killed pass resumes without downloading again."""
        while True:
            await asyncio.sleep(self.cfg.checkpoint_interval)
            if self.dirty:
                await self._save_state()

    def _report(self, seconds: float, guard: str | None, tombstones: list[Tombstone]) -> SyncReport:
        after = self.source.request_counts()
        requests = {
            k: v - self.requests_before.get(k, 0)
            for k, v in after.items()
            if v - self.requests_before.get(k, 0)
        }
        c = self.counts
        return SyncReport(
            source=str(self.cfg.source),
            dest=str(self.cfg.dest),
            dry_run=self.cfg.dry_run,
            listed=c["listed"],
            downloaded=c["downloaded"],
            unchanged=c["unchanged"],
            deleted=len(tombstones),
            rejected=len(self.rejections),
            failed=len(self.failures),
            bytes=c["bytes"],
            seconds=seconds,
            not_modified=c["not_modified"],
            restored=c["restored"],
            adopted=c["adopted"],
            excluded=c["excluded"],
            vanished=c["vanished"],
            retries=c["retries"],
            guard=guard,
            rejections=tuple(self.rejections),
            failures=tuple(self.failures),
            tombstones=tuple(tombstones),
            installed=tuple(self.installed),
            requests=requests,
        )


def _first_leaf(group: BaseExceptionGroup[DagmirrorError]) -> DagmirrorError:
    """Stage groups nest (the lister has its own TaskGroup): the first real error is the cause."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    assert isinstance(first, DagmirrorError)
    return first
