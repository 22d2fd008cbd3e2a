"""Reaching paths below DEST through directory file descriptors opened with O_NOFOLLOW, so that a symlink
planted anywhere inside DEST can never redirect a write, delete or read outside it. Blocking calls; the
install threads run them (install.Tree is the only user)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat as statmod
import threading
from collections.abc import Callable, Sequence, Set
from pathlib import Path
from typing import Protocol

import xxhash

from dagmirror.errors import InstallError, PathBlocked
from dagmirror.models import LocalDigest, LocalStat

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# dagmirror's own files: a symlink planted in their place must make open fail, never redirect a write;
# O_NONBLOCK: a FIFO or device planted there must make open return at once (then `regular` refuses it),
# never block a thread (a FIFO's open waits for a writer).
META_FLAGS = os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
PRIVATE_DIR = 0o700  # DEST/.dagmirror and its folders: nobody else reads state, journal or bodies


class NotRegular(OSError):
    """A file dagmirror opened is a FIFO, socket or device (planted by someone else), not a regular file."""


def regular(fd: int, name: str) -> int:
    """`fd` if it is a regular file; else it is closed and NotRegular raised."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        os.close(fd)
        raise
    if not statmod.S_ISREG(mode):
        os.close(fd)
        raise NotRegular(errno.EINVAL, "not a regular file", name)
    return fd


def open_regular(name: str, flags: int, dir_fd: int, mode: int = 0o600) -> int:
    """Open `name` below `dir_fd` without following a link or blocking, refusing anything not a regular
    file (NotRegular)."""
    return regular(
        os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=dir_fd), name
    )


def read_regular(name: str, dir_fd: int, limit: int) -> bytes:
    """All of regular file `name` below `dir_fd`; OSError(EFBIG) past `limit` bytes (never read whole)."""
    fd = open_regular(name, os.O_RDONLY, dir_fd)
    try:
        chunks, size = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise OSError(errno.EFBIG, f"larger than {limit} bytes", name)
        return b"".join(chunks)
    finally:
        os.close(fd)


def remove_all(dir_fd: int, keep: Set[str] = frozenset()) -> int:
    """Unlink every entry of the folder `dir_fd` but those named in `keep`; the number removed."""
    removed = 0
    for name in os.listdir(dir_fd):
        if name not in keep:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
                removed += 1
    return removed


def private_dir(dir_fd: int, name: str, *, create: bool = True) -> int:
    """An fd for folder `name` below `dir_fd`: created 0700 when missing, never through a link, and
    refused (PermissionError) when another user owns it: on a volume others can write (an emptyDir is 0777)
    a folder planted in its place would get dagmirror's state and temps."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, PRIVATE_DIR, dir_fd=dir_fd)
    fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    owner = os.fstat(fd).st_uid
    if owner != os.geteuid():
        os.close(fd)
        raise PermissionError(
            errno.EPERM, f"owned by uid {owner}, not by this process (uid {os.geteuid()})", name
        )
    return fd


class Unsafe(Exception):
    """A walk met a symlink or a non-directory where a directory was needed."""

    def __init__(self, at: str, symlink: bool) -> None:
        super().__init__(at)
        self.at = at
        self.symlink = symlink


def write_all(fd: int, body: bytes) -> None:
    """All of `body` to `fd` (os.write may write less than asked)."""
    view = memoryview(body)
    while view:
        view = view[os.write(fd, view) :]


def write_temp(dir_fd: int, name: str, body: bytes, *, fsync: bool, meta: Path, root: Path) -> os.stat_result:
    """`create_temp`, then fsync if asked; the temp's stat, its fd closed."""
    fd = create_temp(dir_fd, name, body, meta, root)
    try:
        if fsync:
            os.fsync(fd)
        return os.fstat(fd)
    except OSError as exc:
        raise InstallError(f"cannot write {len(body)} bytes under {root}: {exc.strerror}") from None
    finally:
        os.close(fd)


def create_temp(dir_fd: int, name: str, body: bytes, meta: Path, root: Path) -> int:
    """Create `name` in `dir_fd` (never over an existing file or link) and write `body`; its fd, still open
    (the caller makes it durable and closes it). InstallError when either fails (nothing is left)."""
    try:
        fd = os.open(name, os.O_WRONLY | os.O_EXCL | META_FLAGS, 0o644, dir_fd=dir_fd)
    except OSError as exc:
        raise InstallError(f"cannot create temp file in {meta}: {exc.strerror}") from None
    try:
        write_all(fd, body)
    except OSError as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)
        raise InstallError(f"cannot write {len(body)} bytes under {root}: {exc.strerror}") from None
    return fd


class DirCache:
    """Directory fds the install threads share, so a pass walks each folder once instead of once per file.

    An fd stays bound to the directory it was opened on: `clear()` (every pass start, every delete) drops
    them, so a folder removed or replaced between passes is walked again. An fd in use by a thread is never
    closed under it: entries count their users, and only unused ones are evicted or closed.
    """

    LIMIT = 128  # open fds kept; files are planned in listing order, so a pass moves folder by folder

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, list[int]] = {}  # parent -> [fd, users]

    def acquire(self, parent: str, walk: Callable[..., int]) -> int:
        with self._lock:
            entry = self._entries.get(parent)
            if entry is not None:
                entry[1] += 1
                return entry[0]
        fd = walk(parent, create=True)  # outside the lock: mkdir and open may block
        with self._lock:
            entry = self._entries.get(parent)
            if entry is not None:  # another thread walked the same folder meanwhile: use its fd
                os.close(fd)
                entry[1] += 1
                return entry[0]
            self._entries[parent] = [fd, 1]
            self._evict()
            return fd

    def release(self, parent: str, fd: int) -> None:
        with self._lock:
            entry = self._entries.get(parent)
            if entry is not None and entry[0] == fd:
                entry[1] -= 1
                return
        os.close(fd)  # dropped by clear() while in use: its last user closes it

    def clear(self) -> None:
        with self._lock:
            for parent, (fd, users) in list(self._entries.items()):
                del self._entries[parent]
                if users == 0:
                    os.close(fd)

    def _evict(self) -> None:
        excess = len(self._entries) - self.LIMIT
        for parent, (fd, users) in list(self._entries.items()):
            if excess <= 0:
                break
            if users == 0:
                del self._entries[parent]
                os.close(fd)
                excess -= 1


def cached_dir(root: Path | int, cache: dict[str, int | None], parent: str) -> int | None:
    if parent not in cache:
        try:
            cache[parent] = walk(root, parent, create=False)
        except (Unsafe, OSError):  # missing, unsafe or unreadable: seen as absent; an install says why
            cache[parent] = None
    return cache[parent]


def walk(root: Path | int, parent: str, *, create: bool) -> int:
    """An fd for `parent` below `root` (a path, or an fd held since the start, which is duplicated)."""
    fd = os.dup(root) if isinstance(root, int) else os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    walked = ""
    try:
        for part in parent.split("/") if parent else ():
            walked = f"{walked}/{part}" if walked else part
            next_fd = open_child_dir(fd, part, walked, create=create)
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_child_dir(fd: int, part: str, walked: str, *, create: bool) -> int:
    for _ in range(2):  # a concurrent mkdir of the same parent is fine: try the open once more
        try:
            return os.open(part, DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                is_link = statmod.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode)
                raise Unsafe(walked, symlink=is_link) from None
            raise
    return os.open(part, DIR_FLAGS, dir_fd=fd)


def check_target(dir_fd: int, name: str, path: str) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if statmod.S_ISDIR(st.st_mode):
        raise PathBlocked(f"'{path}' is a directory where a file is needed", path)


def lstat_at(dir_fd: int | None, name: str) -> LocalStat | None:
    if dir_fd is None:
        return None
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    mode = st.st_mode
    kind = (
        "file"
        if statmod.S_ISREG(mode)
        else "dir"
        if statmod.S_ISDIR(mode)
        else "symlink"
        if statmod.S_ISLNK(mode)
        else "other"
    )
    return LocalStat(kind, st.st_size, st.st_mtime_ns, st.st_ino)


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


def _hash_file(dir_fd: int | None, name: str, hashers: Sequence[_Hasher]) -> list[str] | None:
    """The hex digests of a regular file below `dir_fd` (never through a link), or None when it is missing,
    not a regular file or unreadable: treated as changed, so its body is fetched again."""
    if dir_fd is None:
        return None
    try:
        fd = open_regular(name, os.O_RDONLY, dir_fd)  # a FIFO here is refused (NotRegular), never waited on
    except OSError:
        return None
    try:
        while chunk := os.read(fd, 1 << 20):
            for hasher in hashers:
                hasher.update(chunk)
        return [h.hexdigest() for h in hashers]
    except OSError:
        return None
    finally:
        os.close(fd)


def digest_at(dir_fd: int | None, name: str) -> LocalDigest | None:
    """xxh3-128 and MD5 (the object mirror's state and ETag checks)."""
    found = _hash_file(dir_fd, name, [xxhash.xxh3_128(), hashlib.md5(usedforsecurity=False)])
    return LocalDigest(found[0], found[1]) if found else None


def hashes_at(dir_fd: int | None, name: str) -> tuple[str, str] | None:
    """(SHA-256, xxh3-128) of a regular file, or None when it is missing, not a file or unreadable."""
    found = _hash_file(dir_fd, name, [hashlib.sha256(), xxhash.xxh3_128()])
    return (found[0], found[1]) if found else None


def split_path(path: str) -> tuple[str, str]:
    parent, _, name = path.rpartition("/")
    return parent, name
