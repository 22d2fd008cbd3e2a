"""The local manifest DEST/.dagmirror/state.json (orjson): what dagmirror installed, and its tombstones.

It is what makes a second pass free (ETag + stat signature, no request) and what limits deletes to files
dagmirror itself installed. Written atomically (temp, fsync, rename) at the end of each pass and every
`checkpoint_interval` during long ones.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from dagmirror.dirfd import read_regular
from dagmirror.errors import InstallError
from dagmirror.models import StateEntry, Tombstone

log = logging.getLogger("dagmirror")

STATE_FILE = "state.json"
VERSION = 1
MAX_STATE_BYTES = 1 << 30  # about five million entries; a larger file is not one dagmirror wrote
MAX_TOMBSTONES = 1000
# A path the intent journal names but the state does not: managed, content unknown (a kill -9 window).
UNKNOWN = StateEntry(etag="", size=-1, xxh3="", local_size=-1, mtime_ns=-1, ino=-1)


@dataclass(frozen=True, slots=True)
class InstalledRelease:
    """The release DEST holds (releases mode). `pointer_etag` is set only after a pass installed the release
    completely, so a 304 on the pointer may skip the manifest; None makes the next pass look again."""

    release: str
    seq: int
    pointer_etag: str | None
    expires: float | None = None  # a signed pointer's expiry: set only when trust verified the release


@dataclass
class State:
    source: str
    entries: dict[str, StateEntry] = field(default_factory=dict)
    tombstones: list[Tombstone] = field(default_factory=list)
    # In releases mode, entries carry etag 'sha256:<hex>' (RELEASE_ETAG) and xxh3 of the body.
    release: InstalledRelease | None = None
    rotations: list[dict[str, Any]] = field(default_factory=list)  # key rotations trust.py has accepted

    def bury(self, tombstones: list[Tombstone]) -> None:
        self.tombstones.extend(tombstones)
        del self.tombstones[:-MAX_TOMBSTONES]

    def dump(self) -> bytes:
        return orjson.dumps(
            {
                "version": VERSION,
                "source": self.source,
                # Arrays, not objects, per entry: a 100k-file state loads and saves in tens of milliseconds.
                "entries": {
                    p: [e.etag, e.size, e.xxh3, e.local_size, e.mtime_ns, e.ino]
                    for p, e in self.entries.items()
                },
                "tombstones": self.tombstones,
                "release": self.release,
                "rotations": self.rotations,
            }
        )


def load_state(meta_fd: int | None, meta_dir: Path, source: str) -> State:
    """Read the manifest through the held fd of DEST/.dagmirror (None: there is none yet); a missing one is
    an empty state, an unreadable one is set aside, never fatal. A planted link is not followed, a FIFO or
    device is refused without blocking, and no more than MAX_STATE_BYTES is read."""
    path = meta_dir / STATE_FILE
    if meta_fd is None:
        return State(source)
    try:
        return _parse(orjson.loads(read_regular(STATE_FILE, meta_fd, MAX_STATE_BYTES)), source)
    except FileNotFoundError:
        return State(source)
    except OSError as exc:
        if exc.errno != errno.ELOOP:  # EIO, EMFILE, EACCES, not a file...: the state may be fine; keep it
            raise InstallError(f"cannot read the state file {path}: {exc.strerror or exc}") from None
        return _set_aside(meta_fd, path, source, exc)  # a planted symlink: not ours, not followed
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return _set_aside(meta_fd, path, source, exc)


def _set_aside(meta_fd: int, path: Path, source: str, exc: Exception) -> State:
    aside = path.with_suffix(".corrupt")
    try:
        os.replace(path.name, aside.name, src_dir_fd=meta_fd, dst_dir_fd=meta_fd)
    except OSError as err:
        raise InstallError(
            f"cannot set the unreadable state file {path} aside: {err.strerror or err}"
        ) from None
    log.warning("state file %s is unreadable (%s); moved to %s and starting afresh", path, exc, aside.name)
    return State(source)


def _parse(doc: Any, source: str) -> State:
    if doc.get("version") != VERSION:
        raise ValueError(f"unsupported state version {doc.get('version')!r}")
    entries = {
        str(p): StateEntry(str(e[0]), int(e[1]), str(e[2]), *map(int, e[3:6]))
        for p, e in doc["entries"].items()
    }
    tombstones = [Tombstone(**t) for t in doc.get("tombstones", [])]
    release = doc.get("release")
    installed = None if release is None else InstalledRelease(**release)
    return State(source, entries, tombstones, installed, list(doc.get("rotations", [])))


def adopt_journal(state: State, journal: list[str]) -> int:
    """Paths a killed pass renamed into place without recording become managed with unknown content."""
    added = 0
    for path in journal:
        if path not in state.entries:
            state.entries[path] = UNKNOWN
            added += 1
    return added
