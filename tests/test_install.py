"""install.Tree: the directory fds its install threads share, and what happens to them when DEST changes."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dagmirror.dirfd import DirCache
from dagmirror.errors import InstallError
from dagmirror.install import Tree

from .faults import leftover_temps
from .helpers import read_tree


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "dest"


def test_many_folders_from_many_threads_all_land_and_no_fd_leaks(dest: Path) -> None:
    files = {f"team{i % 300:03d}/sub{i % 7}/dag_{i}.py": f"# {i}\n".encode() for i in range(3000)}
    before = open_fds()
    t = Tree(dest, fsync=False)
    t.open()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda item: t.install(*item), files.items()))
    assert len(t._dirs._entries) <= DirCache.LIMIT  # more folders than the cache keeps: evicted as it went
    t.close()
    assert open_fds() == before
    assert read_tree(dest) == files
    assert leftover_temps(dest) == []


def test_a_folder_removed_between_passes_is_walked_again(dest: Path) -> None:
    t = Tree(dest, fsync=False)
    t.open()
    t.install("team/a.py", b"a")
    shutil.rmtree(dest / "team")  # an operator cleans up between two passes
    t.clean_temps()  # what every pass does first
    t.install("team/b.py", b"b")
    assert (dest / "team" / "b.py").read_bytes() == b"b"
    t.close()


def test_a_folder_replaced_by_a_symlink_between_passes_is_refused(dest: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    t = Tree(dest, fsync=False)
    t.open()
    t.install("team/a.py", b"a")
    shutil.rmtree(dest / "team")
    (dest / "team").symlink_to(outside)
    t.clean_temps()
    with pytest.raises(InstallError, match="symlink"):
        t.install("team/b.py", b"b")
    assert list(outside.iterdir()) == []
    t.close()


def test_a_delete_drops_the_cached_folders(dest: Path) -> None:
    t = Tree(dest, fsync=False)
    t.open()
    t.install("team/sub/a.py", b"a")
    assert t.delete("team/sub/a.py")
    assert t.remove_empty_dirs(["team/sub", "team"]) == 2
    t.install("team/sub/b.py", b"b")  # the removed folders are created again, not written into the void
    assert (dest / "team" / "sub" / "b.py").read_bytes() == b"b"
    t.close()


def test_an_fd_in_use_is_closed_by_its_last_user_never_under_it(tmp_path: Path) -> None:
    cache = DirCache()
    (tmp_path / "d").mkdir()

    def walk(parent: str, *, create: bool) -> int:
        return os.open(tmp_path / parent, os.O_RDONLY | os.O_DIRECTORY)

    fd = cache.acquire("d", walk)
    cache.clear()  # a pass ends while an install still holds the fd
    os.fstat(fd)  # still open
    cache.release("d", fd)
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
    again = cache.acquire("d", walk)
    cache.release("d", again)
    os.fstat(again)  # unused entries stay open for the next install...
    cache.clear()
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(again)  # ...until the cache is cleared


def test_a_batch_installs_what_it_can_and_each_failure_is_that_files_own(dest: Path, tmp_path: Path) -> None:
    t = Tree(dest)
    t.open()
    (dest / "blocked.py").mkdir()  # a folder where a file must go
    (tmp_path / "outside").mkdir()
    (dest / "linked").symlink_to(tmp_path / "outside")  # a symlink where a folder must be walked
    (dest / "a.py").write_bytes(b"old")
    items = [("a.py", b"new"), ("blocked.py", b"x"), ("linked/b.py", b"y"), ("d/c.py", b"z")]
    results = t.install_many(items)
    t.close()
    assert [type(r).__name__ for r in results] == ["LocalStat", "PathBlocked", "InstallError", "LocalStat"]
    assert "is a symlink" in str(results[2])
    assert (dest / "a.py").read_bytes() == b"new"
    assert (dest / "d/c.py").read_bytes() == b"z"
    assert list((tmp_path / "outside").iterdir()) == []
    assert leftover_temps(dest) == []
    journal = (dest / ".dagmirror" / "journal").read_text().split()
    assert journal == ["a.py", "blocked.py", "linked/b.py", "d/c.py"]  # named before any rename


def test_a_batch_whose_journal_cannot_be_written_installs_nothing(dest: Path) -> None:
    t = Tree(dest)
    t.open()
    assert t._journal_fd is not None
    os.close(t._journal_fd)
    t._journal_fd = os.open(os.devnull, os.O_RDONLY)  # every append fails (EBADF)
    results = t.install_many([("a.py", b"1"), ("b.py", b"2")])
    t.close()
    assert all(isinstance(r, InstallError) and "journal" in str(r) for r in results)
    assert read_tree(dest) == {}
    assert leftover_temps(dest) == []
