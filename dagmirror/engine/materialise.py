"""A pinned release as a directory: `versions/<release id>/`, built once, never changed, from the local
content store (hard links) and, for what it lacks, the release's archive or single GETs.

    lock versions/.<id>.lock (flock) -> present? done
      -> manifest (store or one GET, checked against the id) -> paths checked (plan.accept_release_paths)
      -> bodies (ReleaseFetcher.gather: store, archive when cheaper, GETs; all verified, all or nothing)
      -> versions/.building-<id>-<rand>/: a hard link per file to its store entry (a write where it cannot)
      -> rename to versions/<id>: the only step anyone sees

Several processes asking for the same release at once wait on the lock; the first builds, the others find the
directory complete. Distinct releases build in parallel. `stale_versions` decides (pure) which directories a
bundle may remove: the ones Airflow does not track, older than a grace period, and not in use here.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from dagmirror.bodies import ContentStore
from dagmirror.config import MirrorConfig
from dagmirror.engine.context import Ledger, PassContext
from dagmirror.engine.release import Polled, ReleaseFetcher
from dagmirror.engine.tally import request_delta
from dagmirror.engine.trustgate import verify_manifest
from dagmirror.errors import InstallError, ReleaseError
from dagmirror.install import Tree
from dagmirror.manifest import CheckedManifest, FileEntry, Pointer
from dagmirror.models import Rejection
from dagmirror.plan import accept_release_paths
from dagmirror.source import ObjectSource
from dagmirror.state import State
from dagmirror.trust import TrustPolicy, rotate

log = logging.getLogger("dagmirror")
RELEASE_ID = re.compile(r"^[0-9a-f]{64}$")
BUILDING = ".building-"
# A tar member costs at most two 512-byte blocks beyond its body; zstd adds a few bytes per 128 KiB block.
_TAR_OVERHEAD = 1024


@dataclass(frozen=True, slots=True)
class Materialised:
    path: Path
    built: bool  # False: another process (or an earlier call) had built it
    files: int = 0
    requests: Mapping[str, int] = field(default_factory=dict)  # by operation, as in SyncReport


def version_path(versions_dir: Path, release: str) -> Path:
    """`versions_dir/<release>`; ReleaseError for anything but a release id (it becomes a path segment)."""
    if not RELEASE_ID.match(release):
        raise ReleaseError(f"version {release!r:.80} is not a dagmirror release id (64 hex digits)")
    return versions_dir / release


async def materialise(
    config: MirrorConfig, source: ObjectSource, store: ContentStore, versions_dir: Path, release: str
) -> Materialised:
    """`versions_dir/<release>` holding exactly the release's files; built here unless it exists."""
    target = version_path(versions_dir, release)
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="dagmirror-pin") as pool:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(pool, lambda: versions_dir.mkdir(parents=True, exist_ok=True))
        lock = await loop.run_in_executor(pool, _lock, versions_dir / f".{release}.lock")
        try:
            if target.is_dir():  # built before, or by another process while this one waited for the lock
                # Its mtime says "used now", under the lock cleanup takes too: a version a task is about to
                # lock (Airflow's BundleVersionLock comes after initialize()) is never stale meanwhile.
                await loop.run_in_executor(pool, os.utime, target)
                return Materialised(target, built=False)
            before = source.request_counts()
            await loop.run_in_executor(pool, store.open)
            ctx = _context(config, source, pool, target)
            fetch = ReleaseFetcher(ctx, store)
            checked = await fetch.manifest(release)
            if config.trust is not None:
                await _verify_pinned(config.trust, fetch, checked, ctx.prefix)
            files = _accepted(config, checked)
            bodies = await fetch.gather(files, _as_pointer(checked, files))
            build = partial(_build, store, files, bodies, versions_dir, release, fsync=config.fsync)
            await loop.run_in_executor(pool, build)
            requests = request_delta(before, source.request_counts())
            return Materialised(target, built=True, files=len(files), requests=requests)
        finally:
            os.close(lock)


async def _verify_pinned(
    trust: TrustPolicy, fetch: ReleaseFetcher, checked: CheckedManifest, prefix: str
) -> None:
    """With trust, a pinned release is built only from a manifest trusted keys signed, as the unpinned
    mirror requires. Key rotations are learned from the environment's pointer (one GET; each statement is
    signed by the key it replaces, so the pointer itself need not be current or trusted for this)."""
    policy = trust
    polled = await fetch.poll(None, retry=True)
    if isinstance(polled, Polled):
        policy = rotate(trust, polled.pointer.rotations)
    verify_manifest(policy, checked, prefix)


def reuse(versions_dir: Path, release: str) -> Path | None:
    """`versions_dir/<release>` when it is built (marked used now, under its lock), else None: no request,
    no source opened. A task starting on a version this node has costs this only."""
    target = version_path(versions_dir, release)
    if not target.is_dir():
        return None
    fd = _lock(versions_dir / f".{release}.lock")
    try:
        os.utime(target)
    except FileNotFoundError:  # removed meanwhile as stale: build it again
        return None
    finally:
        os.close(fd)
    return target


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _context(
    config: MirrorConfig, source: ObjectSource, pool: ThreadPoolExecutor, target: Path
) -> PassContext:
    """What ReleaseFetcher needs of a pass: the config, the source, retries and a thread pool. No Tree is
    opened: a version directory is built below, never through the mirror's install path."""

    def note(rejection: Rejection) -> None:
        log.warning("release path refused: %r: %s", rejection.key, rejection.reason)

    return PassContext(
        config=config,
        source=source,
        tree=Tree(target, fsync=config.fsync),
        ledger=Ledger(State(str(config.source))),
        executor=pool,
        sleep=asyncio.sleep,
        clock=time.time,
        note_rejection=note,
    )


def _accepted(config: MirrorConfig, checked: CheckedManifest) -> dict[str, FileEntry]:
    files, collisions, _ = accept_release_paths(
        config.source.prefix, checked.manifest.files, config.filters.wants
    )
    for rejection in (*checked.rejections, *collisions):
        log.warning("release %s: path refused: %r: %s", checked.release_id, rejection.key, rejection.reason)
    return files


def _as_pointer(checked: CheckedManifest, files: Mapping[str, FileEntry]) -> Pointer:
    """The release described as a pointer would, for `gather`'s archive decision. A pinned release is rarely
    the current one, so its archive's length is unknown: its upper bound stands in (tar headers and padding,
    zstd's block overhead), which still makes a cold start take the archive and a warm one single GETs."""
    manifest = checked.manifest
    size = sum(e.size for e in files.values())
    bound = size + _TAR_OVERHEAD * (len(files) + 10)
    return Pointer(
        prefix=manifest.prefix,
        release=checked.release_id,
        seq=manifest.seq,
        time=manifest.created,
        files=len(files),
        size=size,
        archive_size=bound + bound // 1000,
    )


def _build(
    store: ContentStore,
    files: Mapping[str, FileEntry],
    bodies: Mapping[str, bytes],
    versions_dir: Path,
    release: str,
    *,
    fsync: bool,
) -> None:
    """versions/.building-<id>-<rand>, one hard link per file to its store entry, then renamed whole. With
    `fsync`, every file is made durable before the rename (store entries are written without fsync): a
    power cut must not leave a version directory whose files a pinned task would find empty."""
    building = versions_dir / f"{BUILDING}{release}-{secrets.token_hex(4)}"
    os.mkdir(building, 0o755)
    try:
        made: set[Path] = {building}
        for path, entry in sorted(files.items()):
            target = building / path
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(target.parent)
            try:
                os.link(store.path / entry.sha256, target, follow_symlinks=False)
            except OSError:  # the entry went (pruned by a mirror meanwhile) or links are refused
                _write(target, bodies[entry.sha256])
        if fsync:
            for path in files:
                _fsync(building / path)
        try:
            os.rename(building, versions_dir / release)
        except OSError as exc:  # ENOTEMPTY/EEXIST: another builder got there first; its tree is the same
            if not (versions_dir / release).is_dir():
                raise
            log.debug("version %s appeared meanwhile (%s); keeping that one", release, exc.strerror)
            shutil.rmtree(building, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(building, ignore_errors=True)
        why = exc.strerror or exc
        raise InstallError(f"cannot build version {release} in {versions_dir}: {why}") from None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, body: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(body)


# -- cleanup -------------------------------------------------------------------------------------------------
def stale_versions(
    found: Mapping[str, float], tracked: set[str], keep: set[str], now: float, grace: float
) -> list[str]:
    """Which version directories (name -> mtime) a bundle removes: not tracked by Airflow (Airflow removes
    those itself, under its lock), not kept (in use by this process), and built more than `grace` ago (a task
    takes Airflow's version lock only after initialize(): the grace covers that gap)."""
    return sorted(
        name
        for name, mtime in found.items()
        if name not in tracked and name not in keep and now - mtime > grace
    )


def version_dirs(versions_dir: Path) -> dict[str, float]:
    """Release directories under `versions_dir` (name -> mtime); half-built and foreign names are skipped."""
    found: dict[str, float] = {}
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(versions_dir):
            if RELEASE_ID.match(entry.name) and entry.is_dir(follow_symlinks=False):
                found[entry.name] = entry.stat(follow_symlinks=False).st_mtime
    return found


def remove_versions(versions_dir: Path, names: list[str], stale: Callable[[float], bool]) -> list[str]:
    """Remove each version directory under its build lock (never one being built or being handed out),
    if its mtime is still `stale` there; the names removed."""
    removed = []
    for name in names:
        fd = _lock(versions_dir / f".{name}.lock")
        try:
            if not stale(os.stat(versions_dir / name, follow_symlinks=False).st_mtime):
                continue  # used since the decision
            shutil.rmtree(versions_dir / name)
            removed.append(name)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)  # the lock file stays: unlinking it could let two builders lock two inodes
    return removed
