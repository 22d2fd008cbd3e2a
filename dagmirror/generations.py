"""`--switch symlink`: DEST is a symlink to an immutable generation directory, switched by one rename.

    DEST                                  a symlink: .<name>.dagmirror/generations/<gen> (relative)
    .<name>.dagmirror/work/               the mirror's working tree (Tree root: state, content store, lock)
    .<name>.dagmirror/generations/<gen>/  immutable: <seq>-<release id[:12]>[-<n>], hard links into work/
    .<name>.dagmirror/converted-<time>/   a plain DEST directory found on first use, moved aside whole

A pass installs into work/ exactly as a files-mode pass installs into DEST. Once it went in without a failure,
`publish` builds the next generation as hard links to work/'s files (an unchanged file is the same inode as
in the previous generation: the work tree only ever replaces files by rename), fsyncs its directories, renames
it into generations/ complete, then makes a new symlink under a temp name and renames it over DEST. A kill -9
at any moment leaves DEST naming a whole generation, and the next pass builds whatever is missing.

Everything is reached through directory fds opened with O_NOFOLLOW (dirfd.walk): a symlink planted in work/
or a generation is never followed. Blocking calls, run in threads, under the work tree's lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import logging
import os
import re
import secrets
import shutil
import stat as statmod
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dagmirror.config import MirrorConfig, generations_home
from dagmirror.dirfd import DIR_FLAGS, Unsafe, split_path, walk
from dagmirror.errors import InstallError

log = logging.getLogger("dagmirror")

GENERATIONS = "generations"
_NAME = re.compile(r"^(\d+)-([0-9a-f]{12})(?:-(\d+))?$")
_RENAME_EXCHANGE = 2  # linux/fs.h


@dataclass(frozen=True, slots=True)
class Published:
    """What `publish` did: the generation DEST names now, whether it was built now, what was removed."""

    generation: str
    built: bool
    removed: tuple[str, ...] = ()
    converted: str | None = None  # where a plain DEST directory was moved (first use only)


class Generations:
    def __init__(self, config: MirrorConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.dest = config.dest
        self.home = generations_home(config.dest)
        self.root = self.home / GENERATIONS
        self._keep, self._grace = config.keep_generations, config.generation_grace
        self._fsync, self._clock = config.fsync, clock

    # -- the one entry point ---------------------------------------------------------------------------------
    def publish(self, files: Mapping[str, int], work: Path, release: str, seq: int) -> Published:
        """Make DEST name a generation holding exactly `files` (path -> inode in `work`), of `release`."""
        try:
            self._prepare()
            current = self.current()
            built = current is None or not self._matches(current, files, release)
            if built:
                name = self._next_name(release, seq)
                self._build(name, files, work)
                converted = self._switch(name)
                current = name
            else:
                converted = None
            assert current is not None
            return Published(current, built, self._prune(current), converted)
        except OSError as exc:
            raise InstallError(f"cannot switch {self.dest}: {exc.strerror or exc}") from None
        except Unsafe as exc:
            raise InstallError(f"'{exc.at}' in the work tree is not a plain folder; not switched") from None

    def current(self) -> str | None:
        """The generation DEST names, or None (DEST absent, a directory, or a link dagmirror did not make)."""
        try:
            target = os.readlink(self.dest)
        except OSError:
            return None
        head, _, name = target.rpartition("/")
        if head != f"{self.home.name}/{GENERATIONS}" or not _NAME.match(name):
            return None
        return name if os.path.isdir(self.root / name) and not (self.root / name).is_symlink() else None

    # -- steps -----------------------------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Create the folders (never through a symlink); clear what a killed switch left behind."""
        for folder in (self.home, self.root):
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder, 0o755)
            if not statmod.S_ISDIR(os.lstat(folder).st_mode):
                raise InstallError(f"{folder} is not a directory (a symlink?); refusing to use it")
        for entry in os.scandir(self.root):
            if entry.name.startswith(".building-") and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)  # a build a kill -9 interrupted: never named by DEST
        for entry in os.scandir(self.dest.parent):
            if entry.name.startswith(self._temp_link_prefix):
                if entry.is_symlink():
                    os.unlink(entry.path)
                else:  # a conversion's exchange done, its move aside not: finish it, delete nothing
                    self._set_aside(Path(entry.path))

    def _matches(self, current: str, files: Mapping[str, int], release: str) -> bool:
        """Whether `current` is `release` with exactly the work tree's files (same paths, same inodes)."""
        match = _NAME.match(current)
        if match is None or match.group(2) != release[:12]:
            return False
        found: dict[str, int] = {}
        top = self.root / current
        for folder, _, names, dir_fd in os.fwalk(top, follow_symlinks=False):
            rel = os.path.relpath(folder, top)
            for name in names:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                found[name if rel == "." else f"{rel}/{name}"] = st.st_ino
        return found == dict(files)

    def _next_name(self, release: str, seq: int) -> str:
        name, n = f"{seq}-{release[:12]}", 1
        while os.path.lexists(self.root / name):  # the same release again (drift repaired, or a rollback)
            n += 1
            name = f"{seq}-{release[:12]}-{n}"
        return name

    def _build(self, name: str, files: Mapping[str, int], work: Path) -> None:
        """generations/.building-<name>, hard-linked from `work`, fsynced, then renamed to <name>."""
        building = self.root / f".building-{name}"
        os.mkdir(building, 0o755)
        sources: dict[str, int] = {}
        targets: dict[str, int] = {}
        try:
            for path, ino in sorted(files.items()):
                parent, leaf = split_path(path)
                if parent not in sources:
                    sources[parent] = walk(work, parent, create=False)
                    targets[parent] = walk(building, parent, create=True)
                st = os.stat(leaf, dir_fd=sources[parent], follow_symlinks=False)
                if not statmod.S_ISREG(st.st_mode) or st.st_ino != ino:
                    raise InstallError(f"'{path}' changed in the work tree during the switch; not switched")
                src, dst = sources[parent], targets[parent]
                os.link(leaf, leaf, src_dir_fd=src, dst_dir_fd=dst, follow_symlinks=False)
        finally:
            for fd in (*sources.values(), *targets.values()):
                os.close(fd)
        if self._fsync:
            self._fsync_tree(building)
        os.rename(building, self.root / name)
        self._fsync_dir(self.root)

    def _switch(self, name: str) -> str | None:
        """A new symlink under a temp name, renamed over DEST: the one step readers see."""
        temp = self.dest.parent / f"{self._temp_link_prefix}{secrets.token_hex(4)}"
        os.symlink(f"{self.home.name}/{GENERATIONS}/{name}", temp)
        converted = None
        try:
            st = os.lstat(self.dest)
        except FileNotFoundError:
            st = None
        if st is not None and statmod.S_ISDIR(st.st_mode):
            converted = self._convert(temp)
        else:
            os.replace(temp, self.dest)
        self._fsync_dir(self.dest.parent)
        return converted

    def _convert(self, temp: Path) -> str:
        """DEST is a plain directory (first use): swap it with the link in one step where the kernel can
        (renameat2 RENAME_EXCHANGE), then move it aside whole: nothing in it is deleted."""
        if not _exchange(temp, self.dest):  # no renameat2: DEST is missing between these two renames
            aside = self._set_aside(self.dest)
            os.replace(temp, self.dest)
            return aside
        return self._set_aside(temp)

    def _set_aside(self, folder: Path) -> str:
        aside = self.home / f"converted-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}"
        os.rename(folder, aside)
        log.warning(
            "%s was a plain directory: moved whole to %s (nothing deleted; remove it when no longer needed)",
            self.dest,
            aside,
        )
        return str(aside)

    def _prune(self, current: str) -> tuple[str, ...]:
        """Remove generations beyond the newest `keep` whose successor took over more than `grace` ago."""
        named = sorted(
            (e for e in os.scandir(self.root) if _NAME.match(e.name) and e.is_dir(follow_symlinks=False)),
            key=lambda e: _order(e.name),
        )
        cutoff = self._clock() - self._grace
        removed = []
        for index, (older, newer) in enumerate(itertools.pairwise(named)):
            if index >= len(named) - self._keep:
                break
            if older.name != current and newer.stat(follow_symlinks=False).st_mtime < cutoff:
                shutil.rmtree(older.path)  # fd-based on Linux: a link inside is removed, never followed
                removed.append(older.name)
        if removed:
            log.info("removed %d old generation(s): %s", len(removed), ", ".join(removed))
        return tuple(removed)

    # -- helpers ---------------------------------------------------------------------------------------------
    @property
    def _temp_link_prefix(self) -> str:
        return f".{self.dest.name}.switch-"

    def _fsync_tree(self, top: Path) -> None:
        for _, _, _, dir_fd in os.fwalk(top, follow_symlinks=False):
            os.fsync(dir_fd)

    def _fsync_dir(self, folder: Path) -> None:
        if self._fsync:
            fd = os.open(folder, DIR_FLAGS)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _order(name: str) -> tuple[int, int]:
    match = _NAME.match(name)
    assert match is not None
    return int(match.group(1)), int(match.group(3) or 1)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two names atomically (Linux renameat2 RENAME_EXCHANGE); False where kernel or libc have none."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))
