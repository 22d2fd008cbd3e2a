"""In-memory fakes for unit tests: `MemorySource` (an ObjectSource with S3 listing semantics, ETags, 304s,
injectable latency and faults) and `MemoryStore` (a versioned DeployStore)."""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dagmirror.errors import ObjectVanished, PreconditionFailed, SourceConfigError, SourceError
from dagmirror.models import FetchedObject, ListPage, NotModified, RemoteObject, StoredObject
from dagmirror.source import Copied, LiveObject, ObjectHead

# A fault hook sees (operation, key-or-prefix) and may raise a SourceError or return a replacement body.
FaultHook = Callable[[str, str], bytes | None]


class MemorySource:
    def __init__(
        self,
        objects: Mapping[str, bytes] | None = None,
        *,
        page_size: int = 1000,
        latency: float = 0.0,
        bucket_exists: bool = True,
    ) -> None:
        self.objects: dict[str, bytes] = dict(objects or {})
        self.metadata: dict[str, dict[str, str]] = {}
        self.page_size = page_size
        self.latency = latency
        self.bucket_exists = bucket_exists
        self.fault: FaultHook | None = None
        self.counts: Counter[str] = Counter()

    def put(self, key: str, body: bytes, **metadata: str) -> None:
        self.objects[key] = body
        self.metadata[key] = metadata

    async def list_page(
        self, prefix: str, *, delimiter: bool, token: str | None, start_after: str | None = None
    ) -> ListPage:
        await self._enter("LIST", prefix)
        after = None if token else start_after  # as S3: StartAfter is ignored with a continuation token
        keys = sorted(k for k in self.objects if k.startswith(prefix) and (after is None or k > after))
        entries: list[str] = []
        for key in keys:
            rest = key[len(prefix) :]
            cut = rest.find("/") if delimiter else -1
            entry = prefix + rest[: cut + 1] if cut >= 0 else key
            if not entries or entries[-1] != entry:
                entries.append(entry)
        start = bisect.bisect_right(entries, token) if token else 0
        window = entries[start : start + self.page_size]
        more = start + self.page_size < len(entries)
        objects = tuple(
            RemoteObject(k, _etag(self.objects[k]), len(self.objects[k])) for k in window if k in self.objects
        )
        prefixes = tuple(e for e in window if e not in self.objects)
        return ListPage(objects, prefixes, window[-1] if more and window else None)

    async def get(
        self, key: str, *, if_none_match: str | None, max_bytes: int | None = None
    ) -> FetchedObject | NotModified:
        await self._enter("GET", key)
        if key not in self.objects:
            raise ObjectVanished(f"object {key!r} vanished")
        body = self.objects[key]
        etag = _etag(body)
        if if_none_match == etag:
            self.counts["GET 304"] += 1
            return NotModified(etag)
        self.counts["GET 200"] += 1
        served = self.fault("BODY", key) if self.fault else None
        if max_bytes is not None and len(served if served is not None else body) > max_bytes:
            raise SourceError(
                f"GET {key}: body exceeds the listed size {max_bytes}", transient=False, code="BodyTooLarge"
            )
        return FetchedObject(
            key,
            served if served is not None else body,
            etag,
            len(body),
            meta_xxh3=self.metadata.get(key, {}).get("xxh3"),
        )

    async def _enter(self, op: str, target: str) -> None:
        self.counts[op] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        if not self.bucket_exists:
            raise SourceConfigError("bucket does not exist", code="NoSuchBucket")
        if self.fault is not None:
            try:
                self.fault(op, target)
            except SourceError:
                self.counts[f"{op} error"] += 1
                raise

    def request_counts(self) -> dict[str, int]:
        return dict(self.counts)

    async def aclose(self) -> None:
        return None


def _etag(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


# A store fault hook sees (operation, key) and may raise a SourceError, e.g. to fail every PUT of one key.
StoreFault = Callable[[str, str], None]


@dataclass(slots=True)
class _Version:
    version_id: str | None
    body: bytes | None  # None: a delete marker
    metadata: dict[str, str]
    etag: str
    modified: float = 0.0


class MemoryStore:
    """In-memory DeployStore: one bucket with S3's versioning semantics (or none), ETags, metadata,
    server-side copies and delete markers; `fault` injects errors, `opaque_etags` mimics SSE-KMS (ETags that
    are not the body's MD5)."""

    def __init__(
        self,
        objects: Mapping[str, bytes] | None = None,
        *,
        versioned: bool = True,
        identity: str | None = None,
        opaque_etags: bool = False,
        conditional_writes: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock  # LastModified of every write; tests move it to age objects
        self.versioned = versioned
        self.conditional_writes = (
            conditional_writes  # False: ignore If-Match/If-None-Match, as some servers do
        )
        self.identity = identity
        self.opaque_etags = opaque_etags
        self.fault: StoreFault | None = None
        self.counts: Counter[str] = Counter()
        self.history: dict[str, list[_Version]] = {}  # oldest first
        self._serial = 0
        for key, body in (objects or {}).items():
            self._write(key, body, {})

    # -- helpers for tests -----------------------------------------------------------------------------------
    def live(self) -> dict[str, bytes]:
        """Current bodies by key (deleted keys left out)."""
        return {k: v[-1].body for k, v in self.history.items() if v[-1].body is not None}

    # -- DeployStore -----------------------------------------------------------------------------------------
    async def put(
        self,
        key: str,
        body: bytes,
        *,
        metadata: dict[str, str] | None = None,
        if_match: str | None = None,
        if_none_match: str | None = None,
    ) -> str | None:
        self._enter("PUT", key)
        if self.conditional_writes:
            self._check_condition(key, if_match, if_none_match)
        return self._write(key, body, dict(metadata or {})).version_id

    async def list_live(self, prefix: str) -> tuple[LiveObject, ...]:
        self._enter("LIST", prefix)
        return tuple(
            LiveObject(key, v.version_id, v.etag, len(v.body))
            for key in sorted(self.history)
            if key.startswith(prefix) and (v := self.history[key][-1]).body is not None
        )

    async def list_stamped(self, prefix: str) -> tuple[StoredObject, ...]:
        self._enter("LIST", prefix)
        return tuple(
            StoredObject(key, len(v.body), v.modified)
            for key in sorted(self.history)
            if key.startswith(prefix) and (v := self.history[key][-1]).body is not None
        )

    async def get_version(
        self, key: str, version_id: str | None, *, max_bytes: int | None = None
    ) -> FetchedObject:
        self._enter("GET", key)
        found = self._find(key, version_id)
        if found is None or found.body is None:
            raise ObjectVanished(f"object {key!r} version {version_id} does not exist")
        body = found.body
        if max_bytes is not None and len(body) > max_bytes:
            raise SourceError(
                f"GET {key}: body exceeds {max_bytes} bytes", transient=False, code="BodyTooLarge"
            )
        return FetchedObject(
            key,
            body,
            found.etag,
            len(body),
            meta_xxh3=found.metadata.get("xxh3"),
            version_id=found.version_id,
        )

    async def head(self, key: str, version_id: str | None = None) -> ObjectHead | None:
        self._enter("HEAD", key)
        found = self._find(key, version_id)
        if found is None or found.body is None:
            return None
        return ObjectHead(key, found.version_id, found.etag, len(found.body), found.metadata.get("xxh3"))

    async def copy(self, source_key: str, version_id: str | None, key: str) -> Copied:
        self._enter("COPY", key)
        found = self._find(source_key, version_id)
        if found is None or found.body is None:
            raise SourceError(
                f"copy source {source_key!r} version {version_id} does not exist", transient=False
            )
        written = self._write(key, found.body, dict(found.metadata))
        return Copied(written.version_id, written.etag)

    async def delete(self, key: str) -> str | None:
        self._enter("DELETE", key)
        if not self.versioned:
            self.history.pop(key, None)
            return None
        marker = _Version(self._next_id(), None, {}, "")
        self.history.setdefault(key, []).append(marker)
        return marker.version_id

    async def versioning(self) -> str:
        return "Enabled" if self.versioned else ""

    async def caller_identity(self) -> str | None:
        return self.identity

    async def aclose(self) -> None:
        return None

    # -- internals -------------------------------------------------------------------------------------------
    def _check_condition(self, key: str, if_match: str | None, if_none_match: str | None) -> None:
        found = self._find(key, None)
        current = found.etag if found is not None and found.body is not None else None
        if if_none_match == "*" and current is not None:
            self.counts["PUT 412"] += 1
            raise PreconditionFailed(f"PUT {key}: If-None-Match: * but the key exists")
        if if_match is not None and current != if_match:
            self.counts["PUT 412"] += 1
            raise PreconditionFailed(f"PUT {key}: If-Match {if_match} but the key holds {current}")

    def _enter(self, op: str, key: str) -> None:
        self.counts[op] += 1
        if self.fault is not None:
            self.fault(op, key)

    def _write(self, key: str, body: bytes, metadata: dict[str, str]) -> _Version:
        etag = _etag(body)
        if self.opaque_etags:
            self._serial += 1
            etag = _etag(etag.encode() + str(self._serial).encode())
        version = _Version(self._next_id(), body, metadata, etag, self.clock())
        if self.versioned:
            self.history.setdefault(key, []).append(version)
        else:
            self.history[key] = [version]
        return version

    def _next_id(self) -> str | None:
        if not self.versioned:
            return None
        self._serial += 1
        return f"v{self._serial:06d}"

    def _find(self, key: str, version_id: str | None) -> _Version | None:
        versions = self.history.get(key, [])
        if version_id is None:
            return versions[-1] if versions else None
        return next((v for v in versions if v.version_id == version_id), None)
