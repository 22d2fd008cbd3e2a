"""Mirroring releases (issue 11) against moto server over HTTP: the pointer poll, whole installs, the local
content store, the archive, and everything a listing pass guarantees, in releases mode."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dagmirror import Mirror, MirrorConfig, PassFailed
from dagmirror.devtools.servers import s3_env
from dagmirror.errors import SourceUnavailable
from dagmirror.manifest import body_key, sha256_hex
from dagmirror.models import SyncReport
from dagmirror.retry import RetryPolicy

from .helpers import dagmirror, no_sleep, put_all, read_tree, sdk_credentials
from .releases import publish

PREFIX = "dags/prod/"
R1 = {
    f"team{t}/dag_{i:02}.py": f"# team {t} dag {i}\n".encode() * (i + 1) for t in range(3) for i in range(8)
}
R1["common/helpers.py"] = b"def helper():\n    return 1\n"


@pytest.fixture(autouse=True)
def credentials() -> Iterator[None]:
    with sdk_credentials():
        yield


def config(bucket: str, endpoint: str, dest: Path, **kw: Any) -> MirrorConfig:
    kw.setdefault("retry", RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0))
    return MirrorConfig.create(f"s3://{bucket}/{PREFIX}", dest, endpoint_url=endpoint, fsync=False, **kw)


async def sync(bucket: str, endpoint: str, dest: Path, **kw: Any) -> SyncReport:
    async with Mirror(config(bucket, endpoint, dest, **kw), sleep=no_sleep) as mirror:
        return await mirror.sync_once()


def gets(report: SyncReport) -> int:
    return report.requests.get("GET 200", 0)


async def test_a_no_op_poll_is_exactly_one_request(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    release = publish(s3, bucket, PREFIX, R1)
    first = await sync(bucket, moto_endpoint, tmp_path)
    assert (first.mode, first.release, first.failed) == ("releases", release, 0)
    report = await sync(bucket, moto_endpoint, tmp_path)
    assert report.requests == {"GET 304": 1}
    assert (report.downloaded, report.unchanged, report.deleted, report.release) == (0, len(R1), 0, release)
    assert read_tree(tmp_path) == R1


async def test_a_new_release_installs_whole_and_deletes_what_it_dropped(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    publish(s3, bucket, PREFIX, R1)
    await sync(bucket, moto_endpoint, tmp_path)
    r2 = {k: v + b"# v2\n" for k, v in R1.items() if not k.startswith("team2/")}
    r2["team3/new.py"] = b"new = True\n"
    release = publish(s3, bucket, PREFIX, r2, seq=2)
    report = await sync(bucket, moto_endpoint, tmp_path)
    assert read_tree(tmp_path) == r2
    assert (report.release, report.release_seq, report.failed) == (release, 2, 0)
    assert {t.path for t in report.tombstones} == {k for k in R1 if k.startswith("team2/")}
    assert not (tmp_path / "team2").exists()


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
async def test_a_release_with_a_body_that_fails_forever_leaves_dest_at_the_previous_release(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path, damage: str
) -> None:
    first = publish(s3, bucket, PREFIX, R1)
    await sync(bucket, moto_endpoint, tmp_path)
    r2 = {**{k: v + b"# v2\n" for k, v in R1.items()}, "broken.py": b"never arrives\n"}
    publish(s3, bucket, PREFIX, r2, seq=2, archive=False)
    key = body_key(sha256_hex(b"never arrives\n"))
    if damage == "missing":
        s3.delete_object(Bucket=bucket, Key=key)
    else:
        s3.put_object(Bucket=bucket, Key=key, Body=b"never arrives!")
    with pytest.raises(PassFailed) as failed:
        await sync(bucket, moto_endpoint, tmp_path)
    assert "release not installed, DEST stays at release " + first in str(failed.value)
    assert sha256_hex(b"never arrives\n") in str(failed.value)
    assert read_tree(tmp_path) == R1
    with pytest.raises(PassFailed):  # every later pass tries again, and still moves nothing
        await sync(bucket, moto_endpoint, tmp_path)
    assert read_tree(tmp_path) == R1


async def test_renamed_copied_and_reverted_files_cost_no_get(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    publish(s3, bucket, PREFIX, R1)
    await sync(bucket, moto_endpoint, tmp_path)
    r2 = dict(R1)
    r2["renamed/helpers.py"] = r2.pop("common/helpers.py")  # renamed
    r2["team0/copy.py"] = R1["team1/dag_03.py"]  # copied
    r2["team0/dag_00.py"] = b"changed = 1\n"  # the one new body
    publish(s3, bucket, PREFIX, r2, seq=2)
    report = await sync(bucket, moto_endpoint, tmp_path)
    assert read_tree(tmp_path) == r2
    assert gets(report) == 3  # pointer, manifest, the one new body
    publish(s3, bucket, PREFIX, R1, seq=3)  # revert: the same manifest bytes but for seq, so a new release
    report = await sync(bucket, moto_endpoint, tmp_path)
    assert read_tree(tmp_path) == R1
    assert gets(report) == 2  # pointer and manifest: every body was still in the local content store


async def test_cold_start_takes_the_archive_one_get_for_all_bodies(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    publish(s3, bucket, PREFIX, R1)
    report = await sync(bucket, moto_endpoint, tmp_path)
    assert read_tree(tmp_path) == R1
    assert report.requests == {"GET 200": 3}  # pointer, manifest, archive
    assert report.downloaded == len(R1)


@pytest.mark.parametrize("concurrency", [1, 64])
async def test_an_archive_of_many_files_is_stored_whole_while_it_is_read_even_on_one_thread(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path, concurrency: int
) -> None:
    """Bodies go to the content store batch by batch on the pool while the archive is still read; with a
    pool of one thread that must not wait on itself. Every body is stored before anything is installed."""
    files = {f"t{i % 7}/f{i:04}.py": f"# {i}\n".encode() * (1 + i % 5) for i in range(700)}  # 3 batches
    publish(s3, bucket, PREFIX, files)
    dest = tmp_path / "dags"
    async with asyncio.timeout(60):
        report = await sync(bucket, moto_endpoint, dest, concurrency=concurrency)
    assert read_tree(dest) == files
    assert report.requests == {"GET 200": 3}
    stored = {p.name for p in (dest / ".dagmirror/bodies").iterdir()}
    assert {sha256_hex(b) for b in files.values()} <= stored


async def test_a_damaged_archive_falls_back_to_single_gets(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    release = publish(s3, bucket, PREFIX, R1)
    s3.put_object(Bucket=bucket, Key=f"metadata/releases/archives/{release}.tar.zst", Body=b"not zstd")
    report = await sync(bucket, moto_endpoint, tmp_path)
    assert read_tree(tmp_path) == R1
    assert report.failed == 0


async def test_hostile_manifest_paths_are_rejected_and_reported(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    hostile = {"../escape.py": b"x", ".dagmirror/state.json": b"{}", "a/./b.py": b"x", "bad\x1b[2J.py": b"x"}
    files = {"ok.py": b"ok\n", "pkg": b"file", "pkg/mod.py": b"dir wins\n", **hostile}
    publish(s3, bucket, PREFIX, files, archive=False)
    report = await sync(bucket, moto_endpoint, dest)
    assert read_tree(dest) == {"ok.py": b"ok\n", "pkg/mod.py": b"dir wins\n"}
    assert {r.key for r in report.rejections} == {PREFIX + p for p in (*hostile, "pkg")}
    assert report.rejected == 5
    assert report.failed == 0
    assert sorted(os.listdir(tmp_path)) == ["dest"]


async def test_drift_is_repaired_from_the_content_store_in_a_one_request_poll(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    publish(s3, bucket, PREFIX, R1)
    await sync(bucket, moto_endpoint, tmp_path)
    (tmp_path / "team0/dag_01.py").write_bytes(b"edited by hand")
    (tmp_path / "common/helpers.py").unlink()
    (tmp_path / "team1/dag_00.py").touch()  # stat changed, bytes the same: kept
    report = await sync(bucket, moto_endpoint, tmp_path)
    assert read_tree(tmp_path) == R1
    assert report.requests == {"GET 304": 1}
    assert (report.downloaded, report.restored) == (2, 2)


async def test_a_release_dropping_most_files_is_refused_whole(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    release = publish(s3, bucket, PREFIX, R1)
    await sync(bucket, moto_endpoint, tmp_path)
    publish(s3, bucket, PREFIX, {"team0/dag_00.py": b"changed\n"}, seq=2)
    report = await sync(bucket, moto_endpoint, tmp_path)
    assert report.guard is not None
    assert "refusing" in report.guard
    assert (report.release, report.downloaded, report.deleted) == (release, 0, 0)
    assert read_tree(tmp_path) == R1


async def test_a_prefix_without_releases_syncs_by_listing_as_today(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    put_all(s3, bucket, PREFIX, R1)
    objects = await sync(bucket, moto_endpoint, tmp_path / "objects", mode="objects")
    auto = await sync(bucket, moto_endpoint, tmp_path / "auto")
    assert read_tree(tmp_path / "auto") == read_tree(tmp_path / "objects") == R1
    assert (auto.mode, auto.release, auto.downloaded, auto.listed) == ("objects", None, len(R1), len(R1))
    # The same requests, plus the one pointer probe S3 answers NoSuchKey.
    assert auto.requests == {**objects.requests, "GET 404": 1}


async def test_mode_objects_forces_listing_when_the_prefix_has_releases(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    publish(s3, bucket, PREFIX, {"from_release.py": b"r\n"})
    put_all(s3, bucket, PREFIX, {"from_listing.py": b"l\n"})
    run = dagmirror(
        "sync", f"s3://{bucket}/{PREFIX}", tmp_path, "--mode", "objects", "--json", endpoint=moto_endpoint
    )
    assert run.code == 0, run.stderr
    assert read_tree(tmp_path) == {"from_listing.py": b"l\n"}
    assert run.report["mode"] == "objects"
    assert "GET 404" not in run.report["requests"]


async def test_mode_releases_fails_on_a_prefix_without_a_pointer(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    put_all(s3, bucket, PREFIX, R1)
    with pytest.raises(PassFailed, match="no release pointer"):
        await sync(bucket, moto_endpoint, tmp_path, mode="releases")
    assert read_tree(tmp_path) == {}


async def test_switching_an_objects_mirror_to_releases_gets_no_unchanged_body(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    put_all(s3, bucket, PREFIX, R1)
    await sync(bucket, moto_endpoint, tmp_path)
    publish(s3, bucket, PREFIX, {**R1, "team0/dag_00.py": b"v2\n"}, archive=False)
    report = await sync(bucket, moto_endpoint, tmp_path)
    assert read_tree(tmp_path) == {**R1, "team0/dag_00.py": b"v2\n"}
    assert gets(report) == 3
    assert report.adopted == len(R1) - 1


def test_cli_json_names_the_release_and_a_failed_release_exits_1(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    release = publish(s3, bucket, PREFIX, R1)
    run = dagmirror("sync", f"s3://{bucket}/{PREFIX}", tmp_path, "--json", endpoint=moto_endpoint)
    assert run.code == 0, run.stderr
    assert (run.report["mode"], run.report["release"], run.report["release_seq"]) == ("releases", release, 1)
    publish(s3, bucket, PREFIX, {**R1, "x.py": b"gone\n"}, seq=2, archive=False)
    s3.delete_object(Bucket=bucket, Key=body_key(sha256_hex(b"gone\n")))
    run = dagmirror("sync", f"s3://{bucket}/{PREFIX}", tmp_path, "--json", endpoint=moto_endpoint)
    assert run.code == 1
    assert f"DEST stays at release {release}" in run.stderr
    assert read_tree(tmp_path) == R1


KILLER = """
import os, runpy, signal, sys
from dagmirror.install import Tree
real, done = Tree.install_many, [0]
def install_many(self, items):
    left = int(os.environ["KILL_AT"]) - done[0]
    if left <= len(items):  # install what comes before the kill, then die in the middle of the batch
        real(self, items[: left - 1])
        os.kill(os.getpid(), signal.SIGKILL)
    done[0] += len(items)
    return real(self, items)
Tree.install_many = install_many
sys.argv = ["dagmirror", *sys.argv[1:]]
runpy.run_module("dagmirror", run_name="__main__")
"""


def test_kill_9_mid_burst_leaves_whole_files_and_the_next_pass_converges_without_a_body_get(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    """A kill -9 after 100 of 200 installs of a release: every file is one release's or the other's, never
    torn; the next pass finishes the release from the content store (pointer GET only)."""
    r1 = {f"t{i % 4}/f{i:03}.py": f"# v1 {i}\n".encode() * 20 for i in range(200)}
    r2 = {p: b.replace(b"v1", b"v2") for p, b in r1.items()}
    publish(s3, bucket, PREFIX, r1)
    dest = tmp_path / "dags"
    assert dagmirror("sync", f"s3://{bucket}/{PREFIX}", dest, endpoint=moto_endpoint).code == 0
    release = publish(s3, bucket, PREFIX, r2, seq=2)
    cmd = [sys.executable, "-c", KILLER, "sync", f"s3://{bucket}/{PREFIX}", str(dest)]
    cmd += ["--endpoint-url", moto_endpoint]
    child = subprocess.run(
        cmd, env={**s3_env(moto_endpoint), "KILL_AT": "100"}, capture_output=True, timeout=60, check=False
    )
    assert child.returncode == -9, child.stderr
    tree = read_tree(dest)
    assert set(tree) == set(r1)
    assert all(body in (r1[p], r2[p]) for p, body in tree.items())  # nothing torn
    assert 0 < sum(tree[p] == r2[p] for p in tree) < len(r2)  # killed mid-burst
    report = cli_sync(bucket, moto_endpoint, dest)
    assert read_tree(dest) == r2
    assert (report["release"], report["requests"]) == (release, {"GET 200": 1})
    assert list((dest / ".dagmirror/tmp").iterdir()) == []


def cli_sync(bucket: str, endpoint: str, dest: Path) -> dict[str, Any]:
    run = dagmirror("sync", f"s3://{bucket}/{PREFIX}", dest, "--json", endpoint=endpoint)
    assert run.code == 0, run.stderr
    return run.report


async def test_a_dry_run_of_a_release_counts_what_would_change_and_changes_nothing(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    publish(s3, bucket, PREFIX, R1)
    await sync(bucket, moto_endpoint, tmp_path)
    state = (tmp_path / ".dagmirror/state.json").read_bytes()
    r2 = {k: v for k, v in R1.items() if k != "common/helpers.py"} | {"team0/dag_00.py": b"v2\n"}
    release = publish(s3, bucket, PREFIX, r2, seq=2)
    report = await sync(bucket, moto_endpoint, tmp_path, dry_run=True)
    assert (report.dry_run, report.release, report.downloaded, report.deleted) == (True, release, 1, 1)
    assert gets(report) == 2  # pointer and manifest, no body
    assert read_tree(tmp_path) == R1
    assert (tmp_path / ".dagmirror/state.json").read_bytes() == state


async def test_a_damaged_content_store_entry_is_never_installed_and_is_fetched_again(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    publish(s3, bucket, PREFIX, R1)
    await sync(bucket, moto_endpoint, tmp_path)
    body = R1["common/helpers.py"]
    (tmp_path / ".dagmirror/bodies" / sha256_hex(body)).write_bytes(body[:-1] + b"!")  # torn or altered
    (tmp_path / "common/helpers.py").unlink()
    report = await sync(bucket, moto_endpoint, tmp_path)
    assert read_tree(tmp_path) == R1
    assert report.requests == {"GET 304": 1, "GET 200": 1}  # the pointer, then the body from the bucket
    assert (tmp_path / ".dagmirror/bodies" / sha256_hex(body)).read_bytes() == body


async def test_wait_for_source_in_releases_mode_waits_for_the_pointer(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    put_all(s3, bucket, PREFIX, R1)  # plain files are there, no release yet
    async with Mirror(config(bucket, moto_endpoint, tmp_path, mode="releases"), sleep=no_sleep) as mirror:
        with pytest.raises(SourceUnavailable, match="has no release pointer"):
            await mirror.wait_for_source(0.2)
        publish(s3, bucket, PREFIX, R1)
        await mirror.wait_for_source(0.2)


async def test_wait_for_source_in_auto_mode_takes_a_release_pointer_without_plain_files(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    """A prefix that only ever received releases (no plain file under it) is ready once its pointer is."""
    async with Mirror(config(bucket, moto_endpoint, tmp_path, mode="auto"), sleep=no_sleep) as mirror:
        with pytest.raises(SourceUnavailable, match="lists no objects and has no release pointer"):
            await mirror.wait_for_source(0.2)
        publish(s3, bucket, PREFIX, R1)
        assert not s3.list_objects_v2(Bucket=bucket, Prefix=PREFIX).get("Contents")
        await mirror.wait_for_source(0.2)


async def test_going_back_to_listing_adopts_the_release_files_without_a_get(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    publish(s3, bucket, PREFIX, R1)
    put_all(s3, bucket, PREFIX, R1)  # the plain files a deploy keeps in step
    await sync(bucket, moto_endpoint, tmp_path)
    report = await sync(bucket, moto_endpoint, tmp_path, mode="objects")
    assert (report.mode, report.release, report.adopted, gets(report)) == ("objects", None, len(R1), 0)
    assert read_tree(tmp_path) == R1
    again = await sync(bucket, moto_endpoint, tmp_path, mode="objects")
    assert (again.unchanged, gets(again)) == (len(R1), 0)
