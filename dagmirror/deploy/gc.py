"""`dagmirror gc`: remove the bodies, manifests and archives no kept release needs (docs/releases.md,
"Garbage collection"). The decision is gcplan.decide (pure); this module does the requests around it:

    read every pointer -> list metadata/releases/ (paginated, with LastModified) -> read every manifest
    -> decide -> read the pointers again (moved: plan again, at most MAX_ATTEMPTS times) -> delete bodies
    and archives (pool) -> read the pointers again: a manifest one now names is spared -> delete manifests
    -> read the pointers once more: a release published meanwhile must not name anything deleted

Why that is safe against a publish running at the same time: everything a publish writes before its pointer
(bodies, manifest, archive) is younger than the grace period, and a young manifest keeps every body it names,
however old. What a publish can still lose is an *old* body it found by HEAD and did not upload again (a file
reverted to bytes no kept release holds), or an old release a rollback moves the pointer to, when its
pointer moves after gc's last check and before the deletes end. Manifests go last, after one more read of
the pointers, and gc holds the bytes of those it deletes (up to HELD_BYTES): a manifest deleted as its
release became current is put back, so the environment never names a release without a manifest. Bodies
lost that way are reported (exit 1) with the release (docs/releases.md says what then fails and what
repairs it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from dagmirror.deploy.bucket import Bucket
from dagmirror.deploy.gcplan import GcPlan, ReleaseRefs, count_kinds, decide, kind_of, read_refs
from dagmirror.errors import DagmirrorError, ObjectVanished, ReleaseError, SourceError
from dagmirror.manifest import (
    MAX_MANIFEST_BYTES,
    MAX_POINTER_BYTES,
    POINTERS,
    ROOT,
    manifest_key,
    parse_pointer,
)
from dagmirror.models import StoredObject

MAX_ATTEMPTS = 3
HELD_BYTES = 256 << 20  # manifests gc deletes are kept in memory up to this much, to put back (module doc)


class GcAborted(DagmirrorError):
    """Pointers kept moving while gc planned: nothing was deleted."""


@dataclass(frozen=True)
class GcReport:
    bucket: str
    scope: tuple[str, ...] | None  # the prefixes gc was asked about; None: every environment
    keep: int
    grace: float
    dry_run: bool
    environments: Mapping[str, str]  # prefix -> current release, every environment of the bucket
    plan: GcPlan
    deleted: Mapping[str, int]  # bodies / manifests / archives deleted (planned, in a dry run)
    bytes_freed: int
    attempts: int
    unreadable: tuple[str, ...] = ()  # manifests gc could not read: kept, protecting nothing
    failed: tuple[str, ...] = ()  # one line per delete that failed
    damaged: tuple[str, ...] = ()  # one line per release published meanwhile that names a deleted object
    restored: tuple[str, ...] = ()  # manifests put back: their release became current while gc deleted

    def to_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "scope": list(self.scope) if self.scope is not None else None,
            "keep": self.keep,
            "grace": self.grace,
            "dry_run": self.dry_run,
            "environments": dict(self.environments),
            "kept_releases": len(self.plan.kept),
            "young_releases": len(self.plan.young),
            "spared_by_grace": self.plan.protected_young,
            "deleted": dict(self.deleted),
            "bytes_freed": self.bytes_freed,
            "attempts": self.attempts,
            "unreadable": list(self.unreadable),
            "failed": list(self.failed),
            "damaged": list(self.damaged),
            "restored": list(self.restored),
        }


@dataclass(frozen=True)
class _View:
    """What one planning round read."""

    objects: tuple[StoredObject, ...]
    pointers: dict[str, str]
    releases: dict[str, ReleaseRefs]
    unreadable: tuple[str, ...]
    manifests: dict[str, bytes]  # the bytes of manifests read, while they fit in HELD_BYTES


class Collector:
    """One gc run over the bucket of `bucket`."""

    def __init__(self, bucket: Bucket, *, clock: Callable[[], float] = time.time) -> None:
        self.bucket, self.clock = bucket, clock

    async def run(
        self, scope: Iterable[str] | None, *, keep: int, grace: float, dry_run: bool = False
    ) -> GcReport:
        prefixes = None if scope is None else tuple(scope)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            view = await self._read()
            plan = decide(
                view.objects, view.pointers, view.releases,
                keep=keep, grace=grace, now=self.clock(), scope=prefixes,
            )  # fmt: skip
            report = GcReport(
                self.bucket.config.bucket.bucket, prefixes, keep, grace, dry_run, view.pointers, plan,
                plan.counts(), plan.bytes, attempt, view.unreadable,
            )  # fmt: skip
            if dry_run:
                return report
            if await self._pointers() != view.pointers:
                continue  # a publish moved a pointer while we planned: plan again on what it published
            return await self._delete(report, view)
        raise GcAborted(
            f"pointers of s3://{self.bucket.config.bucket.bucket} moved during each of {MAX_ATTEMPTS} "
            "plans (deploys running): nothing was deleted; run gc again"
        )

    async def _read(self) -> _View:
        # Pointers first, then the listing: a manifest a pointer names is then always in the listing, and a
        # pointer that moves after this read is seen moved by the check before any delete.
        pointers = await self._pointers()
        objects = await self.bucket.list_stamped(ROOT)
        manifests = [name for o in objects if (k := kind_of(o.key))[0] == "manifest" for name in [k[1]]]
        read = await self.bucket.pool(manifests, self._read_manifest)
        releases: dict[str, ReleaseRefs] = {}
        held: dict[str, bytes] = {}
        unreadable: list[str] = []
        for rid, got in zip(manifests, read, strict=True):
            if isinstance(got, str):
                unreadable.append(f"{rid}: {got}")
            elif got is not None:
                releases[rid] = got[0]
                if sum(map(len, held.values())) + len(got[1]) <= HELD_BYTES:
                    held[rid] = got[1]
        for prefix, release in pointers.items():
            if release in manifests and release not in releases:
                raise ReleaseError(f"the current release {release} of {prefix} has an unreadable manifest")
        return _View(objects, pointers, releases, tuple(unreadable), held)

    async def _read_manifest(self, release: str) -> tuple[ReleaseRefs, bytes] | str | None:
        """The manifest's references and bytes; a one-line reason when it is unreadable; None when gone."""
        try:
            body = (
                await self.bucket.get_version(manifest_key(release), None, max_bytes=MAX_MANIFEST_BYTES)
            ).body
        except ObjectVanished:
            return None
        try:
            return read_refs(body, release), body
        except ReleaseError as exc:
            return str(exc)

    async def _refs(self, release: str) -> ReleaseRefs | str | None:
        got = await self._read_manifest(release)
        return got[0] if isinstance(got, tuple) else got

    async def _pointers(self) -> dict[str, str]:
        """prefix -> current release of every environment with a pointer (listed now, then each read)."""
        keys = [o.key for o in await self.bucket.list_stamped(POINTERS) if kind_of(o.key)[0] == "pointer"]
        read = await self.bucket.pool(keys, self._pointer)
        return {kind_of(k)[1]: r for k, r in zip(keys, read, strict=True) if r is not None}

    async def _pointer(self, key: str) -> str | None:
        try:
            body = (await self.bucket.get_version(key, None, max_bytes=MAX_POINTER_BYTES)).body
        except ObjectVanished:
            return None
        return parse_pointer(body, prefix=kind_of(key)[1]).release

    async def _delete(self, report: GcReport, view: _View) -> GcReport:
        """Bodies and archives first; then, after another read of the pointers, the manifests no pointer
        names (module doc)."""
        store = await self.bucket.store()

        async def one(obj: StoredObject) -> str | None:
            try:
                await self.bucket.retry(lambda: store.delete(obj.key))
            except SourceError as exc:
                return f"{obj.key}: {exc}"
            return None

        manifests = [o for o in report.plan.deletes if kind_of(o.key)[0] == "manifest"]
        first = [o for o in report.plan.deletes if kind_of(o.key)[0] != "manifest"]
        first_results = await self.bucket.pool(first, one)
        current = set((await self._pointers()).values())
        manifests = [o for o in manifests if kind_of(o.key)[1] not in current]
        tried = first + manifests
        results = first_results + await self.bucket.pool(manifests, one)
        failed = tuple(r for r in results if r is not None)
        done = [o for o, r in zip(tried, results, strict=True) if r is None]
        damaged, restored = await self._damage(view, {kind_of(o.key) for o in done})
        gone = [o for o in done if kind_of(o.key) not in {("manifest", r) for _, r in restored}]
        return replace(
            report, deleted=count_kinds(gone), bytes_freed=sum(o.size for o in gone), failed=failed,
            damaged=damaged,
            restored=tuple(f"release {r} of {p}: became current as gc deleted it; manifest put back"
                           for p, r in restored),
        )  # fmt: skip

    async def _damage(
        self, view: _View, deleted: set[tuple[str, str]]
    ) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
        """Releases made current while gc deleted, whose manifest or bodies it deleted (module doc): a
        manifest it holds is put back (returned as (prefix, release)); what is still missing is damage."""
        damaged: list[str] = []
        restored: list[tuple[str, str]] = []
        for prefix, release in sorted((await self._pointers()).items()):
            if view.pointers.get(prefix) == release:
                continue  # a release gc planned with: it was kept
            refs = await self._refs(release)
            if refs is None and release in view.manifests and await self._put_back(release, view):
                restored.append((prefix, release))
                refs = view.releases[release]
            if refs is None:
                damaged.append(
                    f"release {release} of {prefix}: gc removed its manifest as it became current; "
                    "mirrors, deploys and rollbacks of it fail until its pointer names a whole release"
                )
            elif isinstance(refs, ReleaseRefs):
                lost = sorted(d for d in refs.bodies if ("body", d) in deleted)
                if lost:
                    damaged.append(
                        f"release {release} of {prefix}: gc removed {len(lost)} of its bodies "
                        f"({lost[0]}…) as it became current: mirrors of it fail (and stay on the release "
                        "they have) until a deploy or rollback of that environment names whole releases again"
                    )
        return tuple(damaged), restored

    async def _put_back(self, release: str, view: _View) -> bool:
        """Create the manifest again (someone putting it back first wrote the same bytes: its name is their
        SHA-256); False when the write fails."""
        try:
            await self.bucket.create(manifest_key(release), view.manifests[release])
        except SourceError:
            return False
        return True
