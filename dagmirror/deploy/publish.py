"""Publishing a release (docs/releases.md): bodies the bucket lacks, the manifest, the archive, then the
environment's pointer, last, as a compare-and-swap. Nothing before the pointer is visible to anyone: bodies,
manifests and archives are immutable and content-addressed, so a publish that stops half-way leaves only
unreferenced objects (which `gc` may remove), never a half release.

A deploy that loses the compare-and-swap reads the winner's release; when the two changed different paths it
replays its own changes on top (release.rebase) and tries again, at most MAX_ATTEMPTS times, else it fails
with ReleaseConflict and writes no pointer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from dagmirror.archive import read_archive, write_archive
from dagmirror.deploy.bucket import Bucket
from dagmirror.deploy.release import Current, Tree, changed, rebase
from dagmirror.errors import ConfigError, ObjectVanished, PreconditionFailed, ReleaseConflict, ReleaseError
from dagmirror.manifest import (
    MAX_MANIFEST_BYTES,
    MAX_POINTER_BYTES,
    PROBE_KEY,
    FileEntry,
    Manifest,
    Pointer,
    archive_key,
    body_key,
    manifest_key,
    parse_manifest,
    parse_pointer,
    pointer_key,
    sha256_hex,
)
from dagmirror.models import BODY_ROOM
from dagmirror.source import LiveObject
from dagmirror.trust import Signing
from dagmirror.verify import xxh3_hex

MAX_ATTEMPTS = 5
UNSAFE_FLAG = "--allow-no-conditional-writes"


@dataclass(frozen=True, slots=True)
class Published:
    release: str
    seq: int
    attempts: int  # compare-and-swaps tried (1: no other deploy got in between)
    cas: bool  # False: the server ignores conditional writes and the user opted in to publish anyway
    bodies_uploaded: int


@dataclass(frozen=True)
class About:
    """What a new manifest says besides its files."""

    time: float  # the deploy's start: the manifest's `created` and the pointer's `time`
    who: Mapping[str, Any] = field(default_factory=dict)
    host: str = ""
    git: Mapping[str, Any] | None = None


class Publisher:
    """Publishes releases of one environment (`prefix`) through `bucket`."""

    def __init__(
        self, bucket: Bucket, prefix: str, *, allow_no_cas: bool = False, signing: Signing | None = None
    ) -> None:
        self.bucket, self.prefix, self.allow_no_cas = bucket, prefix, allow_no_cas
        self.signing = signing  # None: unsigned releases (mirrors without trust install them)

    # -- reading -------------------------------------------------------------------------------------------
    async def current(self) -> Current:
        """The release the pointer names now (its manifest read and checked), or no release."""
        try:
            fetched = await self.bucket.get_version(
                pointer_key(self.prefix), None, max_bytes=MAX_POINTER_BYTES
            )
        except ObjectVanished:
            return Current(None, None, {})
        pointer = parse_pointer(fetched.body, prefix=self.prefix)
        return Current(pointer, fetched.etag, await self.tree(pointer.release))

    async def tree(self, release: str) -> dict[str, FileEntry]:
        try:
            body = (
                await self.bucket.get_version(manifest_key(release), None, max_bytes=MAX_MANIFEST_BYTES)
            ).body
        except ObjectVanished:
            raise ReleaseError(f"release {release} of {self.prefix} has no manifest") from None
        checked = parse_manifest(body, release_id=release, prefix=self.prefix)
        if checked.rejections:
            raise ReleaseError(f"release {release} holds a path the mirror refuses: {checked.rejections[0]}")
        return dict(checked.manifest.files)

    async def from_plain(self, live: Mapping[str, LiveObject]) -> Current:
        """No release yet: the environment's live plain files, each read once, are the current tree."""
        paths = sorted(live)
        fetched = await self.bucket.pool(
            paths, lambda p: self.bucket.get_version(live[p].key, None, max_bytes=live[p].size + BODY_ROOM)
        )
        bodies = {sha256_hex(f.body): f.body for f in fetched}
        files = {p: FileEntry(sha256_hex(f.body), len(f.body)) for p, f in zip(paths, fetched, strict=True)}
        return Current(None, None, files, bodies)

    # -- publishing ------------------------------------------------------------------------------------------
    async def check_conditional_writes(self) -> bool:
        """Write the probe object twice with If-None-Match: *; the second (or, once it exists, the only
        one) must be refused. False: the server ignores conditional writes (refused unless opted in)."""
        store = await self.bucket.store()
        for _ in range(2):
            try:
                await self.bucket.retry(lambda: store.put(PROBE_KEY, b"probe\n", if_none_match="*"))
            except PreconditionFailed:
                return True
        if not self.allow_no_cas:
            raise ConfigError(
                f"s3://{self.bucket.config.bucket.bucket} ignores conditional writes (If-None-Match), so the "
                f"release pointer cannot be a compare-and-swap; nothing was published ({UNSAFE_FLAG} "
                "publishes without it: never run two deploys of one environment at once then)"
            )
        return False

    async def publish(
        self, base: Current, mine: Tree, bodies: Mapping[str, bytes], about: About, *, whole: bool = False
    ) -> Published:
        """Publish `mine` (the tree `base` becomes): bodies, manifest, archive, then the pointer (CAS).
        `whole`: `mine` replaces the whole tree (a signed rollback), so any concurrent publish conflicts."""
        cas = await self.check_conditional_writes()
        uploaded = await self._upload_bodies(base, mine, bodies)
        target, files = base, dict(mine)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            manifest = Manifest(
                self.prefix,
                files,
                about.time,
                target.seq + 1,
                target.release,
                about.who,
                about.host,
                about.git,
            )
            encoded = await signed_manifest(manifest, self.signing)
            release = sha256_hex(encoded)
            await self._create(manifest_key(release), encoded)
            archive_size = await self._archive(release, target, files, bodies)
            pointer = self._pointer(release, target.seq + 1, files, archive_size, about, len(encoded))
            winner = await self._swap(await signed_pointer(pointer, self.signing), target)
            if winner is None:
                return Published(release, pointer.seq, attempt, cas, uploaded)
            if whole:
                raise _conflict(self.prefix, winner, sorted(changed(base.files, winner.files)))
            merged = rebase(base.files, mine, winner.files)
            if isinstance(merged, list):
                raise _conflict(self.prefix, winner, merged)
            target, files = winner, merged
        raise ReleaseConflict(
            f"the pointer of {self.prefix} kept moving: {MAX_ATTEMPTS} attempts lost to other deploys; "
            "nothing of this deploy was published (run it again)"
        )

    async def move(self, base: Current, release: str, files: Tree, about: About) -> Published:
        """Point the environment at an existing release (rollback): a new seq, no body or manifest copied.
        Signed, a rollback publishes a new release holding the old one's files instead (signed now, with
        the next seq), so mirrors that refuse older seqs take it, and the old signatures need not hold."""
        if self.signing is not None:
            return await self.publish(base, files, {}, about, whole=True)
        cas = await self.check_conditional_writes()
        head = await self.bucket.head(archive_key(release))
        pointer = self._pointer(release, base.seq + 1, files, head.size if head else None, about)
        winner = await self._swap(pointer, base)
        if winner is not None:
            raise _conflict(self.prefix, winner, sorted(changed(base.files, winner.files)))
        return Published(release, pointer.seq, 1, cas, 0)

    # -- steps ---------------------------------------------------------------------------------------------
    async def _upload_bodies(self, base: Current, files: Tree, bodies: Mapping[str, bytes]) -> int:
        """Bodies a published release already references are in the bucket; the others are HEADed and the
        missing ones uploaded (If-None-Match: *: a 412 means someone stored the same content first)."""
        known, bodies = base.stored(), dict(base.bodies) | dict(bodies)
        candidates = sorted({e.sha256 for e in files.values()} - known)
        heads = await self.bucket.pool(candidates, lambda d: self.bucket.head(body_key(d)))
        missing = [d for d, h in zip(candidates, heads, strict=True) if h is None]
        absent = [d for d in missing if d not in bodies]
        if absent:
            raise ReleaseError(f"body {absent[0]} is in no release and not at hand: cannot publish it")
        await self.bucket.pool(missing, lambda d: self._create(body_key(d), bodies[d], xxh3=True))
        return len(missing)

    async def _archive(self, release: str, base: Current, files: Tree, bodies: Mapping[str, bytes]) -> int:
        """The release's tar.zst, built from the previous archive plus the bodies at hand (others are read
        from the bucket, checked against their SHA-256); the size written, for the pointer."""
        head = await self.bucket.head(archive_key(release))
        if head is not None:
            return head.size
        known = dict(bodies) | dict(base.bodies)
        if base.pointer is not None and base.pointer.archive_size is not None:
            size = base.pointer.archive_size
            previous = (
                await self.bucket.get_version(archive_key(base.pointer.release), None, max_bytes=size)
            ).body
            known |= read_archive(previous, base.files, sum(e.size for e in base.files.values()))
        lacking = sorted({e.sha256 for e in files.values()} - known.keys())
        sizes = {e.sha256: e.size for e in files.values()}
        read = await self.bucket.pool(lacking, lambda digest: self.bucket.read_body(digest, sizes[digest]))
        known |= dict(zip(lacking, read, strict=True))
        archive = write_archive({p: known[e.sha256] for p, e in files.items()})
        await self._create(archive_key(release), archive)
        return len(archive)

    async def _create(self, key: str, body: bytes, *, xxh3: bool = False) -> None:
        await self.bucket.create(key, body, metadata={"xxh3": xxh3_hex(body)} if xxh3 else None)

    async def _swap(self, pointer: Pointer, base: Current) -> Current | None:
        """The compare-and-swap: None when the pointer now names `pointer`, else the release that won."""
        store = await self.bucket.store()
        if_none_match = None if base.etag else "*"
        try:
            await self.bucket.retry(
                lambda: store.put(
                    pointer_key(self.prefix),
                    pointer.encode(),
                    if_match=base.etag,
                    if_none_match=if_none_match,
                )
            )
        except PreconditionFailed:
            now = await self.current()
            if now.pointer is not None and (now.release, now.seq) == (pointer.release, pointer.seq):
                return None  # our own write landed, and only its answer was lost (then retried)
            return now
        return None

    def _pointer(
        self,
        release: str,
        seq: int,
        files: Tree,
        archive_size: int | None,
        about: About,
        size: int | None = None,
    ) -> Pointer:
        total = sum(e.size for e in files.values())
        pointer = Pointer(self.prefix, release, seq, about.time, len(files), total, archive_size)
        return stamped(replace(pointer, manifest_size=size), self.signing)


def _conflict(prefix: str, winner: Current, paths: list[str]) -> ReleaseConflict:
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    return ReleaseConflict(
        f"another deploy published release {winner.release} (seq {winner.seq}) of {prefix} "
        f"meanwhile and changed the same paths ({shown or 'the whole tree'}); this one published "
        "nothing and wrote no plain file: run it again"
    )


def stamped(pointer: Pointer, signing: Signing | None) -> Pointer:
    """A pointer to sign carries its expiry and the rotation statements (docs/releases.md, "Signatures")."""
    if signing is None:
        return pointer
    return replace(pointer, expires=pointer.time + signing.expires_after, rotations=signing.rotations)


async def signed_manifest(manifest: Manifest, signing: Signing | None) -> bytes:
    """The manifest's bytes, with the signatures of its unsigned encoding when signing is on."""
    if signing is None:
        return manifest.encode()
    return replace(manifest, signatures=await signing.sign(manifest.encode())).encode()


async def signed_pointer(pointer: Pointer, signing: Signing | None) -> Pointer:
    if signing is None:
        return pointer
    return replace(pointer, signatures=await signing.sign(pointer.encode()))
