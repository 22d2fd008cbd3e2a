"""Mirror: owns what outlives a pass (the source connection, DEST's lock and thread pool, the loaded state)
and runs one SyncPass at a time over a fresh PassContext."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from dagmirror.bodies import ContentStore
from dagmirror.config import MirrorConfig
from dagmirror.engine.context import Ledger, PassContext
from dagmirror.engine.syncpass import run_pass
from dagmirror.engine.tally import Progress
from dagmirror.errors import (
    DagmirrorError,
    InstallError,
    ObjectVanished,
    PassFailed,
    SourceConfigError,
    SourceError,
    SourceUnavailable,
    first_leaf,
)
from dagmirror.generations import Generations
from dagmirror.install import Tree
from dagmirror.manifest import MAX_POINTER_BYTES, pointer_key
from dagmirror.models import Rejection, SyncReport
from dagmirror.plan import RELEASE_ETAG
from dagmirror.retry import Sleep
from dagmirror.source import ObjectSource
from dagmirror.state import State, adopt_journal, load_state

log = logging.getLogger("dagmirror")


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
        self.progress = Progress()  # the live Tally of the pass in flight (or of the last one)
        self._source = source
        self._owns_source = source is None
        self._sleep = sleep
        self._clock = clock
        self._tree = Tree(config.work_dir, fsync=config.fsync)
        self._generations = Generations(config, clock=clock) if config.switch == "symlink" else None
        self._bodies = ContentStore(self._tree.meta, self._tree.meta_fd)
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

    async def open(self) -> ObjectSource:
        if self._source is None:
            from dagmirror.source.connect import open_source

            self._source = await open_source(self.config)
        return self._source

    async def aclose(self) -> None:
        if self._source is not None and self._owns_source:
            await self._source.aclose()
            self._source = None
        self._executor.shutdown(wait=True)  # an install in a thread finishes its rename or removes its temp
        self._bodies.close()
        self._tree.close()

    async def wait_for_source(self, seconds: float) -> None:
        """Return once the prefix lists at least one object; retry until `timeout` (init containers: the
        workers must not start before their DAGs exist). Missing buckets and outages are retried too."""
        deadline = time.monotonic() + seconds
        delay = 0.25
        while True:
            last: SourceError | None = None
            try:
                source = await self.open()  # in the loop: credentials (IRSA, IMDS) may not be ready yet
                if await self._has_something(source):
                    return
                why = {
                    "objects": f"{self.config.source} lists no objects",
                    "releases": f"{self.config.source} has no release pointer",
                }.get(self.config.mode, f"{self.config.source} lists no objects and has no release pointer")
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

    async def _has_something(self, source: ObjectSource) -> bool:
        """Objects under the prefix (objects and auto mode), or its release pointer (releases and auto mode:
        a prefix that only ever received releases has no plain files). ObjectVanished: not yet."""
        prefix, mode = self.config.source.prefix, self.config.mode
        if mode != "releases" and (await source.list_page(prefix, delimiter=False, token=None)).objects:
            return True
        if mode == "objects":
            return False
        try:
            await source.get(pointer_key(prefix), if_none_match=None, max_bytes=MAX_POINTER_BYTES)
        except ObjectVanished:
            return False
        return True

    async def sync_once(self) -> SyncReport:
        """One pass. Raises PassFailed if the listing could not complete (nothing is deleted then), or if
        DEST itself failed under it (EMFILE, EIO...): a failed pass, reported and retried, never a crash."""
        try:
            return await self._sync_once()
        except* OSError as group:
            leaf = first_leaf(group)
            cause = leaf if isinstance(leaf, OSError) else OSError(str(leaf))
            why = f"{self.config.work_dir}: {cause.strerror or cause}"
            raise PassFailed(f"pass failed on DEST: {why}", InstallError(why)) from None

    async def _sync_once(self) -> SyncReport:
        async with self._pass_lock:
            source = await self.open()
            ctx = PassContext(
                config=self.config,
                source=source,
                tree=self._tree,
                ledger=Ledger(await self._load_state()),
                executor=self._executor,
                sleep=self._sleep,
                clock=self._clock,
                note_rejection=self._note_rejection,
            )
            self.progress = ctx.tally
            report = await run_pass(ctx, self._bodies)
            if self._generations is not None and not self.config.dry_run:
                report = await self._switch(self._generations, ctx, report)
            return report

    async def _switch(self, generations: Generations, ctx: PassContext, report: SyncReport) -> SyncReport:
        """--switch symlink: once the work tree holds the whole release, make DEST name a generation of it."""
        installed = ctx.ledger.state.release
        if report.failures or installed is None:  # the work tree may be part old, part new: DEST stays
            log.warning("DEST not switched: the pass did not install the whole release")
            return report
        files = {p: e.ino for p, e in ctx.ledger.entries.items() if e.etag.startswith(RELEASE_ETAG)}
        loop = asyncio.get_running_loop()
        try:
            done = await loop.run_in_executor(
                self._executor, generations.publish, files, self._tree.root, installed.release, installed.seq
            )
        except DagmirrorError as exc:
            why = f"release {installed.release} is in the work tree, DEST not switched: {exc}"
            raise PassFailed(why, exc) from None
        if done.built:
            log.info("DEST now names generation %s", done.generation)
        return replace(report, generation=done.generation, generations_removed=done.removed)

    async def _load_state(self) -> State:
        loop = asyncio.get_running_loop()
        if self._state is None:
            journal: list[str] = []
            if not self.config.dry_run:
                journal = await loop.run_in_executor(self._executor, self._tree.open)
            self._state = await loop.run_in_executor(self._executor, self._read_state)
            if adopt_journal(self._state, journal):
                log.info("recovered %d paths from an interrupted pass", len(journal))
        elif not self.config.dry_run:
            await loop.run_in_executor(self._executor, self._tree.clean_temps)
        return self._state

    def _read_state(self) -> State:
        with self._tree.meta_handle() as meta_fd:
            return load_state(meta_fd, self._tree.meta, str(self.config.source))

    def _note_rejection(self, rejection: Rejection) -> None:
        if rejection.key not in self._logged_rejections:
            self._logged_rejections.add(rejection.key)
            log.warning("rejected key %r: %s", rejection.key, rejection.reason)
