"""A minimal publisher for tests: writes a release straight into a bucket with boto3 (bodies, manifest, an
optional archive, the pointer last) using the format of dagmirror/manifest.py. It does what a deploy does in
the order it does it, and nothing more (no compare-and-swap), so mirror tests need not wait for deploys."""

from __future__ import annotations

import io
import tarfile
import time
from typing import Any

import zstandard

from dagmirror.manifest import (
    FileEntry,
    Manifest,
    Pointer,
    archive_key,
    body_key,
    manifest_key,
    pointer_key,
    sha256_hex,
)


def archive_bytes(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, body in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return zstandard.ZstdCompressor().compress(raw.getvalue())


def publish(
    s3: Any,
    bucket: str,
    prefix: str,
    files: dict[str, bytes],
    *,
    seq: int = 1,
    archive: bool = True,
    bodies: bool = True,
) -> str:
    """Publish `files` (relative path -> body) as the release of `prefix`; its release id."""
    if bodies:
        for body in set(files.values()):
            s3.put_object(Bucket=bucket, Key=body_key(sha256_hex(body)), Body=body)
    entries = {p: FileEntry(sha256_hex(b), len(b)) for p, b in files.items()}
    doc = Manifest(prefix=prefix, files=entries, created=time.time(), seq=seq).encode()
    release = sha256_hex(doc)
    s3.put_object(Bucket=bucket, Key=manifest_key(release), Body=doc)
    archive_size = None
    if archive:
        data = archive_bytes(files)
        s3.put_object(Bucket=bucket, Key=archive_key(release), Body=data)
        archive_size = len(data)
    pointer = Pointer(
        prefix=prefix,
        release=release,
        seq=seq,
        time=time.time(),
        files=len(files),
        size=sum(map(len, files.values())),
        archive_size=archive_size,
    )
    s3.put_object(Bucket=bucket, Key=pointer_key(prefix), Body=pointer.encode())
    return release
