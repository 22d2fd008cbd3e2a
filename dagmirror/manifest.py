"""The release format: where releases live in a bucket, the manifest and the pointer, and their parsing.
Pure: bytes in, frozen records out, every field checked (a release is whatever someone with write access to
the bucket put there). docs/releases.md is the spec this module implements.

Layout, for a mirror given s3://B/<prefix> (e.g. `dags/production/`):

    metadata/releases/bodies/sha256/<h[:2]>/<h>          every file body once, by its SHA-256 (all envs share)
    metadata/releases/manifests/<release id>.json        immutable; the release id is the SHA-256 of its bytes
    metadata/releases/archives/<release id>.tar.zst      the whole release in one object (cold starts)
    metadata/releases/pointers/<prefix>pointer.json      the environment's current release, written last (CAS)

An archive is a POSIX tar (pax) of the release's files at their relative paths, regular files only, compressed
with zstd; a reader checks every member against the manifest's SHA-256 and ignores anything else.

Both documents carry a `format` with a version, a monotonic `seq` and a `signatures` list (empty for an
unsigned release); a signed pointer adds `expires`, `manifest_size` and `rotations`. What a signature covers
and how a mirror decides is trust.py's.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from dagmirror.errors import ReleaseError
from dagmirror.keys import key_to_path
from dagmirror.models import Rejection
from dagmirror.trust import payload_of

ROOT = "metadata/releases/"
POINTERS = f"{ROOT}pointers/"  # <POINTERS><env prefix>pointer.json, one per environment
MANIFEST_FORMAT = "dagmirror.manifest/1"
POINTER_FORMAT = "dagmirror.pointer/1"
MAX_MANIFEST_BYTES = 256 << 20  # 1M files of long paths fit; a hostile pointer cannot make us read more
MAX_POINTER_BYTES = 64 << 10
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def body_key(digest: str) -> str:
    return f"{ROOT}bodies/sha256/{digest[:2]}/{digest}"


def manifest_key(release_id: str) -> str:
    return f"{ROOT}manifests/{release_id}.json"


def archive_key(release_id: str) -> str:
    return f"{ROOT}archives/{release_id}.tar.zst"


# Written with If-None-Match: * at the start of every publish: a server that accepts the second write of it
# ignores conditional writes, and the pointer's compare-and-swap would be a lie there (docs/releases.md).
PROBE_KEY = f"{ROOT}conditional-write-probe"


def pointer_key(prefix: str) -> str:
    """The pointer of the environment a mirror of s3://B/<prefix> follows (prefix '' or ending in '/')."""
    return f"{POINTERS}{prefix}pointer.json"


@dataclass(frozen=True, slots=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """One immutable release: every relative path of the environment and the body it holds."""

    prefix: str  # the environment's prefix, e.g. 'dags/production/'
    files: Mapping[str, FileEntry]
    created: float
    seq: int = 0  # the pointer seq this release was first published with
    parent: str | None = None  # the release it replaced, when there was one
    who: Mapping[str, Any] = field(default_factory=dict)
    host: str = ""
    git: Mapping[str, Any] | None = None
    signatures: tuple[Mapping[str, Any], ...] = ()

    def encode(self) -> bytes:
        """Canonical bytes (sorted keys, no whitespace): the release id is their SHA-256."""
        doc = {
            "format": MANIFEST_FORMAT,
            "prefix": self.prefix,
            "created": round(self.created, 3),
            "seq": self.seq,
            "parent": self.parent,
            "who": dict(self.who),
            "host": self.host,
            "git": dict(self.git) if self.git is not None else None,
            "files": {p: {"sha256": e.sha256, "size": e.size} for p, e in sorted(self.files.items())},
            "signatures": [dict(s) for s in self.signatures],
        }
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.files.values())


@dataclass(frozen=True)
class Pointer:
    """An environment's current release. `seq` grows by one with every publish (deploy, rollback, promote)."""

    prefix: str
    release: str  # the release id: SHA-256 of the manifest's bytes
    seq: int
    time: float
    files: int
    size: int  # bytes of all files together
    archive_size: int | None = None  # None: no archive was written for this release
    signatures: tuple[Mapping[str, Any], ...] = ()
    # Signed releases (docs/releases.md): when the pointer stops being trusted, the manifest's exact length
    # (a reader fetches no more), and key rotation statements the fleet learns new keys from.
    expires: float | None = None
    manifest_size: int | None = None
    rotations: tuple[Mapping[str, Any], ...] = ()

    def encode(self) -> bytes:
        doc = {
            "format": POINTER_FORMAT,
            "prefix": self.prefix,
            "release": self.release,
            "seq": self.seq,
            "time": round(self.time, 3),
            "files": self.files,
            "size": self.size,
            "archive_size": self.archive_size,
            "signatures": [dict(s) for s in self.signatures],
            "expires": None if self.expires is None else round(self.expires, 3),
            "manifest_size": self.manifest_size,
            "rotations": [dict(r) for r in self.rotations],
        }
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True)
class CheckedManifest:
    """A parsed manifest, split into the paths a mirror may install and the ones it must refuse."""

    manifest: Manifest
    release_id: str
    rejections: tuple[Rejection, ...]
    payload: bytes = b""  # what its signatures cover (trust.payload_of); b"" when it has none


def parse_pointer(body: bytes, *, prefix: str) -> Pointer:
    """The pointer for `prefix`; ReleaseError with one line when it is anything else."""
    doc = _document(body, MAX_POINTER_BYTES, POINTER_FORMAT, "pointer")
    try:
        pointer = Pointer(
            prefix=_str(doc["prefix"]),
            release=_digest(doc["release"]),
            seq=_count(doc["seq"]),
            time=_number(doc["time"]),
            files=_count(doc["files"]),
            size=_count(doc["size"]),
            archive_size=None if doc.get("archive_size") is None else _count(doc["archive_size"]),
            signatures=_signatures(doc.get("signatures", [])),
            expires=None if doc.get("expires") is None else _number(doc["expires"]),
            manifest_size=None if doc.get("manifest_size") is None else _count(doc["manifest_size"]),
            rotations=_signatures(doc.get("rotations", [])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ReleaseError(f"pointer is malformed: {_why(exc)}") from None
    if pointer.prefix != prefix:
        raise ReleaseError(f"pointer names prefix {pointer.prefix!r}, expected {prefix!r}")
    return pointer


def parse_manifest(body: bytes, *, release_id: str, prefix: str) -> CheckedManifest:
    """Check that `body` is the release `release_id` (its SHA-256) of `prefix`, and every path in it.

    Paths are as untrusted as keys: each goes through the same rules (`keys.key_to_path`); a path that breaks
    one is returned as a Rejection, never installed."""
    if len(body) > MAX_MANIFEST_BYTES:
        raise ReleaseError(f"manifest {release_id} is larger than {MAX_MANIFEST_BYTES} bytes")
    actual = sha256_hex(body)
    if actual != release_id:
        raise ReleaseError(f"manifest {release_id} has SHA-256 {actual}: not the release the pointer names")
    doc = _document(body, MAX_MANIFEST_BYTES, MANIFEST_FORMAT, "manifest")
    try:
        manifest, rejections = _manifest(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise ReleaseError(f"manifest {release_id} is malformed: {_why(exc)}") from None
    if manifest.prefix != prefix:
        raise ReleaseError(f"manifest {release_id} is for prefix {manifest.prefix!r}, expected {prefix!r}")
    payload = payload_of(doc) if manifest.signatures else b""
    return CheckedManifest(manifest, release_id, tuple(rejections), payload)


def pointer_payload(body: bytes) -> bytes:
    """What a pointer's signatures cover (parse_pointer has checked `body`): for a pointer this module
    encoded, exactly `encode()` before it was signed."""
    return payload_of(orjson.loads(body))


def _manifest(doc: Mapping[str, Any]) -> tuple[Manifest, list[Rejection]]:
    prefix = _str(doc["prefix"])
    files: dict[str, FileEntry] = {}
    rejections: list[Rejection] = []
    for path, entry in _mapping(doc["files"]).items():
        mapped = key_to_path(prefix + path, prefix)
        if not isinstance(mapped, str) or mapped != path:
            reason = mapped.reason if isinstance(mapped, Rejection) else "not a file path"
            rejections.append(Rejection(prefix + path, reason))
            continue
        fields = _mapping(entry)
        files[path] = FileEntry(_digest(fields["sha256"]), _count(fields["size"]))
    git = doc.get("git")
    manifest = Manifest(
        prefix=prefix,
        files=files,
        created=_number(doc["created"]),
        seq=_count(doc.get("seq", 0)),
        parent=None if doc.get("parent") is None else _digest(doc["parent"]),
        who=_mapping(doc.get("who", {})),
        host=_str(doc.get("host", "")),
        git=None if git is None else _mapping(git),
        signatures=_signatures(doc.get("signatures", [])),
    )
    return manifest, rejections


def _document(body: bytes, limit: int, fmt: str, what: str) -> Mapping[str, Any]:
    if len(body) > limit:
        raise ReleaseError(f"{what} is larger than {limit} bytes")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ReleaseError(f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ReleaseError(f"{what} is not a JSON object")
    found = doc.get("format")
    if not isinstance(found, str) or found.rpartition("/")[0] != fmt.rpartition("/")[0]:
        raise ReleaseError(f"{what} has format {found!r}, expected {fmt!r}")
    if found != fmt:
        raise ReleaseError(f"{what} has format {found!r}: this dagmirror reads {fmt!r} (upgrade it)")
    return doc


def _mapping(value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _digest(value: object) -> str:
    if not isinstance(value, str) or not _SHA256.match(value):
        raise ValueError(f"expected a SHA-256 hex digest, got {value!r:.80}")
    return value


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number >= 0, got {value!r:.40}")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)


def _signatures(value: object) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list):
        raise TypeError("signatures must be a list")
    return tuple(_mapping(s) for s in value)


def _why(exc: BaseException) -> str:
    return f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
