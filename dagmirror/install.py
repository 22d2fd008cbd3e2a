"""DEST on disk: atomic installs, deletes, stat and hashing, all symlink-safe. Blocking calls, run in threads.

Every path below DEST is reached by walking directory file descriptors opened with O_NOFOLLOW, so a symlink
planted anywhere inside DEST can never redirect a write, delete or read outside it. A file appears only by
`rename` of a fully written (and fsynced) temp file from DEST/.dagmirror/tmp/, which Airflow never parses.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import secrets
import stat as statmod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from dagmirror.dirfd import (
    DirCache,
    Unsafe,
    cached_dir,
    check_target,
    create_temp,
    digest_at,
    hashes_at,
    lstat_at,
    open_regular,
    private_dir,
    remove_all,
    split_path,
    walk,
    write_temp,
)
from dagmirror.errors import DestLocked, InstallError, PathBlocked
from dagmirror.keys import RESERVED_DIR
from dagmirror.models import LocalDigest, LocalStat

_DirLookup = Callable[[str], int | None]
TEMP_SUFFIX = ".part"
JOURNAL = "journal"


class Tree:
    """The destination folder. `open()` locks it and clears stale temps; read-only calls work without."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.meta = root / RESERVED_DIR
        self.fsync = fsync
        self._lock_fd: int | None = None
        # DEST and DEST/.dagmirror are held open from `open()` on and never reopened by path: a folder
        # swapped in by another user of the volume is never written to.
        self._root_fd: int | None = None
        self._meta_fd: int | None = None
        self._tmp_fd: int | None = None
        self._journal_fd: int | None = None
        self._dirs = DirCache()
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
            what = f"{RESERVED_DIR}/{exc.filename}: " if isinstance(exc.filename, str) else ""
            why = exc.strerror or exc
            raise InstallError(f"cannot use {self.root} as destination: {what}{why}") from None

    def _open(self) -> list[str]:
        self.root.mkdir(mode=0o755, parents=True, exist_ok=True)  # never group- or world-writable
        self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._meta_fd = _private(self._root_fd, self.meta)
        self._tmp_fd = _private(self._meta_fd, self.meta / "tmp")
        lock_fd = open_regular("lock", os.O_RDWR | os.O_CREAT, self._meta_fd)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise DestLocked(f"another dagmirror process is syncing {self.root}") from None
        self._lock_fd = lock_fd
        self.clean_temps()
        return self._read_journal()

    def meta_fd(self) -> int:
        """The fd of DEST/.dagmirror held since `open()`."""
        return self._require(self._meta_fd)

    @contextlib.contextmanager
    def meta_handle(self) -> Iterator[int | None]:
        """The held fd of DEST/.dagmirror; before `open()` (a dry run) one opened for this read only, or
        None when there is none yet."""
        if self._meta_fd is not None:
            yield self._meta_fd
        else:
            with _meta_for_reading(self.root, self.meta.name) as meta_fd:
                yield meta_fd

    def close(self) -> None:
        self._dirs.clear()
        for name in ("_journal_fd", "_tmp_fd", "_lock_fd", "_meta_fd", "_root_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    def clean_temps(self) -> int:
        """Remove temp files left by a killed pass (the lock guarantees none are in flight). Called at the
        start of every pass, which also forgets the directory fds the last pass's installs kept open."""
        self._dirs.clear()
        return remove_all(self._require(self._tmp_fd))

    # -- intent journal: a path is appended before its rename, so a kill -9 cannot orphan a file ------------
    def _read_journal(self) -> list[str]:
        meta_fd = self._require(self._meta_fd)
        self._journal_fd = fd = open_regular(JOURNAL, os.O_RDWR | os.O_APPEND | os.O_CREAT, meta_fd)
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
            return [lstat_at(dir_fd(parent), name) for parent, name in map(split_path, paths)]

    def digest_many(self, paths: Sequence[str]) -> list[LocalDigest | None]:
        with self._dir_cache() as dir_fd:
            return [digest_at(dir_fd(parent), name) for parent, name in map(split_path, paths)]

    def hash_many(self, paths: Sequence[str]) -> list[tuple[str, str] | None]:
        """(SHA-256, xxh3) of each path: what a release's files are checked against."""
        with self._dir_cache() as dir_fd:
            return [hashes_at(dir_fd(parent), name) for parent, name in map(split_path, paths)]

    # -- writes ----------------------------------------------------------------------------------------------
    def install(self, path: str, body: bytes) -> LocalStat:
        """Write `body` to a temp file, fsync, rename it over `path`: readers see old or new, never torn."""
        (result,) = self.install_many([(path, body)])
        if isinstance(result, InstallError):
            raise result
        return result

    def install_many(self, items: Sequence[tuple[str, bytes]]) -> list[LocalStat | InstallError]:
        """`install` for each (path, body), in one call (see _Batch); a failure (InstallError, PathBlocked)
        is that item's result, and the others go on."""
        tmp_fd, journal_fd = self._require(self._tmp_fd), self._require(self._journal_fd)
        names = [f"{self._temp_prefix}-{next(self._temp_numbers)}{TEMP_SUFFIX}" for _ in items]
        return _Batch(self, tmp_fd, journal_fd).run(items, names)

    def place(self, tmp_fd: int, temp: str, path: str) -> None:
        """Rename the durable temp `temp` over `path` (walked without following links; a folder there is
        PathBlocked)."""
        parent, name = split_path(path)
        dir_fd = self._dirs.acquire(parent, self._walk)
        try:
            check_target(dir_fd, name, path)
            os.replace(temp, name, src_dir_fd=tmp_fd, dst_dir_fd=dir_fd)
        finally:
            self._dirs.release(parent, dir_fd)

    def delete(self, path: str) -> bool:
        """Unlink a regular file or symlink at `path`; directories and unsafe parents are left alone."""
        self._dirs.clear()
        parent, name = split_path(path)
        with self._parent(parent) as dir_fd, contextlib.suppress(FileNotFoundError):
            if dir_fd is not None and not statmod.S_ISDIR(
                os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
            ):
                os.unlink(name, dir_fd=dir_fd)
                return True
        return False

    def remove_empty_dirs(self, dirs: Sequence[str]) -> int:
        """rmdir each of `dirs` (deepest first) that is empty; a non-empty one simply stays."""
        self._dirs.clear()
        removed = 0
        for path in dirs:
            parent, name = split_path(path)
            with self._parent(parent) as dir_fd, contextlib.suppress(OSError):
                if dir_fd is not None:
                    os.rmdir(name, dir_fd=dir_fd)
                    removed += 1
        return removed

    def write_meta(self, name: str, data: bytes) -> None:
        """Atomically replace DEST/.dagmirror/NAME (the state file). The temp is written in the temp folder,
        so a failed write (a full disk) or a kill -9 leaves nothing that `clean_temps` does not remove."""
        tmp_fd, meta_fd = self._require(self._tmp_fd), self._require(self._meta_fd)
        temp = f"{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            write_temp(tmp_fd, temp, data, fsync=self.fsync, meta=self.meta, root=self.root)
            os.replace(temp, name, src_dir_fd=tmp_fd, dst_dir_fd=meta_fd)
            if self.fsync:
                os.fsync(meta_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=tmp_fd)
            raise

    # -- internals -------------------------------------------------------------------------------------------
    def _walk(self, parent: str, *, create: bool) -> int:
        """An fd for DEST/parent reached without following any symlink; InstallError/PathBlocked if unsafe."""
        return _safe_walk(self.root, self._root(), parent, create=create)

    @contextlib.contextmanager
    def _parent(self, parent: str) -> Iterator[int | None]:
        """DEST/parent's fd for one delete, or None when it is gone or unsafe (nothing to delete there)."""
        try:
            dir_fd = self._walk(parent, create=False)
        except (InstallError, FileNotFoundError):
            yield None
            return
        try:
            yield dir_fd
        finally:
            os.close(dir_fd)

    def _dir_cache(self) -> contextlib.AbstractContextManager[_DirLookup]:
        return _dir_cache(self._root())

    def _root(self) -> Path | int:
        return self.root if self._root_fd is None else self._root_fd

    @staticmethod
    def _require(fd: int | None) -> int:
        if fd is None:
            raise InstallError("destination is not open for writing (call Tree.open first)")
        return fd


class _Batch:
    """One batch of installs: every temp is written, then all are made durable (fsynced one after the
    other: on a journaling filesystem the first commit carries most of the others), the intent journal names
    them in one append, and each is renamed into place. No temp is renamed before it is durable, and none
    outlives the call. A path journaled but not renamed (blocked, or a kill in between) is adopted as
    managed with unknown content after a kill, as a path whose rename failed always was."""

    def __init__(self, tree: Tree, tmp_fd: int, journal_fd: int) -> None:
        self._tree, self._tmp_fd, self._journal_fd = tree, tmp_fd, journal_fd

    def run(self, items: Sequence[tuple[str, bytes]], names: list[str]) -> list[LocalStat | InstallError]:
        tree, tmp_fd = self._tree, self._tmp_fd
        results: list[LocalStat | InstallError | None] = [None] * len(items)
        staged: list[_Staged] = []
        try:
            for i, ((path, body), temp) in enumerate(zip(items, names, strict=True)):
                try:
                    staged.append(
                        _Staged(i, temp, path, create_temp(tmp_fd, temp, body, tree.meta, tree.root))
                    )
                except InstallError as exc:
                    results[i] = exc
            durable = [(item, self._durable(item, results)) for item in staged]
            ready = [(item, st) for item, st in durable if st is not None]
            if ready and (failed := self._journal([item.path for item, _ in ready])):
                for item, _ in ready:
                    results[item.index] = InstallError(f"cannot install '{item.path}': {failed}")
                ready = []
            for item, st in ready:
                results[item.index] = self._place(item, st)
        finally:
            for item in staged:
                item.close()
                if not isinstance(results[item.index], LocalStat):  # never left behind
                    with contextlib.suppress(OSError):
                        os.unlink(item.temp, dir_fd=tmp_fd)
        done = [r for r in results if r is not None]
        assert len(done) == len(items)  # every item has its outcome: staged ones from _durable or _place
        return done

    def _journal(self, paths: list[str]) -> str | None:
        """One append names the whole batch before any of it is renamed; the reason when it could not."""
        try:
            os.write(self._journal_fd, "".join(f"{p}\n" for p in paths).encode("utf-8"))
        except OSError as exc:
            return f"journal: {exc.strerror or exc}"
        return None

    def _durable(self, item: _Staged, results: list[LocalStat | InstallError | None]) -> LocalStat | None:
        """fsync (when asked) and stat a written temp, then close it; None when that failed (in `results`)."""
        try:
            if self._tree.fsync:
                os.fsync(item.fd)
            st = os.fstat(item.fd)
        except OSError as exc:
            why = f"cannot write {item.path!r} under {self._tree.root}: {exc.strerror}"
            results[item.index] = InstallError(why)
            return None
        finally:
            item.close()
        return LocalStat("file", st.st_size, st.st_mtime_ns, st.st_ino)

    def _place(self, item: _Staged, st: LocalStat) -> LocalStat | InstallError:
        try:
            self._tree.place(self._tmp_fd, item.temp, item.path)
        except InstallError as exc:  # PathBlocked too
            return exc
        except OSError as exc:  # EACCES, EROFS, ENOSPC on mkdir...: one line for this key, the pass goes on
            return InstallError(f"cannot install '{item.path}': {exc.strerror or exc}")
        return st


class _Staged:
    """A temp written for one install, its fd still open until it is made durable."""

    __slots__ = ("fd", "index", "path", "temp")

    def __init__(self, index: int, temp: str, path: str, fd: int) -> None:
        self.index, self.temp, self.path, self.fd = index, temp, path, fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _private(parent_fd: int, path: Path) -> int:
    try:
        return private_dir(parent_fd, path.name)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise InstallError(f"{path} is a symlink or not a folder; refusing to use it") from None
        if exc.errno == errno.EPERM:
            raise InstallError(f"{path} is {exc.strerror}; refusing to use it") from None
        raise


@contextlib.contextmanager
def _meta_for_reading(root: Path, name: str) -> Iterator[int | None]:
    """DEST/.dagmirror opened for one read (no lock held), or None when there is none yet."""
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    try:
        meta_fd = private_dir(root_fd, name, create=False)
    except FileNotFoundError:
        meta_fd = None
    finally:
        os.close(root_fd)
    try:
        yield meta_fd
    finally:
        if meta_fd is not None:
            os.close(meta_fd)


def _safe_walk(shown: Path, root: Path | int, parent: str, *, create: bool) -> int:
    try:
        return walk(root, parent, create=create)
    except Unsafe as exc:
        if exc.symlink:
            raise InstallError(f"'{exc.at}' inside {shown} is a symlink; refusing to follow it") from None
        raise PathBlocked(f"'{exc.at}' is a file where a directory is needed", exc.at) from None


@contextlib.contextmanager
def _dir_cache(root: Path | int) -> Iterator[_DirLookup]:
    cache: dict[str, int | None] = {}
    try:
        yield lambda parent: cached_dir(root, cache, parent)
    finally:
        for fd in cache.values():
            if fd is not None:
                os.close(fd)
