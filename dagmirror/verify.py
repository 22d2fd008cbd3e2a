"""Check a downloaded body against everything the server said about it, before it may be installed. Pure."""

from __future__ import annotations

import base64
import hashlib
import re
import zlib

import xxhash

from dagmirror.errors import IntegrityError
from dagmirror.models import FetchedObject, RemoteObject

_PLAIN_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")


def is_md5_etag(etag: str) -> bool:
    """Single-part, non-KMS uploads have the body's MD5 as ETag; multipart ones end in '-N'."""
    return bool(_PLAIN_MD5_ETAG.match(etag))


def xxh3_hex(body: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(body)


def verify(obj: FetchedObject, listed: RemoteObject | None = None) -> str:
    """Return the body's xxh3-128 hex, or raise IntegrityError naming the first check that failed.

    `listed` is the object as the listing showed it: for the same ETag the size must match too, the one
    check left when the ETag is not an MD5 (multipart, SSE-KMS) and no checksum came with the body.
    """
    body = obj.body
    if len(body) != obj.content_length:
        raise IntegrityError(f"{obj.key}: got {len(body)} bytes, Content-Length said {obj.content_length}")
    if listed is not None and listed.etag == obj.etag and len(body) != listed.size:
        raise IntegrityError(f"{obj.key}: got {len(body)} bytes, the listing said {listed.size} (same ETag)")
    if not obj.kms_or_customer_key and is_md5_etag(obj.etag):
        md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
        if md5 != obj.etag:
            raise IntegrityError(f"{obj.key}: MD5 {md5} does not match ETag {obj.etag}")
    for algorithm, expected in obj.checksums:
        actual = _checksum(algorithm, body, expected)
        if actual is not None and actual != expected:
            raise IntegrityError(f"{obj.key}: {algorithm} checksum {actual} does not match {expected}")
    digest = xxh3_hex(body)
    if obj.meta_xxh3 is not None and obj.meta_xxh3.lower() != digest:
        raise IntegrityError(f"{obj.key}: xxh3 {digest} does not match x-amz-meta-xxh3 {obj.meta_xxh3}")
    return digest


def _checksum(algorithm: str, body: bytes, expected: str) -> str | None:
    """The base64 checksum S3 would report, or None when it cannot be checked here.

    Composite checksums of multipart uploads ('...-N') cover parts, not the body, so they are skipped;
    so are algorithms without a standard-library implementation (CRC32C, CRC64NVME).
    """
    if "-" in expected:
        return None
    if algorithm == "CRC32":
        raw = zlib.crc32(body).to_bytes(4, "big")
    elif algorithm in ("SHA1", "SHA256"):
        raw = hashlib.new(algorithm.lower(), body).digest()
    else:
        return None
    return base64.b64encode(raw).decode("ascii")
