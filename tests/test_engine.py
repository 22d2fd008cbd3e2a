"""Engine behaviour over the in-memory source: pipeline logic without a network (the S3 suite is separate)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from dagmirror import Mirror, MirrorConfig, PassFailed
from dagmirror.errors import DestLocked, InstallError, SourceConfigError, SourceUnavailable
from dagmirror.models import ListPage, RemoteObject, SyncReport
from dagmirror.retry import RetryPolicy
from dagmirror.source.memory import MemorySource

from .helpers import no_sleep, read_tree

FILES = {
    "dags/a.py": b"a = 1\n",
    "dags/team/b.py": b"b = 2\n",
    "dags/team/sub/c.py": b"c = 3\n" * 100,
    "dags/other/d.sql": b"select 1",
}


def config(dest: Path, **kw: Any) -> MirrorConfig:
    kw.setdefault("retry", RetryPolicy(attempts=3))
    # The listing engine, request for request; auto mode's one pointer probe before the listing (a GET that
    # S3 answers NoSuchKey) is covered in test_release_mirror.py.
    kw.setdefault("mode", "objects")
    kw.setdefault("fsync", False)
    return MirrorConfig.create("s3://bkt/dags", dest, **kw)


async def sync(source: MemorySource, dest: Path, **kw: Any) -> SyncReport:
    async with Mirror(config(dest, **kw), source=source, sleep=no_sleep) as mirror:
        return await mirror.sync_once()


def expected(files: dict[str, bytes], prefix: str = "dags/") -> dict[str, bytes]:
    return {k[len(prefix) :]: v for k, v in files.items() if k.startswith(prefix)}


async def test_cold_pass_mirrors_the_tree_and_counts_add_up(tmp_path: Path) -> None:
    report = await sync(MemorySource(FILES), tmp_path / "d")
    assert read_tree(tmp_path / "d") == expected(FILES)
    assert (report.listed, report.downloaded, report.failed) == (4, 4, 0)
    assert report.bytes == sum(len(v) for v in FILES.values())


async def test_second_pass_lists_only_and_keeps_everything(tmp_path: Path) -> None:
    source = MemorySource(FILES)
    await sync(source, tmp_path)
    source.counts.clear()
    report = await sync(source, tmp_path)
    assert (report.downloaded, report.unchanged) == (0, 4)
    assert set(source.counts) == {"LIST"}


@pytest.mark.parametrize("fanout_depth", [0, 1, 2, 4])
async def test_fanout_depth_and_page_size_do_not_change_the_result(tmp_path: Path, fanout_depth: int) -> None:
    files = {f"dags/t{i % 3}/s{i % 5}/f{i}.py": str(i).encode() for i in range(60)}
    files |= {"dags/t1": b"file that collides with dir t1/", "dags/t1/s1/f1.py/x": b"collides with f1.py"}
    report = await sync(MemorySource(files, page_size=7), tmp_path, fanout_depth=fanout_depth)
    want = expected(files)
    del want["t1"], want["t1/s1/f1.py"]
    assert read_tree(tmp_path) == want
    assert sorted(r.key for r in report.rejections) == ["dags/t1", "dags/t1/s1/f1.py"]


async def test_transient_get_faults_are_retried(tmp_path: Path) -> None:
    source = MemorySource(FILES)
    failures: dict[str, int] = {}

    def flaky(op: str, key: str) -> None:
        if op == "GET" and failures.setdefault(key, 0) < 2:
            failures[key] += 1
            raise SourceUnavailable("503 SlowDown")

    source.fault = flaky
    report = await sync(source, tmp_path)
    assert (report.downloaded, report.failed, report.retries) == (4, 0, 8)
    assert read_tree(tmp_path) == expected(FILES)


async def test_corrupt_body_is_retried_then_reported_and_never_installed(tmp_path: Path) -> None:
    source = MemorySource(FILES)
    await sync(source, tmp_path)
    source.put("dags/a.py", b"a = 2\n")
    source.fault = lambda op, key: b"a = 9\n" if op == "BODY" else None  # same length, wrong bytes
    report = await sync(source, tmp_path)
    assert report.failed == 1
    assert "MD5" in report.failures[0].error
    assert (tmp_path / "a.py").read_bytes() == b"a = 1\n"  # the last good version stays


async def test_listing_failure_midway_deletes_nothing(tmp_path: Path) -> None:
    files = {f"dags/f{i:03}.py": b"x" for i in range(50)}
    source = MemorySource(files, page_size=10)
    await sync(source, tmp_path)
    calls = {"n": 0}

    def fail_third_page(op: str, _: str) -> None:
        if op == "LIST":
            calls["n"] += 1
            if calls["n"] >= 3:
                raise SourceUnavailable("connection reset")

    source.fault = fail_third_page
    for key in list(files)[40:]:
        del source.objects[key]  # real deletions, which the failed listing must not act on
    with pytest.raises(PassFailed, match="nothing deleted"):
        await sync(source, tmp_path, fanout_depth=0, allow_mass_delete=True)
    assert len(read_tree(tmp_path)) == 50


async def test_missing_bucket_fails_the_pass_as_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(PassFailed) as info:
        await sync(MemorySource(FILES, bucket_exists=False), tmp_path)
    assert isinstance(info.value.cause, SourceConfigError)


class StaleListing(MemorySource):
    """Lists ETags that are out of date, as a listing racing a rewrite can."""

    async def list_page(
        self, prefix: str, *, delimiter: bool, token: str | None, start_after: str | None = None
    ) -> ListPage:
        page = await super().list_page(prefix, delimiter=delimiter, token=token, start_after=start_after)
        stale = tuple(RemoteObject(o.key, "0" * 32, o.size) for o in page.objects)
        return ListPage(stale, page.prefixes, page.next_token)


async def test_conditional_get_answered_304_keeps_the_file(tmp_path: Path) -> None:
    await sync(MemorySource(FILES), tmp_path)
    source = StaleListing(FILES)
    report = await sync(source, tmp_path)
    assert (report.not_modified, report.downloaded) == (4, 0)
    assert source.counts["GET 304"] == 4


async def test_vanished_object_is_skipped_not_failed(tmp_path: Path) -> None:
    source = MemorySource(FILES)
    source.fault = lambda op, key: (
        (source.objects.pop(key), None)[1] if op == "GET" and key.endswith("a.py") else None
    )
    report = await sync(source, tmp_path)
    assert (report.vanished, report.failed, report.downloaded) == (1, 0, 3)


async def test_file_becoming_a_directory_converges_in_one_pass(tmp_path: Path) -> None:
    source = MemorySource({"dags/pkg": b"file", **{f"dags/k{i}.py": b"k" for i in range(4)}})
    await sync(source, tmp_path)
    del source.objects["dags/pkg"]
    source.put("dags/pkg/mod.py", b"module")
    report = await sync(source, tmp_path)
    assert (report.failed, report.deleted) == (0, 1)
    assert (tmp_path / "pkg" / "mod.py").read_bytes() == b"module"


async def test_directory_becoming_a_file_converges_in_one_pass(tmp_path: Path) -> None:
    source = MemorySource({"dags/pkg/mod.py": b"module", **{f"dags/k{i}.py": b"k" for i in range(4)}})
    await sync(source, tmp_path)
    del source.objects["dags/pkg/mod.py"]
    source.put("dags/pkg", b"file")
    report = await sync(source, tmp_path)
    assert report.failed == 0
    assert (tmp_path / "pkg").read_bytes() == b"file"


async def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    source = MemorySource(FILES)
    report = await sync(source, tmp_path / "d", dry_run=True)
    assert report.downloaded == 4
    assert not (tmp_path / "d").exists()
    assert "GET" not in source.counts


async def test_unmanaged_files_are_never_deleted_and_empty_dirs_go(tmp_path: Path) -> None:
    source = MemorySource(FILES)
    await sync(source, tmp_path)
    (tmp_path / "team" / "mine.txt").write_text("placed by hand")
    for key in ("dags/team/b.py", "dags/team/sub/c.py"):
        del source.objects[key]
    report = await sync(source, tmp_path, allow_mass_delete=True)
    assert {t.path for t in report.tombstones} == {"team/b.py", "team/sub/c.py"}
    assert (tmp_path / "team" / "mine.txt").exists()
    assert not (tmp_path / "team" / "sub").exists()


async def test_journal_makes_an_unrecorded_install_managed(tmp_path: Path) -> None:
    source = MemorySource(FILES)
    await sync(source, tmp_path)
    # What a kill -9 between rename and state write leaves: a file the journal names, the state does not.
    (tmp_path / "orphan.py").write_bytes(b"installed, never recorded")
    with (tmp_path / ".dagmirror" / "journal").open("a") as journal:
        journal.write("orphan.py\n")
    (tmp_path / "handmade.py").write_bytes(b"not ours")
    report = await sync(source, tmp_path)
    assert [t.path for t in report.tombstones] == ["orphan.py"]
    assert (tmp_path / "handmade.py").exists()


async def test_identical_unmanaged_files_are_adopted_without_get(tmp_path: Path) -> None:
    source = MemorySource(FILES)
    await sync(source, tmp_path)
    os.remove(tmp_path / ".dagmirror" / "state.json")
    source.counts.clear()
    report = await sync(source, tmp_path)
    assert (report.adopted, report.downloaded) == (4, 0)
    assert "GET" not in source.counts


async def test_a_second_mirror_on_the_same_dest_is_refused(tmp_path: Path) -> None:
    source = MemorySource(FILES)
    async with Mirror(config(tmp_path), source=source, sleep=no_sleep) as first:
        await first.sync_once()
        with pytest.raises(DestLocked):
            await sync(source, tmp_path)


async def test_corrupt_state_file_is_set_aside_and_rebuilt(tmp_path: Path) -> None:
    source = MemorySource(FILES)
    await sync(source, tmp_path)
    (tmp_path / ".dagmirror" / "state.json").write_bytes(b"{not json")
    report = await sync(source, tmp_path)
    assert (report.adopted, report.failed) == (4, 0)
    assert (tmp_path / ".dagmirror" / "state.corrupt").exists()


def md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


async def test_unusable_dest_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(InstallError, match=r"cannot use .* as destination"):
        await sync(MemorySource(FILES), tmp_path / "file" / "dags")


async def test_disk_full_keeps_existing_files_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = MemorySource(FILES)
    await sync(source, tmp_path)
    source.put("dags/a.py", b"a = 2\n")
    source.put("dags/new.py", b"new\n")
    real_write = os.write

    def full(fd: int, data: Any) -> int:
        if len(data) > 2 and bytes(data[:2]) in (b"a ", b"ne"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    report = await sync(source, tmp_path)
    assert report.failed == 2
    assert all("No space left on device" in f.error for f in report.failures)
    assert (tmp_path / "a.py").read_bytes() == b"a = 1\n"
    assert not (tmp_path / "new.py").exists()
    assert list((tmp_path / ".dagmirror" / "tmp").iterdir()) == []
    monkeypatch.setattr(os, "write", real_write)
    report = await sync(source, tmp_path)
    assert (report.failed, report.downloaded) == (0, 2)
    assert read_tree(tmp_path) == expected(source.objects)


async def test_no_task_of_a_failed_pass_outlives_it(tmp_path: Path) -> None:
    source = MemorySource(FILES, page_size=1)

    def fail_second_page(op: str, target: str) -> None:
        if op == "LIST" and source.counts["LIST"] > 2:
            raise SourceUnavailable("listing broke")

    source.fault = fail_second_page
    before = asyncio.all_tasks()
    with pytest.raises(PassFailed):
        await sync(source, tmp_path / "d", checkpoint_interval=0.05)
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before
