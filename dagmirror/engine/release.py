"""The release stage's requests: the pointer, the manifest and the bodies of one release.

`poll` is one conditional GET of the pointer: a 304 means nothing changed, S3's NoSuchKey that the prefix has
no releases. `gather` makes every body a release needs available in memory, verified against its SHA-256:
from the local content store (no request), from the release's archive when that is cheaper, or one GET per
body; it returns all of them or raises ReleaseError, so a release is installed whole or not at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from concurrent.futures import Future as ThreadFuture
from dataclasses import dataclass

from dagmirror.archive import iter_archive
from dagmirror.bodies import ContentStore
from dagmirror.engine.context import PassContext
from dagmirror.errors import DagmirrorError, IntegrityError, ObjectVanished, ReleaseError
from dagmirror.manifest import (
    MAX_MANIFEST_BYTES,
    MAX_POINTER_BYTES,
    CheckedManifest,
    FileEntry,
    Pointer,
    archive_key,
    body_key,
    manifest_key,
    parse_manifest,
    parse_pointer,
    pointer_key,
)
from dagmirror.models import BODY_ROOM, FetchedObject, NotModified
from dagmirror.plan import archive_is_cheaper
from dagmirror.pool import bounded_map

log = logging.getLogger("dagmirror")
READ_BATCH = 256  # store reads or writes per thread call


@dataclass(frozen=True, slots=True)
class Polled:
    pointer: Pointer
    etag: str
    body: bytes  # the pointer's bytes, for its signatures


class ReleaseFetcher:
    def __init__(self, ctx: PassContext, store: ContentStore) -> None:
        self._ctx = ctx
        self._store = store

    async def poll(self, etag: str | None, *, retry: bool) -> Polled | NotModified | None:
        """The prefix's pointer; NotModified when it still has `etag`; None when the prefix has none.
        `retry`: retry transient errors (without, the first error is raised: the caller lists instead)."""
        ctx = self._ctx
        key = pointer_key(ctx.prefix)

        async def get() -> FetchedObject | NotModified:
            return await ctx.source.get(key, if_none_match=etag, max_bytes=MAX_POINTER_BYTES)

        try:
            got = await (ctx.retry(get) if retry else get())
        except ObjectVanished:
            return None
        if isinstance(got, NotModified):
            return got
        return Polled(parse_pointer(got.body, prefix=ctx.prefix), got.etag, got.body)

    async def manifest(self, release_id: str, limit: int = MAX_MANIFEST_BYTES) -> CheckedManifest:
        """The release's manifest, checked: from the content store (it is its own SHA-256) or one GET of at
        most `limit` bytes (a signed pointer says exactly how many)."""
        ctx = self._ctx
        stored = None if ctx.config.dry_run else await ctx.io(self._store.read, release_id)
        body = stored if stored is not None else await self._get(manifest_key(release_id), limit)
        checked = parse_manifest(body, release_id=release_id, prefix=ctx.prefix)
        if stored is None and not ctx.config.dry_run:
            await ctx.io(self._store.write, release_id, body)
        return checked

    async def gather(self, need: Mapping[str, FileEntry], pointer: Pointer | None) -> dict[str, bytes]:
        """Every body of `need` (path -> entry), by SHA-256, verified; ReleaseError unless all are there.
        `pointer`: the release whose archive may serve them (None: single GETs only, as in drift repair)."""
        digests = {e.sha256: e.size for e in need.values()}
        bodies = await self._from_store(set(digests))
        missing = {d: s for d, s in digests.items() if d not in bodies}
        archive_size = pointer.archive_size if pointer else None
        if pointer and archive_is_cheaper(len(missing), sum(missing.values()), archive_size):
            wanted = {p: e for p, e in need.items() if e.sha256 in missing}
            bodies |= await self._from_archive(pointer, wanted)
            missing = {d: s for d, s in missing.items() if d not in bodies}
        if missing:
            fetched = await bounded_map(
                sorted(missing.items()), self._get_body, concurrency=self._ctx.config.concurrency
            )
            bodies |= dict(zip(sorted(missing), fetched, strict=True))
        return bodies

    async def _from_store(self, digests: set[str]) -> dict[str, bytes]:
        ctx = self._ctx
        wanted = sorted(digests)  # a missing entry reads as None: no stat before each read
        batches = [wanted[i : i + READ_BATCH] for i in range(0, len(wanted), READ_BATCH)]
        found: dict[str, bytes] = {}
        read = await asyncio.gather(*(ctx.io(self._read, b) for b in batches))
        for batch, bodies in zip(batches, read, strict=True):
            found |= {d: b for d, b in zip(batch, bodies, strict=True) if b is not None}
        return found

    def _read(self, digests: list[str]) -> list[bytes | None]:
        return [self._store.read(d) for d in digests]

    async def _from_archive(self, pointer: Pointer, wanted: dict[str, FileEntry]) -> dict[str, bytes]:
        """What the archive holds of `wanted`, each body in the content store before this returns; nothing
        (and one warning) when the archive cannot be read. Bodies are stored batch by batch on the other
        install threads while the rest of the archive is still being decompressed."""
        ctx = self._ctx
        key = archive_key(pointer.release)
        stores: list[ThreadFuture[None]] = []
        try:
            data = await self._get(key, (pointer.archive_size or 0) + BODY_ROOM)
            found = await ctx.io(self._read_archive, data, wanted, pointer.size + BODY_ROOM, stores)
        except DagmirrorError as exc:
            log.warning(
                "archive of release %s not used, fetching its bodies one by one: %s", pointer.release, exc
            )
            found = {}
        # the stores already submitted finish either way (their bodies were verified); an error is raised
        await asyncio.gather(*(asyncio.wrap_future(f) for f in stores))
        return found

    def _read_archive(
        self, data: bytes, wanted: dict[str, FileEntry], limit: int, stores: list[ThreadFuture[None]]
    ) -> dict[str, bytes]:
        """In a thread: decompress and verify, handing each batch to the pool to store; not waiting on it
        here (a pool of one thread would then wait on itself)."""
        found: dict[str, bytes] = {}
        for batch in iter_archive(data, wanted, limit, READ_BATCH):
            found |= batch
            stores.append(self._ctx.executor.submit(self._write_all, list(batch.items())))
        return found

    def _write_all(self, bodies: list[tuple[str, bytes]]) -> None:
        for digest, body in bodies:
            self._store.write(digest, body)

    async def _get_body(self, item: tuple[str, int]) -> bytes:
        digest, size = item
        ctx, key = self._ctx, body_key(item[0])

        async def verified() -> bytes:
            body = await self._get_once(key, size)
            if len(body) != size or hashlib.sha256(body).hexdigest() != digest:
                raise IntegrityError(f"{key}: body does not match its SHA-256 and size ({size} bytes)")
            return body

        try:
            body = await ctx.retry(verified)
        except DagmirrorError as exc:
            raise ReleaseError(f"body {digest} could not be fetched: {exc}") from None
        await ctx.io(self._store.write, digest, body)
        return body

    async def _get(self, key: str, max_bytes: int) -> bytes:
        return await self._ctx.retry(lambda: self._get_once(key, max_bytes))

    async def _get_once(self, key: str, max_bytes: int) -> bytes:
        got = await self._ctx.source.get(key, if_none_match=None, max_bytes=max_bytes)
        assert isinstance(got, FetchedObject)  # no If-None-Match, so never a 304
        return got.body
