"""What S3 answers look like, read the same way by both transports: ETags, bounded bodies, page tokens, and
a GetObject answer turned into a FetchedObject. Over plain values only: no SDK, no HTTP library."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from dagmirror.models import FetchedObject

CHECKSUM_ALGORITHMS = ("CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME")
_CHECKSUM_HEADERS = tuple((name, f"x-amz-checksum-{name.lower()}") for name in CHECKSUM_ALGORITHMS)
_OPAQUE_ETAG_SSE = frozenset({"aws:kms", "aws:kms:dsse"})
_CHUNK = 1 << 16
# S3 answers at most 1,000 entries (objects and common prefixes) a page, and dagmirror asks for exactly that
# (max-keys): a page with more is not S3's, and is refused before it costs memory.
MAX_KEYS_PER_PAGE = 1000
# 1,000 keys of 1,024 bytes, URL-encoded (x3), with their ETag, size, date and owner: about 3.5 MiB.
LIST_PAGE_BYTES = 8 << 20


class BodyTooLarge(Exception):
    """The server sent more bytes than the listing said the object has."""


class UntrustedXML(ValueError):
    """An S3 answer that cannot be taken at its word (a DTD, a LIST entry without a key, a lost token)."""


class PageTooLarge(Exception):
    """A LIST page with more entries than S3 ever sends: refused, never retried (docs/security.md)."""


def check_page_entries(count: int) -> None:
    if count > MAX_KEYS_PER_PAGE:
        raise PageTooLarge(f"LIST page with more than {MAX_KEYS_PER_PAGE} entries (S3 sends at most that)")


def strip_etag(etag: str) -> str:
    return etag.strip('"')


def next_token(truncated: bool, token: str | None) -> str | None:
    """The continuation token of a LIST page, None on the last page."""
    if truncated and not token:
        # Ending here would make a partial listing look complete, and its absent keys look deleted.
        raise UntrustedXML(
            "truncated page without a token: a listing cannot go on without a continuation token"
        )
    return token if truncated else None


async def read_bounded(
    read: Callable[[int], Awaitable[bytes]], declared: object, limit: int, what: str
) -> bytes:
    """A body read in chunks and abandoned past `limit` bytes, so a hostile server cannot make one small key
    cost unbounded memory; a larger Content-Length (`declared`) is refused before reading."""
    if isinstance(declared, int) and declared > limit:
        raise BodyTooLarge(f"Content-Length {declared} exceeds {what} {limit}")
    chunks: list[bytes] = []
    total = 0
    while chunk := await read(_CHUNK):
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(f"body exceeds {what} {limit}")
        chunks.append(chunk)
    return b"".join(chunks)


def fetched_object(key: str, body: bytes, headers: Mapping[str, str]) -> FetchedObject:
    """A GetObject answer from its HTTP headers, looked up by lower-case name: aiohttp's headers ignore case
    and the SDK hands its raw headers over lower-cased (ResponseMetadata.HTTPHeaders), so both transports
    read the very same fields."""
    sse = headers.get("x-amz-server-side-encryption")
    return FetchedObject(
        key=key,
        body=body,
        etag=strip_etag(headers.get("etag", "")),
        content_length=int(headers.get("content-length", len(body))),
        checksums=tuple(
            (name, value) for name, header in _CHECKSUM_HEADERS if (value := headers.get(header))
        ),
        meta_xxh3=headers.get("x-amz-meta-xxh3"),
        kms_or_customer_key=sse in _OPAQUE_ETAG_SSE
        or bool(headers.get("x-amz-server-side-encryption-customer-algorithm")),
        version_id=headers.get("x-amz-version-id"),
    )
