"""The deployer's side of the fleet: every status of an environment (one paginated LIST, then one GET per
instance on the bounded pool) and the environment's release pointer, judged by converge.py.

A status object is untrusted: one larger than `MAX_STATUS_BYTES` in the listing is never fetched, one that
does not parse (or cannot be fetched) becomes an *unreadable* row with its reason, and keys that do not name
an instance of this environment (deeper keys, names that break the instance id rule) are left out. A
failed LIST or pointer read fails the look (the CLI exits 1): without them there is nothing to judge."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from dagmirror.config import DeployConfig
from dagmirror.errors import DagmirrorError, ObjectVanished
from dagmirror.fleet.converge import FleetView, Seen, Target, judge
from dagmirror.fleet.status import MAX_STATUS_BYTES, StatusError, instance_of, parse_status, status_prefix
from dagmirror.manifest import MAX_POINTER_BYTES, Pointer, parse_pointer, pointer_key
from dagmirror.models import FetchedObject, StoredObject
from dagmirror.pool import bounded_map
from dagmirror.retry import Sleep, retrying

if TYPE_CHECKING:
    from dagmirror.source.store import S3Store


class StatusStore(Protocol):
    """What reading a fleet needs of a bucket: `DeployStore` (source/) has it, `MemoryStore` fakes it."""

    async def list_stamped(self, prefix: str) -> tuple[StoredObject, ...]: ...

    async def get_version(
        self, key: str, version_id: str | None, *, max_bytes: int | None = None
    ) -> FetchedObject: ...

    async def aclose(self) -> None: ...


class FleetReader:
    """Reads the fleets of the environments of one bucket. Use as `async with FleetReader(config) as r`;
    a `store` passed in (a fake, in tests) is not closed."""

    def __init__(
        self,
        config: DeployConfig,
        store: StatusStore | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._store = store
        self._owns_store = store is None
        self._sleep = sleep
        self._clock = clock

    async def __aenter__(self) -> FleetReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._store is not None and self._owns_store:
            await self._store.aclose()
            self._store = None

    async def look(
        self, env: str, *, target: Target | None = None, silent_after: float | None = None
    ) -> FleetView:
        """Every instance of `env`, judged against `target` (default: the release its pointer names)."""
        prefix = self.config.env_prefix(env)  # an unknown environment is a ConfigError before any request
        if target is None:
            pointer = await self.pointer(prefix)
            target = Target(pointer.release, pointer.seq) if pointer else Target()
        seen = await self.statuses(prefix)
        return judge(prefix, seen, target, self._clock(), silent_after)

    async def pointer(self, prefix: str) -> Pointer | None:
        """The environment's current release, or None when it has none (deploys with --no-releases)."""
        try:
            fetched = await self._get(pointer_key(prefix), MAX_POINTER_BYTES)
        except ObjectVanished:
            return None
        return parse_pointer(fetched.body, prefix=prefix)

    async def statuses(self, prefix: str) -> list[Seen]:
        store = await self.store()
        where = status_prefix(prefix)
        listed = await retrying(lambda: store.list_stamped(where), self.config.retry, sleep=self._sleep)
        mine = [(name, o) for o in listed if (name := instance_of(o.key, prefix)) is not None]
        found = await bounded_map(
            mine, lambda item: self._seen(prefix, *item), concurrency=self.config.concurrency
        )
        return [s for s in found if s is not None]

    async def _seen(self, prefix: str, instance: str, listed: StoredObject) -> Seen | None:
        if listed.size > MAX_STATUS_BYTES:
            return Seen(instance, listed.modified, problem=f"larger than {MAX_STATUS_BYTES} bytes")
        try:
            fetched = await self._get(listed.key, MAX_STATUS_BYTES)  # rewritten larger since the LIST
        except ObjectVanished:  # deleted since the LIST: not an instance any more
            return None
        except DagmirrorError as exc:
            return Seen(instance, listed.modified, problem=f"cannot be read: {exc}")
        try:
            status = parse_status(fetched.body, prefix=prefix, instance=instance)
        except StatusError as exc:
            return Seen(instance, listed.modified, problem=str(exc))
        return Seen(instance, listed.modified, status)

    async def _get(self, key: str, max_bytes: int) -> FetchedObject:
        """One retried GET of at most `max_bytes` (statuses and pointers are untrusted, and small)."""
        store = await self.store()
        return await retrying(
            lambda: store.get_version(key, None, max_bytes=max_bytes), self.config.retry, sleep=self._sleep
        )

    async def store(self) -> StatusStore:
        """The store, opened on first use (the SDK loads only then)."""
        if self._store is None:
            cfg = self.config
            self._store = await _s3_store().open(
                cfg.bucket.bucket,
                endpoint_url=cfg.endpoint_url,
                region=cfg.region,
                profile=cfg.profile,
                concurrency=cfg.concurrency,
            )
        return self._store


def _s3_store() -> type[S3Store]:
    from dagmirror.source.store import S3Store

    return S3Store
