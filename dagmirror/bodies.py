"""The local content store DEST/.dagmirror/bodies/<sha256>: every body of the installed release (and of the
one before it), so a file renamed, copied, reverted or damaged by hand is restored without a request.

Entries are written without fsync and checked against their SHA-256 on every read: a torn or altered entry
is removed and reads as missing (the body is fetched again), never installed. Blocking calls, run in threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from dagmirror.dirfd import DIR_FLAGS, write_temp
from dagmirror.errors import InstallError

BODIES = "bodies"
_TEMP = ".part"


class ContentStore:
    def __init__(self, meta: Path) -> None:
        self.path = meta / BODIES
        self._meta = meta
        self._fd: int | None = None

    def open(self) -> None:
        """Create the folder (never through a symlink) and remove temps a killed pass left."""
        if self._fd is not None:
            return
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.path, 0o755)
            self._fd = os.open(self.path, DIR_FLAGS)
        except OSError as exc:
            raise InstallError(f"cannot open the content store {self.path}: {exc.strerror or exc}") from None
        for name in os.listdir(self._fd):
            if name.endswith(_TEMP):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def present(self, digests: Iterable[str]) -> set[str]:
        """Which of `digests` have an entry (unverified: `read` checks the bytes)."""
        fd = self._require()
        found = set()
        for digest in digests:
            with contextlib.suppress(OSError):
                os.stat(digest, dir_fd=fd, follow_symlinks=False)
                found.add(digest)
        return found

    def read(self, digest: str) -> bytes | None:
        """The body whose SHA-256 is `digest`, or None when absent or damaged (a damaged entry is removed)."""
        fd = self._require()
        try:
            body_fd = os.open(digest, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError:
            return None
        try:
            with os.fdopen(body_fd, "rb") as fh:
                body = fh.read()
        except OSError:
            return None
        if hashlib.sha256(body).hexdigest() != digest:
            with contextlib.suppress(OSError):
                os.unlink(digest, dir_fd=fd)
            return None
        return body

    def write(self, digest: str, body: bytes) -> None:
        """Add a verified body (temp + rename: a reader sees a whole entry or none)."""
        fd = self._require()
        temp = f"{digest}.{secrets.token_hex(4)}{_TEMP}"
        try:
            write_temp(fd, temp, body, fsync=False, meta=self._meta, root=self._meta.parent)
            os.replace(temp, digest, src_dir_fd=fd, dst_dir_fd=fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=fd)
            raise InstallError(f"cannot write to the content store: {exc.strerror or exc}") from None

    def prune(self, keep: set[str]) -> int:
        """Remove every entry not in `keep`; the number removed."""
        fd = self._require()
        removed = 0
        for name in os.listdir(fd):
            if name not in keep:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)
                    removed += 1
        return removed

    def _require(self) -> int:
        if self._fd is None:
            raise InstallError("the content store is not open (call ContentStore.open first)")
        return self._fd
