"""Release archives (manifest.py: a POSIX tar of the release's files, zstd-compressed): the publisher writes
them, a mirror reads them in memory.

An archive is as untrusted as any object: only regular members whose path the caller wants, whose size is
the manifest's and whose SHA-256 matches are returned; links, devices, other names and extra bytes are
ignored, and decompression stops at `limit` bytes, so a hostile archive cannot fill memory or disk.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator, Mapping

import zstandard

from dagmirror.errors import ReleaseError
from dagmirror.manifest import FileEntry

ARCHIVE_LEVEL = 3  # zstd's default: fast to write, and DAG files compress well at it


def write_archive(bodies: Mapping[str, bytes]) -> bytes:
    """The release archive: a pax tar of `bodies` (relative path -> content) in path order, regular files
    only, mode 0644 and mtime 0 (the same files always give the same tar), compressed with zstd."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(bodies):
            body = bodies[path]
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(body), 0o644, 0
            tar.addfile(info, io.BytesIO(body))
    return zstandard.ZstdCompressor(level=ARCHIVE_LEVEL).compress(raw.getvalue())


def read_archive(data: bytes, wanted: Mapping[str, FileEntry], limit: int) -> dict[str, bytes]:
    """Bodies by SHA-256 for the members of `wanted` (path -> entry) found intact in the archive `data`.

    Raises ReleaseError when the archive cannot be read at all; a member missing or damaged is simply not in
    the result (the caller fetches those bodies one by one)."""
    found: dict[str, bytes] = {}
    for batch in iter_archive(data, wanted, limit):
        found |= batch
    return found


def iter_archive(
    data: bytes, wanted: Mapping[str, FileEntry], limit: int, batch: int = 256
) -> Iterator[dict[str, bytes]]:
    """`read_archive`'s bodies as they are decompressed, `batch` at a time, so a caller can store them
    while the rest is read. ReleaseError as soon as the archive shows it cannot be read further."""
    found: dict[str, bytes] = {}
    todo = {e.sha256 for e in wanted.values()}
    seen = 0
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                seen += member.size
                if seen > limit:
                    raise ReleaseError(f"archive holds more than the release's {limit} bytes")
                entry = wanted.get(member.name.removeprefix("./"))
                if (
                    entry is None
                    or not member.isreg()
                    or member.size != entry.size
                    or entry.sha256 not in todo
                ):
                    continue
                extracted = tar.extractfile(member)
                body = extracted.read() if extracted is not None else b""
                if hashlib.sha256(body).hexdigest() == entry.sha256:
                    found[entry.sha256] = body
                    todo.discard(entry.sha256)
                    if len(found) >= batch:
                        yield found
                        found = {}
                    if not todo:
                        break
    except (tarfile.TarError, zstandard.ZstdError, EOFError, OSError) as exc:
        raise ReleaseError(f"archive is damaged: {type(exc).__name__}: {exc}") from None
    if found:
        yield found
