"""Small frozen records that flow through the pipeline: list, plan, fetch, verify, install, record."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

# How far a body read by its listed size may outgrow it before the read is abandoned: room for an object
# rewritten between the LIST and the GET, while a server sending a huge body for a small key costs at most
# this much memory. The mirror's fetcher and every deploy read allow the same.
BODY_ROOM = 1 << 20


@dataclass(frozen=True, slots=True)
class RemoteObject:
    """One listed object. `etag` is stored without quotes."""

    key: str
    etag: str
    size: int


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One current object with its size and when it was written (epoch seconds): what `gc` decides on."""

    key: str
    size: int
    modified: float


@dataclass(frozen=True, slots=True)
class ListPage:
    objects: tuple[RemoteObject, ...]
    prefixes: tuple[str, ...]
    next_token: str | None


@dataclass(frozen=True, slots=True)
class FetchedObject:
    """A whole body plus everything the server said that can verify it."""

    key: str
    body: bytes
    etag: str
    content_length: int
    checksums: tuple[tuple[str, str], ...] = ()  # (algorithm, base64 value) pairs, e.g. ("SHA256", "...")
    meta_xxh3: str | None = None
    kms_or_customer_key: bool = False  # SSE-KMS / SSE-C: the ETag is not an MD5 of the body
    version_id: str | None = None


@dataclass(frozen=True, slots=True)
class NotModified:
    """A conditional GET answered 304: the server's current ETag is the one we sent."""

    etag: str


@dataclass(frozen=True, slots=True)
class LocalStat:
    """What lstat says of a path inside DEST; `kind` is file, dir, symlink or other."""

    kind: str
    size: int = 0
    mtime_ns: int = 0
    ino: int = 0

    def same_signature(self, entry: StateEntry) -> bool:
        return (
            self.kind == "file"
            and self.size == entry.local_size
            and self.mtime_ns == entry.mtime_ns
            and self.ino == entry.ino
        )


@dataclass(frozen=True, slots=True)
class LocalDigest:
    xxh3: str
    md5: str


@dataclass(frozen=True, slots=True)
class StateEntry:
    """A file dagmirror installed: the object's ETag, content hash, and the stat signature it left on disk."""

    etag: str
    size: int
    xxh3: str
    local_size: int
    mtime_ns: int
    ino: int


@dataclass(frozen=True, slots=True)
class Tombstone:
    path: str
    key: str
    etag: str
    deleted_at: float


@dataclass(frozen=True, slots=True)
class Installed:
    """One file a pass wrote (for audit records): why, and exactly which bytes. Its key is `prefix + path`
    (keys.key_to_path only strips the prefix): the shared prefix is kept, not a key string per record, which
    at 100,000 files of a cold pass is about 10 MB."""

    path: str
    prefix: str
    etag: str
    xxh3: str
    size: int
    reason: str  # new, changed, restore, replace

    @property
    def key(self) -> str:
        return self.prefix + self.path


@dataclass(frozen=True, slots=True)
class Rejection:
    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class Failure:
    key: str
    error: str


class Action(enum.Enum):
    KEEP = "keep"
    DOWNLOAD = "download"
    VERIFY_LOCAL = "verify-local"  # stat changed or unmanaged file present: hash it before deciding


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str
    if_none_match: str | None = None


@dataclass(frozen=True, slots=True)
class DeletePlan:
    """Paths to delete, or a refusal: `refused` is the delete guard's one-line reason."""

    paths: tuple[str, ...]
    refused: str | None = None


@dataclass(frozen=True)
class SyncReport:
    """What one pass did. In a dry run, downloaded/deleted count what *would* happen."""

    source: str
    dest: str
    dry_run: bool
    listed: int
    downloaded: int
    unchanged: int
    deleted: int
    rejected: int
    failed: int
    bytes: int
    seconds: float
    not_modified: int = 0
    restored: int = 0
    adopted: int = 0
    excluded: int = 0
    vanished: int = 0
    retries: int = 0
    guard: str | None = None
    rejections: tuple[Rejection, ...] = ()
    failures: tuple[Failure, ...] = ()
    tombstones: tuple[Tombstone, ...] = ()
    installed: tuple[Installed, ...] = ()  # not in to_dict(): a cold pass can install 100k files
    requests: dict[str, int] = field(default_factory=dict)
    mode: str = "objects"  # how this pass learned what changed: "objects" (listing) or "releases"
    release: str | None = None  # the release installed in DEST after the pass (releases mode)
    release_seq: int | None = None
    generation: str | None = None  # --switch symlink: the generation DEST names after the pass
    generations_removed: tuple[str, ...] = ()  # --switch symlink: older generations removed by the pass
    untrusted: str | None = None  # a release trust refused (signed releases): DEST stayed as it was

    @property
    def changed(self) -> bool:
        return bool(self.downloaded or self.deleted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "dest": self.dest,
            "dry_run": self.dry_run,
            "listed": self.listed,
            "downloaded": self.downloaded,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "rejected": self.rejected,
            "failed": self.failed,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 4),
            "not_modified": self.not_modified,
            "restored": self.restored,
            "adopted": self.adopted,
            "excluded": self.excluded,
            "vanished": self.vanished,
            "retries": self.retries,
            "guard": self.guard,
            "rejections": [{"key": r.key, "reason": r.reason} for r in self.rejections],
            "failures": [{"key": f.key, "error": f.error} for f in self.failures],
            "tombstones": [
                {"path": t.path, "key": t.key, "etag": t.etag, "deleted_at": t.deleted_at}
                for t in self.tombstones
            ],
            "requests": dict(self.requests),
            "mode": self.mode,
            "release": self.release,
            "release_seq": self.release_seq,
            "generation": self.generation,
            "generations_removed": list(self.generations_removed),
            "untrusted": self.untrusted,
        }
