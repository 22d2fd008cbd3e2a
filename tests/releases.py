"""A minimal publisher for tests: writes a release straight into a bucket with boto3 (bodies, manifest, an
optional archive, the pointer last) using the format of dagmirror/manifest.py. It does what a deploy does in
the order it does it, and nothing more (no compare-and-swap), so mirror tests need not wait for deploys."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable
from dataclasses import replace
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
from dagmirror.trust import KeySigner


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
    signer: KeySigner | None = None,
) -> str:
    """Publish `files` (relative path -> body) as the release of `prefix` into a bucket; its release id.
    `signer`: sign the manifest and the pointer as a signing deploy does (expiring in an hour)."""

    def put(key: str, body: bytes) -> None:
        s3.put_object(Bucket=bucket, Key=key, Body=body)

    return publish_to(put, prefix, files, seq=seq, archive=archive, bodies=bodies, signer=signer)


def publish_to(
    put: Callable[[str, bytes], None],
    prefix: str,
    files: dict[str, bytes],
    *,
    seq: int = 1,
    archive: bool = True,
    bodies: bool = True,
    signer: KeySigner | None = None,
    rotations: tuple[dict[str, Any], ...] = (),
) -> str:
    """The same through any `put(key, body)` (a MemorySource's, for tests without a server)."""
    if bodies:
        for body in set(files.values()):
            put(body_key(sha256_hex(body)), body)
    entries = {p: FileEntry(sha256_hex(b), len(b)) for p, b in files.items()}
    manifest = Manifest(prefix=prefix, files=entries, created=time.time(), seq=seq)
    if signer is not None:
        manifest = replace(manifest, signatures=(signer.sign_now(manifest.encode()),))
    doc = manifest.encode()
    release = sha256_hex(doc)
    put(manifest_key(release), doc)
    archive_size = None
    if archive:
        data = archive_bytes(files)
        put(archive_key(release), data)
        archive_size = len(data)
    pointer = Pointer(
        prefix=prefix,
        release=release,
        seq=seq,
        time=time.time(),
        files=len(files),
        size=sum(map(len, files.values())),
        archive_size=archive_size,
        manifest_size=len(doc),
    )
    if signer is not None:
        pointer = replace(pointer, expires=time.time() + 3600, rotations=rotations)
        pointer = replace(pointer, signatures=(signer.sign_now(pointer.encode()),))
    put(pointer_key(prefix), pointer.encode())
    return release
