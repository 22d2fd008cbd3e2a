"""Where objects come from and go to. `ObjectSource` and `ObjectSink`/`DeployStore` are the seams, and
`connect.open_source` picks the transport that serves a mirror:

- `lean.py`: ObjectSource over plain aiohttp, signed by `sigv4.py` (the default transport);
- `sdk.py`: ObjectSource over aioboto3; `store.py`: the write side (ObjectSink + DeployStore) over aioboto3;
- `credentials.py`: the SDK's credential chain, region and sessions; `_translate.py`: one error translation,
  request counts and deadlines for every transport; `_wire.py`: S3 answers read the same way by both;
- `memory.py`: in-memory fakes with latency and failure injection, for unit tests.

Only sdk.py, store.py and credentials.py import the AWS SDK (import-linter contracts in pyproject.toml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from dagmirror.models import FetchedObject, ListPage, NotModified, StoredObject


class ObjectSource(Protocol):
    """One bucket. Implementations raise only dagmirror.errors.SourceError subclasses."""

    async def list_page(
        self, prefix: str, *, delimiter: bool, token: str | None, start_after: str | None = None
    ) -> ListPage:
        """One ListObjectsV2 page under `prefix`, sorted by key; with `delimiter`, '/' groups sub-prefixes.
        `start_after`: only keys after it (S3's StartAfter; ignored with a `token`, as S3 ignores it)."""
        ...

    async def get(
        self, key: str, *, if_none_match: str | None, max_bytes: int | None = None
    ) -> FetchedObject | NotModified:
        """The whole object; NotModified when `if_none_match` (an unquoted ETag) still matches. A body longer
        than `max_bytes` (None: no limit) fails the GET with a fatal SourceError (code 'BodyTooLarge') as
        soon as it shows, so a server sending a huge body for a small key cannot fill memory."""
        ...

    def request_counts(self) -> dict[str, int]:
        """Requests made so far by operation and outcome, e.g. {'LIST': 3, 'GET 200': 10, 'GET 304': 1}."""
        ...

    async def aclose(self) -> None: ...


class ObjectSink(Protocol):
    """Somewhere to write objects: audit batches, deploy records."""

    async def put(self, key: str, body: bytes, *, metadata: dict[str, str] | None = None) -> str | None:
        """Store `body` at `key`; return the new version id when the bucket is versioned."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class LiveObject:
    """The current version of a key. `version_id` is None in a bucket that never had versioning."""

    key: str
    version_id: str | None
    etag: str  # without quotes
    size: int


@dataclass(frozen=True, slots=True)
class ObjectHead:
    """What HEAD says about one version: enough to compare contents without downloading them."""

    key: str
    version_id: str | None
    etag: str
    size: int
    meta_xxh3: str | None


@dataclass(frozen=True, slots=True)
class Copied:
    """The version a server-side copy created."""

    version_id: str | None
    etag: str


class DeployStore(ObjectSink, Protocol):
    """The bucket `dagmirror deploy` writes to: versioned listings and reads, server-side copies, deletes.
    Implementations raise only dagmirror.errors.SourceError subclasses."""

    async def put(
        self,
        key: str,
        body: bytes,
        *,
        metadata: dict[str, str] | None = None,
        if_match: str | None = None,
        if_none_match: str | None = None,
    ) -> str | None:
        """Store `body` at `key` (the new version id when versioned). A conditional write with `if_match`
        (an unquoted ETag: replace only that version) or `if_none_match='*'` (create only) raises
        PreconditionFailed when the condition does not hold; a server that ignores the headers writes."""
        ...

    async def list_live(self, prefix: str) -> tuple[LiveObject, ...]:
        """The current version of every key under `prefix` (deleted keys left out), sorted by key."""
        ...

    async def list_stamped(self, prefix: str) -> tuple[StoredObject, ...]:
        """Every current object under `prefix` with its size and LastModified (ListObjectsV2), sorted."""
        ...

    async def get_version(
        self, key: str, version_id: str | None, *, max_bytes: int | None = None
    ) -> FetchedObject:
        """One version of an object, whole (the current one when `version_id` is None); a body over
        `max_bytes` is abandoned (SourceError, code BodyTooLarge), never read whole."""
        ...

    async def head(self, key: str, version_id: str | None = None) -> ObjectHead | None:
        """Metadata of one version (the current one when `version_id` is None); None if it does not exist."""
        ...

    async def copy(self, source_key: str, version_id: str | None, key: str) -> Copied:
        """Server-side copy of one version (metadata included) to `key`, which it makes current."""
        ...

    async def delete(self, key: str) -> str | None:
        """Delete `key`; in a versioned bucket, return the id of the delete marker (older versions stay)."""
        ...

    async def versioning(self) -> str:
        """The bucket's versioning status: 'Enabled', 'Suspended', or '' when it was never enabled."""
        ...

    async def caller_identity(self) -> str | None:
        """Who the credentials belong to (an ARN), or None when that cannot be found out. Never raises."""
        ...
