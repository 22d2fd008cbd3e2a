"""What every stage of one pass shares: the config, the source, DEST, the state being updated, the Tally,
and the pass's I/O helpers (threads for disk work, retries for requests). Stages get this context, never a
back-reference into Mirror."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dagmirror.config import MirrorConfig
from dagmirror.engine.tally import Tally
from dagmirror.errors import DagmirrorError
from dagmirror.install import Tree
from dagmirror.models import Failure, Rejection, StateEntry
from dagmirror.retry import Sleep, retrying
from dagmirror.source import ObjectSource
from dagmirror.state import State

log = logging.getLogger("dagmirror")
T = TypeVar("T")


@dataclass(slots=True)
class Ledger:
    """The pass's view of state.json: entries recorded as the pass goes, and whether they need saving."""

    state: State
    dirty: bool = False

    @property
    def entries(self) -> dict[str, StateEntry]:
        return self.state.entries

    def record(self, path: str, entry: StateEntry) -> None:
        self.state.entries[path] = entry
        self.dirty = True

    def forget(self, path: str) -> None:
        del self.state.entries[path]
        self.dirty = True


@dataclass(frozen=True, slots=True)
class PassContext:
    config: MirrorConfig
    source: ObjectSource
    tree: Tree
    ledger: Ledger
    executor: Executor
    sleep: Sleep
    clock: Callable[[], float]
    note_rejection: Callable[[Rejection], None]  # the Mirror logs each rejected key once per process
    tally: Tally = field(default_factory=Tally)

    @property
    def prefix(self) -> str:
        return self.config.source.prefix

    async def io(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking disk work (installs, stats, hashes, state writes) in the mirror's thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def retry(self, call: Callable[[], Awaitable[T]]) -> T:
        def count(exc: DagmirrorError) -> None:
            self.tally.retries += 1
            log.debug("retrying after: %s", exc)

        return await retrying(call, self.config.retry, sleep=self.sleep, on_retry=count)

    def reject(self, rejection: Rejection) -> None:
        self.tally.rejections.append(rejection)
        self.note_rejection(rejection)

    def fail(self, key: str, error: str) -> None:
        self.tally.failures.append(Failure(key, error))
        log.error("failed %s: %s", key, error)
