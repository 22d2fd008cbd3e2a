"""What the Airflow bundle (dagmirror/bundle.py) does, without Airflow: one environment kept on disk as
immutable release directories, and pinned releases built on demand.

    <storage>/<name>/current                  --switch symlink DEST: a link to the current generation
    <storage>/<name>/.current.dagmirror/      work tree (state, content store, lock) and generations/<gen>/
    <storage>/<name>/objects/                 an environment without releases: a plain mirror (unversioned)
    <storage>/<name>/current.json             the last refresh: release id, seq, the generation's path
    <storage>/<name>/versions/<release id>/   pinned releases (materialise.py), hard links into the store

Unpinned, `refresh` is one mirror pass; `current` answers from memory or current.json, never with a request.
Pinned, `pin` builds `versions/<id>` once. Blocking calls (each runs its own event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from dagmirror.bodies import ContentStore
from dagmirror.config import MirrorConfig, generations_home
from dagmirror.dirfd import DIR_FLAGS
from dagmirror.engine.materialise import (
    BUILDING,
    Materialised,
    materialise,
    remove_versions,
    reuse,
    stale_versions,
    version_dirs,
)
from dagmirror.engine.mirror import Mirror
from dagmirror.errors import DagmirrorError, ObjectVanished, PassFailed
from dagmirror.keys import RESERVED_DIR
from dagmirror.manifest import MAX_POINTER_BYTES, pointer_key
from dagmirror.models import SyncReport
from dagmirror.source import ObjectSource

log = logging.getLogger("dagmirror")
T = TypeVar("T")
RECORD = "current.json"
VERSION_GRACE = 3600.0  # an untracked pinned version is kept this long after it was built
# Opens the source for a config; the default is the lean transport (with fixed keys when given).
SourceFactory = Callable[[MirrorConfig], Awaitable[ObjectSource]]


@dataclass(frozen=True, slots=True)
class Layout:
    """Where one bundle keeps its files (Airflow decides the three roots)."""

    base_dir: Path
    versions_dir: Path
    tracking_dir: Path  # Airflow's _tracking/<name>: versions a task has used (BundleVersionLock)

    @property
    def link(self) -> Path:
        return self.base_dir / "current"

    @property
    def objects(self) -> Path:
        return self.base_dir / "objects"

    @property
    def store_meta(self) -> Path:
        return generations_home(self.link) / "work" / RESERVED_DIR


@dataclass(frozen=True, slots=True)
class Current:
    """What the last refresh left: a release (versioned) or a plain mirror (release None)."""

    path: Path
    release: str | None = None
    seq: int | None = None


class VersionedMirror:
    def __init__(
        self,
        source: str,
        layout: Layout,
        *,
        endpoint_url: str | None = None,
        options: Mapping[str, Any] | None = None,
        open_source: SourceFactory,
        clock: Callable[[], float] = time.time,
        version_grace: float = VERSION_GRACE,
    ) -> None:
        self.layout = layout
        opts = dict(options or {})
        self._releases = MirrorConfig.create(
            source, layout.link, endpoint_url=endpoint_url, switch="symlink", **opts
        )
        # With trust, only verified releases are installed: no unversioned (unsigned) fallback at all.
        plain = {k: v for k, v in opts.items() if k != "trust"}
        self._objects = MirrorConfig.create(source, layout.objects, endpoint_url=endpoint_url, **plain)
        self._open_source = open_source
        self._clock = clock
        self._grace = version_grace
        self._current: Current | None = None

    # -- unpinned ------------------------------------------------------------------------------------------
    def current(self) -> Current | None:
        """The last refresh's outcome: from memory, else current.json (a previous process's); no request."""
        if self._current is None:
            self._current = _read_record(self.layout.base_dir / RECORD)
        return self._current

    def refresh(self) -> SyncReport:
        """One mirror pass: the release mirror, or the plain one while the environment has no release."""
        current = self.current()
        trusting = self._releases.trust is not None
        if current is not None and current.release is None and not trusting:
            report = run(self._pass(self._objects))
            if report.mode != "releases":
                return self._record(Current(self.layout.objects), report)
            log.info("%s publishes releases now: switching to versioned generations", self._releases.source)
        try:
            report = run(self._pass(self._releases))
        except PassFailed as exc:
            if trusting or not run(self._has_no_pointer()):
                raise
            log.info("%s has no releases: mirrored unversioned (%s)", self._objects.source, exc.cause)
            return self._record(Current(self.layout.objects), run(self._pass(self._objects)))
        if report.guard:
            log.error("release not switched in, the bundle stays at %s: %s", report.release, report.guard)
        if report.release is None or report.generation is None:  # e.g. a release refused by the guard
            raise PassFailed(f"{self._releases.source}: no release was switched in", DagmirrorError("guard"))
        path = generations_home(self.layout.link) / "generations" / report.generation
        return self._record(Current(path, report.release, report.release_seq), report)

    async def _pass(self, config: MirrorConfig) -> SyncReport:
        source = await self._open_source(config)
        try:
            async with Mirror(config, source=source, clock=self._clock) as mirror:
                report = await mirror.sync_once()
        finally:
            await source.aclose()
        if report.failures:
            raise PassFailed(
                f"{report.failed} file(s) could not be mirrored: {report.failures[0].error}",
                DagmirrorError(report.failures[0].error),
            )
        return report

    async def _has_no_pointer(self) -> bool:
        source = await self._open_source(self._releases)
        try:
            prefix = self._releases.source.prefix
            await source.get(pointer_key(prefix), if_none_match=None, max_bytes=MAX_POINTER_BYTES)
        except ObjectVanished:
            return True
        except DagmirrorError:
            return False
        finally:
            await source.aclose()
        return False

    def _record(self, current: Current, report: SyncReport) -> SyncReport:
        doc = {"path": str(current.path), "release": current.release, "seq": current.seq}
        _write_atomic(self.layout.base_dir / RECORD, orjson.dumps(doc))
        self._current = current
        self.cleanup(keep=set())
        return report

    # -- pinned --------------------------------------------------------------------------------------------
    def pin(self, release: str) -> Materialised:
        """`versions/<release>`, built from the content store and the bucket unless it exists."""
        built = reuse(self.layout.versions_dir, release)
        if built is not None:
            return Materialised(built, built=False)
        self.layout.store_meta.mkdir(parents=True, exist_ok=True)
        meta_fd = os.open(self.layout.store_meta, DIR_FLAGS)  # held, as install.Tree holds DEST/.dagmirror
        store = ContentStore(self.layout.store_meta, lambda: meta_fd)

        async def build() -> Materialised:
            source = await self._open_source(self._releases)
            try:
                return await materialise(self._releases, source, store, self.layout.versions_dir, release)
            finally:
                await source.aclose()

        try:
            done = run(build())
        finally:
            store.close()
            os.close(meta_fd)
        if done.built:
            log.info("built version %s: %d files, requests %s", release, done.files, dict(done.requests))
        self.cleanup(keep={release})
        return done

    def cleanup(self, keep: set[str]) -> list[str]:
        """Remove version directories Airflow does not track, built over the grace period ago, not `keep`;
        and builds a killed process left behind. The names removed."""
        tracked = set()
        with contextlib.suppress(FileNotFoundError):
            tracked = set(os.listdir(self.layout.tracking_dir))
        now = self._clock()
        stale = stale_versions(version_dirs(self.layout.versions_dir), tracked, keep, now, self._grace)
        removed = remove_versions(self.layout.versions_dir, stale, lambda mtime: now - mtime > self._grace)
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.layout.versions_dir):
                old = now - entry.stat(follow_symlinks=False).st_mtime > self._grace
                if entry.name.startswith(BUILDING) and old:
                    shutil.rmtree(entry.path, ignore_errors=True)
        if removed:
            log.info("removed %d unused version(s): %s", len(removed), ", ".join(removed))
        return removed


def run(coro: Awaitable[T]) -> T:
    """Run `coro` to the end from synchronous code: here, or in a thread when this one has a running loop."""

    async def main() -> T:
        return await coro

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(main()))
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name="dagmirror-bundle")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _read_record(path: Path) -> Current | None:
    try:
        doc = orjson.loads(path.read_bytes())
        release, seq = doc.get("release"), doc.get("seq")
        return Current(Path(doc["path"]), str(release) if release else None, int(seq) if seq else None)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None


def _write_atomic(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temp, path)
