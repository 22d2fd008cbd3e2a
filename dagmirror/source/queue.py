"""An event queue (SQS): the `EventQueue` Protocol, and `MemoryQueue`, its in-memory fake with SQS's
delivery rules (a received message is invisible for its visibility timeout, then delivered again unless
deleted; deleting needs the latest receipt handle). The transport over aioboto3 is `sqs.py`; this module
names no transport, so the daemon and the tests import it without the SDK."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dagmirror.errors import SourceUnavailable


@dataclass(frozen=True, slots=True)
class QueueMessage:
    message_id: str  # the same on every delivery of one message
    receipt: str  # this delivery's handle: what delete needs
    body: str


class EventQueue(Protocol):
    """One queue. Implementations raise only dagmirror.errors.SourceError subclasses."""

    async def receive(self, *, max_messages: int, wait: float, visibility: float) -> list[QueueMessage]:
        """Up to `max_messages` (1-10), waiting up to `wait` seconds for the first (long polling); each is
        hidden from other receives for `visibility` seconds unless deleted."""
        ...

    async def delete(self, receipts: Sequence[str]) -> None:
        """Delete the messages of these receipt handles (at most 10). A handle already deleted is not an
        error."""
        ...

    def request_counts(self) -> dict[str, int]:
        """Calls made so far, e.g. {'ReceiveMessage': 3, 'DeleteMessageBatch': 1}."""
        ...

    async def aclose(self) -> None: ...


@dataclass
class _Stored:
    message_id: str
    body: str
    visible_at: float = 0.0
    receipt: str | None = None
    deliveries: int = 0


@dataclass
class MemoryQueue:
    """SQS in memory. `fail_receives`/`fail_deletes` make the next calls fail (transient), as an outage."""

    clock: Callable[[], float] = time.monotonic
    fail_receives: int = 0
    fail_deletes: int = 0
    _messages: dict[str, _Stored] = field(default_factory=dict)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _counts: dict[str, int] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def send(self, body: str, *, message_id: str | None = None) -> str:
        """Enqueue a message (`message_id` given: a duplicate delivery of an earlier one)."""
        message_id = message_id or str(uuid.uuid4())
        self._messages[f"{message_id}#{next(self._ids)}"] = _Stored(message_id, body)
        self._arrived.set()
        return message_id

    def bodies(self) -> list[str]:
        """Every message not deleted yet, visible or not."""
        return [m.body for m in self._messages.values()]

    async def receive(self, *, max_messages: int, wait: float, visibility: float) -> list[QueueMessage]:
        self._count("ReceiveMessage")
        if self.fail_receives:
            self.fail_receives -= 1
            raise SourceUnavailable("ReceiveMessage: injected outage")
        deadline = self.clock() + wait
        while True:
            got = self._take(max_messages, visibility)
            if got or self.clock() >= deadline:
                return got
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=min(0.05, max(0.0, wait)))

    def _take(self, max_messages: int, visibility: float) -> list[QueueMessage]:
        now = self.clock()
        got: list[QueueMessage] = []
        for stored in self._messages.values():
            if len(got) == max_messages:
                break
            if stored.visible_at <= now:
                stored.visible_at = now + visibility
                stored.deliveries += 1
                stored.receipt = f"{stored.message_id}/{stored.deliveries}/{uuid.uuid4().hex[:8]}"
                got.append(QueueMessage(stored.message_id, stored.receipt, stored.body))
        return got

    async def delete(self, receipts: Sequence[str]) -> None:
        self._count("DeleteMessageBatch")
        if self.fail_deletes:
            self.fail_deletes -= 1
            raise SourceUnavailable("DeleteMessageBatch: injected outage")
        wanted = set(receipts)
        for name, stored in list(self._messages.items()):
            if stored.receipt in wanted:
                del self._messages[name]

    def request_counts(self) -> dict[str, int]:
        return dict(self._counts)

    async def aclose(self) -> None:
        return None

    def _count(self, op: str) -> None:
        self._counts[op] = self._counts.get(op, 0) + 1
