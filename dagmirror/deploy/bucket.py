"""The deploy's one way to its bucket: a `DeployStore` opened on first use, every request retried under the
deploy's RetryPolicy, every fan-out bounded by its concurrency. The commands (request.py) and the run
(runner.py) ask this for their reads, so neither repeats the open-retry-pool plumbing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from dagmirror.config.deploy import DeployConfig
from dagmirror.errors import PreconditionFailed, ReleaseError
from dagmirror.manifest import body_key, sha256_hex
from dagmirror.models import BODY_ROOM, FetchedObject, StoredObject
from dagmirror.pool import bounded_map
from dagmirror.retry import Sleep, retrying
from dagmirror.source import DeployStore, LiveObject, ObjectHead

T = TypeVar("T")
R = TypeVar("R")


class Bucket:
    """Requests to the bucket of one `DeployConfig`; a `store` passed in (a fake, in tests) is not closed."""

    def __init__(
        self, config: DeployConfig, store: DeployStore | None, *, sleep: Sleep = asyncio.sleep
    ) -> None:
        self.config = config
        self.sleep = sleep
        self._store = store
        self._owns_store = store is None

    async def store(self) -> DeployStore:
        """The store, opened on first use: a deploy refused locally never needs the bucket (nor the SDK)."""
        if self._store is None:
            from dagmirror.source.store import S3Store  # the SDK loads only when a real bucket is needed

            cfg = self.config
            self._store = await S3Store.open(
                cfg.bucket.bucket,
                endpoint_url=cfg.endpoint_url,
                region=cfg.region,
                profile=cfg.profile,
                concurrency=cfg.concurrency,
                sts=cfg.sts,
            )
        return self._store

    async def aclose(self) -> None:
        if self._store is not None and self._owns_store:
            await self._store.aclose()
            self._store = None

    async def retry(self, call: Callable[[], Awaitable[T]]) -> T:
        return await retrying(call, self.config.retry, sleep=self.sleep)

    async def pool(self, items: Sequence[T], work: Callable[[T], Awaitable[R]]) -> list[R]:
        return await bounded_map(items, work, concurrency=self.config.concurrency)

    # -- single reads, each one retried request ------------------------------------------------------------
    async def list_live(self, prefix: str) -> tuple[LiveObject, ...]:
        store = await self.store()
        return await self.retry(lambda: store.list_live(prefix))

    async def create(self, key: str, body: bytes, *, metadata: dict[str, str] | None = None) -> None:
        """Write an immutable, content-addressed object; one that exists already holds the same bytes."""
        store = await self.store()
        try:
            await self.retry(lambda: store.put(key, body, metadata=metadata, if_none_match="*"))
        except PreconditionFailed:
            return

    async def read_body(self, digest: str, size: int) -> bytes:
        """The release body `digest` (listed `size` bytes), checked against its SHA-256."""
        body = (await self.get_version(body_key(digest), None, max_bytes=size + BODY_ROOM)).body
        if sha256_hex(body) != digest:
            raise ReleaseError(f"body {digest} in the bucket does not match its SHA-256")
        return body

    async def list_stamped(self, prefix: str) -> tuple[StoredObject, ...]:
        store = await self.store()
        return await self.retry(lambda: store.list_stamped(prefix))

    async def get_version(
        self, key: str, version_id: str | None, *, max_bytes: int | None = None
    ) -> FetchedObject:
        """One version, abandoned past `max_bytes` (give one wherever the size is known or bounded)."""
        store = await self.store()
        return await self.retry(lambda: store.get_version(key, version_id, max_bytes=max_bytes))

    async def head(self, key: str, version_id: str | None = None) -> ObjectHead | None:
        store = await self.store()
        return await self.retry(lambda: store.head(key, version_id))

    async def versioning(self) -> str:
        store = await self.store()
        return await self.retry(store.versioning)
