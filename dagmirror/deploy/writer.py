"""Carry out a validated deploy plan: writes in a bounded pool, deletes only once every write landed, the
record last. Every request is retried under the deploy's RetryPolicy; what still fails is reported with the
version that is really live, so the record never claims more than happened."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import TypeVar

import orjson

from dagmirror.deploy.plan import DeployPlan, Removal, Step
from dagmirror.deploy.record import (
    DeployReport,
    FileResult,
    deleted_result,
    kept_result,
    record_key,
    unchanged_result,
    written_result,
)
from dagmirror.errors import DagmirrorError
from dagmirror.pool import bounded_map
from dagmirror.retry import RetryPolicy, Sleep, retrying
from dagmirror.source import DeployStore
from dagmirror.verify import xxh3_hex

T = TypeVar("T")


class Writer:
    def __init__(
        self, store: DeployStore, *, retry: RetryPolicy, concurrency: int, sleep: Sleep = asyncio.sleep
    ) -> None:
        self._store = store
        self._policy = retry
        self._concurrency = concurrency
        self._sleep = sleep

    async def apply(self, plan: DeployPlan, prefix: str) -> tuple[FileResult, ...]:
        """Writes first; deletes only when every write landed, so a failed upload never leaves a path
        deleted that its replacement was meant to take over."""
        written = await bounded_map(plan.writes, partial(self._write, prefix), concurrency=self._concurrency)
        failed = sum(f.action == "failed" for f in written)
        if failed:
            why = f"not deleted: {failed} writes of this deploy failed"
            deleted = [kept_result(r, prefix, why) for r in plan.deletes]
        else:
            deleted = await bounded_map(
                plan.deletes, partial(self._delete, prefix), concurrency=self._concurrency
            )
        unchanged = [unchanged_result(s, prefix) for s in plan.unchanged]
        return tuple(sorted((*unchanged, *written, *deleted), key=lambda f: f.path))

    async def record(self, report: DeployReport) -> DeployReport:
        key = record_key(report.env, report.started_at, report.deploy_id)
        body = orjson.dumps(report.record(), option=orjson.OPT_INDENT_2)
        try:
            await self._retry(lambda: self._store.put(key, body, metadata={"xxh3": xxh3_hex(body)}))
        except DagmirrorError as exc:
            return replace(report, record_error=f"the deploy record could not be written: {exc}")
        return replace(report, record_key=key)

    async def _write(self, prefix: str, step: Step) -> FileResult:
        w, key, store = step.wanted, prefix + step.path, self._store

        async def once() -> str | None:
            if w.origin is not None:
                return (await store.copy(w.origin.key, w.origin.version_id, key)).version_id
            body = w.body or b""
            return await store.put(key, body, metadata={"xxh3": w.xxh3 or xxh3_hex(body)})

        try:
            version = await self._retry(once)
        except DagmirrorError as exc:
            return await self._after_failure(step, key, str(exc))
        return written_result(step, key, version)

    async def _after_failure(self, step: Step, key: str, error: str) -> FileResult:
        """What is live after a write failed for good: a write whose answer was lost may have landed, and
        the record must name the version that is really there."""
        w = step.wanted
        try:
            head = await self._store.head(key)
        except DagmirrorError:
            return FileResult(step.path, key, "failed", error=f"{error} (the live version is unknown)")
        if head is None:
            return FileResult(step.path, key, "failed", error=error)
        if w.xxh3 is not None and head.meta_xxh3 == w.xxh3 and head.size == w.size:
            return written_result(step, key, head.version_id)
        return FileResult(step.path, key, "failed", head.version_id, head.size, error=error)

    async def _delete(self, prefix: str, removal: Removal) -> FileResult:
        try:
            await self._retry(lambda: self._store.delete(prefix + removal.path))
        except DagmirrorError as exc:
            return kept_result(removal, prefix, str(exc), action="failed")
        return deleted_result(removal, prefix)

    async def _retry(self, call: Callable[[], Awaitable[T]]) -> T:
        return await retrying(call, self._policy, sleep=self._sleep)
