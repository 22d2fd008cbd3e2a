"""DEST is on a volume others may write (docs/security.md, "Volume co-tenants"): a FIFO, socket or device
planted where dagmirror opens a file must be refused at once, never block a thread or the event loop;
`.dagmirror` is held open from the start, never reopened by path, created 0700 and refused when another
user owns it."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dagmirror.audit import AuditLog
from dagmirror.errors import InstallError
from dagmirror.install import Tree
from dagmirror.source.memory import MemoryStore

from .helpers import dagmirror, put_all, read_tree

FILES = {"a.py": b"A = 1\n", "team/b.py": b"B = 2\n"}


def finishes(work: Callable[[], Any], fifo: Path, seconds: float = 10) -> bool:
    """Whether `work` returns within `seconds`; if it is stuck opening `fifo`, a writer unblocks it."""
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    stuck = thread.is_alive()
    if stuck:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # the stuck reader is there: this open succeeds
        os.close(fd)
        thread.join(seconds)
    return not stuck


@pytest.fixture
def fifo_at() -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        path.unlink(missing_ok=True)
        os.mkfifo(path)
        return path

    return make


def test_hashing_a_fifo_planted_at_a_dag_path_returns_at_once(tmp_path: Path, fifo_at: Any) -> None:
    tree = Tree(tmp_path / "dest", fsync=False)
    tree.open()
    tree.install("a.py", b"A = 1\n")
    fifo = fifo_at(tmp_path / "dest" / "a.py")
    found: list[Any] = []
    assert finishes(lambda: found.extend(tree.digest_many(["a.py"]) + tree.hash_many(["a.py"])), fifo)
    assert found == [None, None]
    tree.install("a.py", b"A = 2\n")  # replaced by the rename, never opened
    assert (tmp_path / "dest" / "a.py").read_bytes() == b"A = 2\n"
    tree.close()


@pytest.mark.parametrize("name", ["state.json", "journal", "lock"])
def test_sync_refuses_a_fifo_planted_among_its_own_files_instead_of_hanging(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path, fifo_at: Any, name: str
) -> None:
    put_all(s3, bucket, "dags/", FILES)
    dest = tmp_path / "dest"
    assert dagmirror("sync", f"s3://{bucket}/dags/", dest, endpoint=moto_endpoint).code == 0
    fifo_at(dest / ".dagmirror" / name)
    run = dagmirror("sync", f"s3://{bucket}/dags/", dest, endpoint=moto_endpoint, timeout=30)
    assert run.code == 1, run.stderr
    assert run.stderr.count("\n") == 1
    assert f"{name}: not a regular file" in run.stderr
    assert read_tree(dest) == FILES


def test_a_dagmirror_folder_swapped_in_after_open_is_never_written(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    tree = Tree(dest, fsync=False)
    tree.open()
    (dest / ".dagmirror").rename(dest / "moved")
    (dest / ".dagmirror").mkdir()  # another user's folder, put in its place
    tree.write_meta("state.json", b"{}")
    tree.install("a.py", b"A = 1\n")
    tree.close()
    assert (dest / "moved" / "state.json").read_bytes() == b"{}"
    assert os.listdir(dest / ".dagmirror") == []


def test_a_dagmirror_folder_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a folder to another user")
    dest = tmp_path / "dest"
    (dest / ".dagmirror").mkdir(parents=True)
    os.chown(dest / ".dagmirror", 12345, 12345)
    with pytest.raises(InstallError, match="owned by uid 12345"):
        Tree(dest, fsync=False).open()
    assert os.listdir(dest / ".dagmirror") == []


def test_shipping_audit_logs_skips_a_fifo_without_blocking_the_event_loop(
    tmp_path: Path, fifo_at: Any
) -> None:
    folder = tmp_path / "audit"
    folder.mkdir()
    (folder / "2026-01-01.jsonl").write_bytes(b'{"a": 1}\n')
    fifo = fifo_at(folder / "2026-01-02.jsonl")
    sink = MemoryStore()
    shipped: list[int] = []
    assert finishes(lambda: shipped.append(asyncio.run(AuditLog(folder, "h").ship(sink))), fifo)
    assert shipped == [1]


def test_dagmirror_folders_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        tree = Tree(tmp_path / "dest", fsync=False)
        tree.open()
        tree.close()
    finally:
        os.umask(old)
    for folder in (".dagmirror", ".dagmirror/tmp"):
        assert stat.S_IMODE((tmp_path / "dest" / folder).stat().st_mode) == 0o700, folder
    assert stat.S_IMODE((tmp_path / "dest").stat().st_mode) == 0o755  # DEST itself, when dagmirror made it
