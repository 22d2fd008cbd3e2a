"""The local content store DEST/.dagmirror/bodies/<sha256>: every body of the installed release (and of the
one before it), so a file renamed, copied, reverted or damaged by hand is restored without a request.

Entries are written in place without fsync and checked against their SHA-256 on every read: a torn or
altered entry is removed and reads as missing (the body is fetched again), never installed. Blocking calls,
run in threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from dagmirror.dirfd import open_regular, private_dir, remove_all, write_all
from dagmirror.errors import InstallError

BODIES = "bodies"


class ContentStore:
    def __init__(self, meta: Path, meta_fd: Callable[[], int]) -> None:
        self.path = meta / BODIES
        self._meta_fd = (
            meta_fd  # the held fd of DEST/.dagmirror (install.Tree.meta_fd): never reopened by path
        )
        self._fd: int | None = None

    def open(self) -> None:
        """Create the folder 0700 (never through a symlink, never one another user planted)."""
        if self._fd is not None:
            return
        try:
            self._fd = private_dir(self._meta_fd(), BODIES)
        except OSError as exc:
            raise InstallError(f"cannot open the content store {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read(self, digest: str) -> bytes | None:
        """The body whose SHA-256 is `digest`, or None when absent or damaged (a damaged entry is removed)."""
        fd = self._require()
        try:
            body_fd = open_regular(digest, os.O_RDONLY, fd)  # a FIFO is refused, never waited on
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
        """Add a verified body, in place (no temp, no rename): every read checks the SHA-256, so an entry
        torn by a kill reads as missing and is replaced, which costs less than a rename per body."""
        fd = self._require()
        try:
            out = os.open(
                digest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd
            )
        except FileExistsError:
            return  # the same body (or a damaged one, which the next read removes)
        except OSError as exc:
            raise InstallError(f"cannot write to the content store: {exc.strerror or exc}") from None
        try:
            write_all(out, body)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(digest, dir_fd=fd)
            raise InstallError(f"cannot write to the content store: {exc.strerror or exc}") from None
        finally:
            os.close(out)

    def prune(self, keep: set[str]) -> int:
        """Remove every entry not in `keep`; the number removed."""
        return remove_all(self._require(), keep)

    def _require(self) -> int:
        if self._fd is None:
            raise InstallError("the content store is not open (call ContentStore.open first)")
        return self._fd
