"""In-memory ObjectSource for unit tests: S3 listing semantics, ETags, 304s, injectable latency and faults."""

from __future__ import annotations

import asyncio
import bisect
import hashlib
from collections import Counter
from collections.abc import Callable, Mapping

from dagmirror.errors import ObjectVanished, SourceConfigError, SourceError
from dagmirror.models import FetchedObject, ListPage, NotModified, RemoteObject

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

    async def list_page(self, prefix: str, *, delimiter: bool, token: str | None) -> ListPage:
        await self._enter("LIST", prefix)
        keys = sorted(k for k in self.objects if k.startswith(prefix))
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

    async def get(self, key: str, *, if_none_match: str | None) -> FetchedObject | NotModified:
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
