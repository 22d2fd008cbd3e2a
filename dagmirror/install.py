"""DEST on disk: atomic installs, deletes, stat and hashing, all symlink-safe. Blocking calls, run in threads.

Every path below DEST is reached by walking directory file descriptors opened with O_NOFOLLOW, so a symlink
planted anywhere inside DEST can never redirect a write, delete or read outside it. A file appears only by
`rename` of a fully written (and fsynced) temp file from DEST/.dagmirror/tmp/, which Airflow never parses.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import os
import secrets
import stat as statmod
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import xxhash

from dagmirror.errors import DestLocked, InstallError, PathBlocked
from dagmirror.keys import RESERVED_DIR
from dagmirror.models import LocalDigest, LocalStat

_DirLookup = Callable[[str], int | None]
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# dagmirror's own files: a symlink planted in their place must make open fail, never redirect a write.
_META_FLAGS = os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
TEMP_SUFFIX = ".part"
JOURNAL = "journal"


class _Unsafe(Exception):
    """A walk met a symlink or a non-directory where a directory was needed."""

    def __init__(self, at: str, symlink: bool) -> None:
        super().__init__(at)
        self.at = at
        self.symlink = symlink


class Tree:
    """The destination folder. `open()` locks it and clears stale temps; read-only calls work without."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.meta = root / RESERVED_DIR
        self.fsync = fsync
        self._lock_fd: int | None = None
        self._tmp_fd: int | None = None
        self._journal_fd: int | None = None
        self._dirs = _DirCache()
        # Temp names: unique under the DEST lock without asking the kernel for randomness per file.
        # itertools.count's next() is atomic across threads (a generator's is not).
        self._temp_prefix, self._temp_numbers = secrets.token_hex(4), itertools.count()

    # -- lifecycle -------------------------------------------------------------------------------------------
    def open(self) -> list[str]:
        """Create DEST if needed, lock it against a second dagmirror, remove stale temps; return the
        paths a killed pass may have installed without recording (read from the intent journal)."""
        if self._lock_fd is not None:
            return []
        try:
            return self._open()
        except OSError as exc:
            self.close()
            raise InstallError(f"cannot use {self.root} as destination: {exc.strerror or exc}") from None

    def _open(self) -> list[str]:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.meta.is_symlink():
            raise InstallError(f"{self.meta} is a symlink; refusing to use it")
        (self.meta / "tmp").mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.meta / "lock", os.O_RDWR | _META_FLAGS, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise DestLocked(f"another dagmirror process is syncing {self.root}") from None
        self._lock_fd = lock_fd
        self._tmp_fd = os.open(self.meta / "tmp", _DIR_FLAGS)
        self.clean_temps()
        return self._read_journal()

    def close(self) -> None:
        self._dirs.clear()
        for name in ("_journal_fd", "_tmp_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    def clean_temps(self) -> int:
        """Remove temp files left by a killed pass (the lock guarantees none are in flight). Called at the
        start of every pass, which also forgets the directory fds the last pass's installs kept open."""
        self._dirs.clear()
        removed = 0
        for name in os.listdir(self._require(self._tmp_fd)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=self._tmp_fd)
                removed += 1
        return removed

    # -- intent journal: a path is appended before its rename, so a kill -9 cannot orphan a file ------------
    def _read_journal(self) -> list[str]:
        self._journal_fd = fd = os.open(self.meta / JOURNAL, os.O_RDWR | os.O_APPEND | _META_FLAGS, 0o644)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return [line for line in b"".join(chunks).decode("utf-8", "replace").split("\n") if line]

    def reset_journal(self) -> None:
        """Called once the state file records everything the journal named."""
        os.ftruncate(self._require(self._journal_fd), 0)

    # -- reads -----------------------------------------------------------------------------------------------
    def stat_many(self, paths: Sequence[str]) -> list[LocalStat | None]:
        with self._dir_cache() as dir_fd:
            return [_lstat(dir_fd(parent), name) for parent, name in map(_split, paths)]

    def digest_many(self, paths: Sequence[str]) -> list[LocalDigest | None]:
        with self._dir_cache() as dir_fd:
            return [_digest(dir_fd(parent), name) for parent, name in map(_split, paths)]

    # -- writes ----------------------------------------------------------------------------------------------
    def install(self, path: str, body: bytes) -> LocalStat:
        """Write `body` to a temp file, fsync, rename it over `path`: readers see old or new, never torn."""
        tmp_fd = self._require(self._tmp_fd)
        temp = f"{self._temp_prefix}-{next(self._temp_numbers)}{TEMP_SUFFIX}"
        try:
            return self._install(tmp_fd, temp, path, body)
        except OSError as exc:  # EACCES, EROFS, ENOSPC on mkdir...: one line for this key, the pass goes on
            raise InstallError(f"cannot install '{path}': {exc.strerror or exc}") from None

    def _install(self, tmp_fd: int, temp: str, path: str, body: bytes) -> LocalStat:
        try:
            st = self._write_temp(tmp_fd, temp, body)
            parent, name = _split(path)
            dir_fd = self._dirs.acquire(parent, self._walk)
            try:
                _check_target(dir_fd, name, path)
                os.write(self._require(self._journal_fd), path.encode("utf-8") + b"\n")
                os.replace(temp, name, src_dir_fd=tmp_fd, dst_dir_fd=dir_fd)
            finally:
                self._dirs.release(parent, dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=tmp_fd)
            raise
        return LocalStat("file", st.st_size, st.st_mtime_ns, st.st_ino)

    def delete(self, path: str) -> bool:
        """Unlink a regular file or symlink at `path`; directories and unsafe parents are left alone."""
        self._dirs.clear()
        parent, name = _split(path)
        try:
            dir_fd = self._walk(parent, create=False)
        except (InstallError, FileNotFoundError):
            return False
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if not statmod.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=dir_fd)
                return True
        except FileNotFoundError:
            pass
        finally:
            os.close(dir_fd)
        return False

    def remove_empty_dirs(self, dirs: Sequence[str]) -> int:
        """rmdir each of `dirs` (deepest first) that is empty; a non-empty one simply stays."""
        self._dirs.clear()
        removed = 0
        for path in dirs:
            parent, name = _split(path)
            try:
                dir_fd = self._walk(parent, create=False)
            except (InstallError, FileNotFoundError):
                continue
            try:
                os.rmdir(name, dir_fd=dir_fd)
                removed += 1
            except OSError:
                pass
            finally:
                os.close(dir_fd)
        return removed

    def write_meta(self, name: str, data: bytes) -> None:
        """Atomically replace DEST/.dagmirror/NAME (the state file). The temp is written in the temp folder,
        so a failed write (a full disk) or a kill -9 leaves nothing that `clean_temps` does not remove."""
        tmp_fd = self._require(self._tmp_fd)
        meta_fd = os.open(self.meta, _DIR_FLAGS)
        temp = f"{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            self._write_temp(tmp_fd, temp, data)
            os.replace(temp, name, src_dir_fd=tmp_fd, dst_dir_fd=meta_fd)
            if self.fsync:
                os.fsync(meta_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=tmp_fd)
            raise
        finally:
            os.close(meta_fd)

    # -- internals -------------------------------------------------------------------------------------------
    def _write_temp(self, dir_fd: int, name: str, body: bytes) -> os.stat_result:
        flags = os.O_WRONLY | os.O_EXCL | _META_FLAGS
        try:
            fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
        except OSError as exc:
            raise InstallError(f"cannot create temp file in {self.meta}: {exc.strerror}") from None
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
            if self.fsync:
                os.fsync(fd)
            return os.fstat(fd)
        except OSError as exc:
            raise InstallError(f"cannot write {len(body)} bytes under {self.root}: {exc.strerror}") from None
        finally:
            os.close(fd)

    def _walk(self, parent: str, *, create: bool) -> int:
        """An fd for DEST/parent reached without following any symlink; InstallError/PathBlocked if unsafe."""
        try:
            return _walk(self.root, parent, create=create)
        except _Unsafe as exc:
            if exc.symlink:
                raise InstallError(
                    f"'{exc.at}' inside {self.root} is a symlink; refusing to follow it"
                ) from None
            raise PathBlocked(f"'{exc.at}' is a file where a directory is needed", exc.at) from None

    @contextlib.contextmanager
    def _dir_cache(self) -> Iterator[_DirLookup]:
        cache: dict[str, int | None] = {}
        try:
            yield lambda parent: _cached_dir(self.root, cache, parent)
        finally:
            for fd in cache.values():
                if fd is not None:
                    os.close(fd)

    @staticmethod
    def _require(fd: int | None) -> int:
        if fd is None:
            raise InstallError("destination is not open for writing (call Tree.open first)")
        return fd


class _DirCache:
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


def _cached_dir(root: Path, cache: dict[str, int | None], parent: str) -> int | None:
    if parent not in cache:
        try:
            cache[parent] = _walk(root, parent, create=False)
        except (_Unsafe, OSError):  # missing, unsafe or unreadable: seen as absent; an install says why
            cache[parent] = None
    return cache[parent]


def _walk(root: Path, parent: str, *, create: bool) -> int:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    walked = ""
    try:
        for part in parent.split("/") if parent else ():
            walked = f"{walked}/{part}" if walked else part
            next_fd = _open_child_dir(fd, part, walked, create=create)
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_child_dir(fd: int, part: str, walked: str, *, create: bool) -> int:
    for _ in range(2):  # a concurrent mkdir of the same parent is fine: try the open once more
        try:
            return os.open(part, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                is_link = statmod.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode)
                raise _Unsafe(walked, symlink=is_link) from None
            raise
    return os.open(part, _DIR_FLAGS, dir_fd=fd)


def _check_target(dir_fd: int, name: str, path: str) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if statmod.S_ISDIR(st.st_mode):
        raise PathBlocked(f"'{path}' is a directory where a file is needed", path)


def _lstat(dir_fd: int | None, name: str) -> LocalStat | None:
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


def _digest(dir_fd: int | None, name: str) -> LocalDigest | None:
    if dir_fd is None:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not statmod.S_ISREG(os.fstat(fd).st_mode):
            return None
        xxh, md5 = xxhash.xxh3_128(), hashlib.md5(usedforsecurity=False)
        while chunk := os.read(fd, 1 << 20):
            xxh.update(chunk)
            md5.update(chunk)
        return LocalDigest(xxh.hexdigest(), md5.hexdigest())
    except OSError:
        return None  # unreadable: treated as changed, so the object is fetched again
    finally:
        os.close(fd)


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.rpartition("/")
    return parent, name
