"""Where objects come from. `ObjectSource` is the seam: `s3.py` (the only module that imports the AWS SDK)
and `memory.py` (an in-memory fake with latency and failure injection, for unit tests) implement it."""

from __future__ import annotations

from typing import Protocol

from dagmirror.models import FetchedObject, ListPage, NotModified


class ObjectSource(Protocol):
    """One bucket. Implementations raise only dagmirror.errors.SourceError subclasses."""

    async def list_page(self, prefix: str, *, delimiter: bool, token: str | None) -> ListPage:
        """One ListObjectsV2 page under `prefix`, sorted by key; with `delimiter`, '/' groups sub-prefixes."""
        ...

    async def get(self, key: str, *, if_none_match: str | None) -> FetchedObject | NotModified:
        """The whole object; NotModified when `if_none_match` (an unquoted ETag) still matches."""
        ...

    def request_counts(self) -> dict[str, int]:
        """Requests made so far by operation and outcome, e.g. {'LIST': 3, 'GET 200': 10, 'GET 304': 1}."""
        ...

    async def aclose(self) -> None: ...


class ObjectSink(Protocol):
    """Somewhere to write objects (audit batches now, deploys later)."""

    async def put(self, key: str, body: bytes, *, metadata: dict[str, str] | None = None) -> str | None:
        """Store `body` at `key`; return the new version id when the bucket is versioned."""
        ...

    async def aclose(self) -> None: ...
