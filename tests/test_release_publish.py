"""Publishing releases (docs/releases.md): conditional writes, the probe, bodies/manifest/archive then the
pointer as a compare-and-swap, concurrent deploys, rollback and promote as pointer moves. S3 behaviour
against the moto server over HTTP; pure logic over MemoryStore."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from dagmirror.archive import read_archive
from dagmirror.config.deploy import DeployConfig, load_deploy_config
from dagmirror.deploy import Deployer, DeployReport
from dagmirror.deploy.release import rebase
from dagmirror.errors import ConfigError, PreconditionFailed, ReleaseConflict
from dagmirror.manifest import (
    PROBE_KEY,
    FileEntry,
    archive_key,
    body_key,
    manifest_key,
    parse_manifest,
    parse_pointer,
    pointer_key,
    sha256_hex,
)
from dagmirror.retry import RetryPolicy
from dagmirror.source.memory import MemoryStore
from dagmirror.source.store import S3Store

from .helpers import no_sleep, put_all, sdk_credentials, write_tree

PREFIX = "dags/dev/"
FILES = {"a.py": b"a = 1\n", "team/b.py": b"b = 2\n", "team/sql/q.sql": b"select 1;\n"}


def config(bucket: str = "bkt", endpoint: str | None = None, **changes: Any) -> DeployConfig:
    flags = {"bucket_url": f"s3://{bucket}/dags/", "endpoint_url": endpoint}
    base = load_deploy_config(None, {}, {k: v for k, v in flags.items() if v})
    return replace(base, retry=RetryPolicy(attempts=3), sts=False, **changes)


async def deploy(store: Any, paths: list[Path], env: str = "dev", **kw: Any) -> DeployReport:
    cfg = kw.pop("cfg", None) or config()
    async with Deployer(cfg, store=store, sleep=no_sleep, user="alice", host="laptop") as deployer:
        return await deployer.deploy(paths, env, **kw)


def release_of(store: MemoryStore, prefix: str = PREFIX) -> tuple[Any, dict[str, FileEntry]]:
    live = store.live()
    pointer = parse_pointer(live[pointer_key(prefix)], prefix=prefix)
    checked = parse_manifest(live[manifest_key(pointer.release)], release_id=pointer.release, prefix=prefix)
    return pointer, dict(checked.manifest.files)


def tree_of(files: dict[str, bytes]) -> dict[str, FileEntry]:
    return {p: FileEntry(sha256_hex(b), len(b)) for p, b in files.items()}


# -- conditional writes against a real server --------------------------------------------------------------
async def test_s3store_conditional_puts_raise_precondition_failed_on_moto(
    bucket: str, moto_endpoint: str
) -> None:
    with sdk_credentials():
        store = await S3Store.open(bucket, endpoint_url=moto_endpoint, region="us-east-1", profile=None)
    try:
        await store.put("k", b"one", if_none_match="*")
        with pytest.raises(PreconditionFailed):
            await store.put("k", b"two", if_none_match="*")
        with pytest.raises(PreconditionFailed):
            await store.put("k", b"two", if_match="0" * 32)
        head = await store.head("k")
        assert head is not None
        await store.put("k", b"two", if_match=head.etag)  # the ETag it holds: the swap happens
        with pytest.raises(PreconditionFailed):  # moto answers 404 here, AWS 412: the same to us
            await store.put("absent", b"x", if_match=head.etag)
        assert store.request_counts()["PUT 412"] == 2
    finally:
        await store.aclose()


# -- one deploy publishes ------------------------------------------------------------------------------------
def test_a_deploy_publishes_bodies_manifest_archive_and_pointer_then_plain_files_on_moto(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    async def go() -> DeployReport:
        with sdk_credentials():
            return await deploy(None, [write_tree(tmp_path, FILES)], cfg=config(bucket, moto_endpoint))

    report = asyncio.run(go())

    def get(key: str) -> bytes:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    pointer = parse_pointer(get(pointer_key(PREFIX)), prefix=PREFIX)
    assert (pointer.release, pointer.seq, pointer.files) == (report.release, 1, 3)
    manifest = parse_manifest(get(manifest_key(pointer.release)), release_id=pointer.release, prefix=PREFIX)
    assert dict(manifest.manifest.files) == tree_of(FILES)
    assert manifest.manifest.who == {"user": "alice", "identity": None}
    for body in FILES.values():
        assert get(body_key(sha256_hex(body))) == body
    archive = get(archive_key(pointer.release))
    assert pointer.archive_size == len(archive)
    files = manifest.manifest.files
    assert read_archive(archive, files, sum(e.size for e in files.values())) == {
        sha256_hex(b): b for b in FILES.values()
    }
    assert {p: get(PREFIX + p) for p in FILES} == FILES  # the plain files, in step
    record = orjson.loads(get(str(report.record_key)))
    assert (record["release"], record["pointer_seq"]) == (pointer.release, 1)


async def test_a_second_deploy_uploads_only_the_new_body_and_chains_the_release(tmp_path: Path) -> None:
    store = MemoryStore()
    first = await deploy(store, [write_tree(tmp_path, FILES)])
    (tmp_path / "a.py").write_bytes(b"a = 2\n")
    store.counts.clear()
    second = await deploy(store, [tmp_path])
    pointer, files = release_of(store)
    assert (pointer.seq, pointer.release) == (2, second.release)
    assert files == tree_of(FILES | {"a.py": b"a = 2\n"})
    body_puts = [k for k in store.history if k.startswith("metadata/releases/bodies/")]
    assert len(body_puts) == 4  # three bodies, then only the new one
    manifest = store.live()[manifest_key(pointer.release)]
    assert orjson.loads(manifest)["parent"] == first.release
    # probe (412), HEAD of the new body + its PUT, manifest, archive, pointer, plain file, record
    assert store.counts["PUT"] == 7


async def test_an_existing_bucket_switches_to_releases_with_one_deploy_that_changes_nothing(
    tmp_path: Path,
) -> None:
    store = MemoryStore({PREFIX + p: b for p, b in FILES.items()} | {PREFIX + "other.py": b"o = 1\n"})
    report = await deploy(store, [write_tree(tmp_path, {"a.py": FILES["a.py"]}) / "a.py"])
    assert report.result == "ok"
    assert report.pointer_seq == 1
    _, files = release_of(store)
    assert files == tree_of(FILES | {"other.py": b"o = 1\n"})  # the live plain files, hashed
    again = await deploy(store, [tmp_path / "a.py"])
    assert (again.result, again.release) == ("unchanged", None)  # a no-op again once it has releases


# -- servers that ignore conditional writes ----------------------------------------------------------------
async def test_a_server_ignoring_conditional_writes_is_refused_and_nothing_is_published(
    tmp_path: Path,
) -> None:
    store = MemoryStore(conditional_writes=False)
    with pytest.raises(ConfigError, match=r"ignores conditional writes .*--allow-no-conditional-writes"):
        await deploy(store, [write_tree(tmp_path, FILES)])
    assert set(store.live()) == {PROBE_KEY}  # no body, manifest, pointer, plain file or record
    report = await deploy(store, [tmp_path], cfg=config(allow_no_conditional_writes=True))
    assert report.pointer_seq == 1
    assert any("without compare-and-swap" in w for w in report.validation["warnings"])


async def test_a_server_honouring_conditional_writes_costs_one_probe_request(tmp_path: Path) -> None:
    store = MemoryStore()
    await deploy(store, [write_tree(tmp_path, FILES)])
    (tmp_path / "a.py").write_bytes(b"a = 3\n")
    store.counts.clear()
    await deploy(store, [tmp_path])
    assert store.counts["PUT 412"] == 1


# -- concurrent deploys ------------------------------------------------------------------------------------
def test_rebase_replays_disjoint_changes_and_names_overlapping_ones() -> None:
    base = tree_of({"a.py": b"1", "b.py": b"1"})
    mine = tree_of({"a.py": b"2", "b.py": b"1"})
    theirs = tree_of({"a.py": b"1", "b.py": b"1", "c.py": b"3"})
    assert rebase(base, mine, theirs) == tree_of({"a.py": b"2", "b.py": b"1", "c.py": b"3"})
    assert rebase(base, mine, tree_of({"a.py": b"9", "b.py": b"1"})) == ["a.py"]
    assert rebase(base, mine | tree_of({"pkg": b"x"}), theirs | tree_of({"pkg/m.py": b"y"})) == ["pkg"]


async def race(bucket: str, endpoint: str, trees: list[Path], paths: list[list[Path]]) -> list[Any]:
    """Two Deployers, each with its own S3Store, held at their pointer write until both got there."""
    arrived = 0
    both = asyncio.Event()

    async def one(paths_: list[Path]) -> Any:
        nonlocal arrived
        store = await S3Store.open(bucket, endpoint_url=endpoint, region="us-east-1", profile=None)
        put = store.put

        async def held(key: str, body: bytes, **kw: Any) -> str | None:
            nonlocal arrived
            if key == pointer_key(PREFIX) and len(paths) > 1 and not both.is_set():
                arrived += 1
                if arrived == 2:
                    both.set()
                await asyncio.wait_for(both.wait(), 90)  # generous: a loaded CI machine is slow
            return await put(key, body, **kw)

        store.put = held  # type: ignore[method-assign]
        try:
            return await deploy(store, paths_, cfg=config(bucket, endpoint))
        finally:
            await store.aclose()

    with sdk_credentials():
        return await asyncio.gather(*(one(p) for p in paths), return_exceptions=True)


def test_two_concurrent_deploys_of_disjoint_files_both_land_in_one_release_on_moto(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    put_all(s3, bucket, PREFIX, FILES)
    one = write_tree(tmp_path / "one", {"x.py": b"x = 1\n"}) / "x.py"
    two = write_tree(tmp_path / "two", {"y.py": b"y = 1\n"}) / "y.py"
    switch = write_tree(tmp_path / "z", {"a.py": FILES["a.py"]}) / "a.py"
    first_release = asyncio.run(race(bucket, moto_endpoint, [], [[switch]]))
    assert first_release[0].pointer_seq == 1  # the bucket switched to releases
    results = asyncio.run(race(bucket, moto_endpoint, [], [[one], [two]]))
    assert all(isinstance(r, DeployReport) for r in results), results
    assert sorted(r.pointer_seq for r in results) == [2, 3]
    body = s3.get_object(Bucket=bucket, Key=pointer_key(PREFIX))["Body"].read()
    pointer = parse_pointer(body, prefix=PREFIX)
    manifest = s3.get_object(Bucket=bucket, Key=manifest_key(pointer.release))["Body"].read()
    files = parse_manifest(manifest, release_id=pointer.release, prefix=PREFIX).manifest.files
    assert set(files) == set(FILES) | {"x.py", "y.py"}


def test_two_concurrent_deploys_of_the_same_file_one_wins_the_other_publishes_nothing_on_moto(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    put_all(s3, bucket, PREFIX, FILES)
    asyncio.run(
        race(bucket, moto_endpoint, [], [[write_tree(tmp_path / "z", {"a.py": FILES["a.py"]}) / "a.py"]])
    )
    one = write_tree(tmp_path / "one", {"a.py": b"a = 'one'\n"}) / "a.py"
    two = write_tree(tmp_path / "two", {"a.py": b"a = 'two'\n"}) / "a.py"
    results = asyncio.run(race(bucket, moto_endpoint, [], [[one], [two]]))
    assert sorted(type(r).__name__ for r in results) == ["DeployReport", "ReleaseConflict"], results
    (won,) = [r for r in results if isinstance(r, DeployReport)]
    (lost,) = [r for r in results if isinstance(r, ReleaseConflict)]
    assert "changed the same paths (a.py)" in str(lost)
    pointer = parse_pointer(
        s3.get_object(Bucket=bucket, Key=pointer_key(PREFIX))["Body"].read(), prefix=PREFIX
    )
    assert (pointer.release, pointer.seq) == (won.release, 2)
    plain = s3.get_object(Bucket=bucket, Key=PREFIX + "a.py")["Body"].read()
    assert plain == (one if won is results[0] else two).read_bytes()  # the loser wrote no plain file


# -- rollback and promote ----------------------------------------------------------------------------------
async def test_rollback_by_deploy_or_release_id_moves_the_pointer_and_copies_no_body(tmp_path: Path) -> None:
    store = MemoryStore(versioned=False)  # exact rollback needs no bucket versioning any more
    first = await deploy(store, [write_tree(tmp_path, FILES)])
    (tmp_path / "a.py").write_bytes(b"a = 2\n")
    (tmp_path / "team/b.py").unlink()
    await deploy(store, [tmp_path], cfg=config(allow_mass_delete=True))
    bodies = {k for k in store.history if "/bodies/" in k}
    store.counts.clear()
    async with Deployer(config(), store=store, sleep=no_sleep) as deployer:
        back = await deployer.rollback("dev", first.deploy_id)
    pointer, _files = release_of(store)
    assert (pointer.release, pointer.seq, back.pointer_seq) == (first.release, 3, 3)
    assert {k.removeprefix(PREFIX): v for k, v in store.live().items() if k.startswith(PREFIX)} == FILES
    assert back.counts()["copy"] == 2
    assert back.counts()["unchanged"] == 1
    assert {k for k in store.history if "/bodies/" in k} == bodies
    assert not any(k.startswith("metadata/releases/manifests/") for k in store.counts)
    async with Deployer(config(), store=store, sleep=no_sleep) as deployer:
        again = await deployer.rollback("dev", str(first.release))  # by release id: already live
    assert (again.result, again.pointer_seq) == ("unchanged", None)
    assert release_of(store)[0].seq == 3


async def test_rollback_to_a_deploy_from_before_releases_is_refused_once_the_env_has_releases(
    tmp_path: Path,
) -> None:
    store = MemoryStore()
    old = await deploy(store, [write_tree(tmp_path, FILES)], cfg=config(releases=False))
    (tmp_path / "a.py").write_bytes(b"a = 2\n")
    await deploy(store, [tmp_path])
    async with Deployer(config(), store=store, sleep=no_sleep) as deployer:
        with pytest.raises(ConfigError, match=f"deploy {old.deploy_id} predates releases in dev"):
            await deployer.rollback("dev", old.deploy_id)


async def test_promote_publishes_the_source_release_for_the_target_with_the_same_bodies(
    tmp_path: Path,
) -> None:
    store = MemoryStore()
    await deploy(store, [write_tree(tmp_path, FILES)], env="staging")
    bodies = {k for k in store.history if "/bodies/" in k}
    async with Deployer(config(), store=store, sleep=no_sleep) as deployer:
        report = await deployer.promote("staging", "production")
    _, source = release_of(store, "dags/staging/")
    pointer, target = release_of(store, "dags/production/")
    assert target == source
    assert pointer.release == report.release
    assert pointer.seq == 1
    assert {k for k in store.history if "/bodies/" in k} == bodies  # no body written
    live = store.live()
    assert {p: live["dags/production/" + p] for p in FILES} == FILES


async def test_promote_refuses_a_body_that_does_not_match_its_hash(tmp_path: Path) -> None:
    store = MemoryStore()
    await deploy(store, [write_tree(tmp_path, FILES)], env="staging")
    key = body_key(sha256_hex(FILES["a.py"]))
    store.history[key][-1].body = b"a = 666\n"
    async with Deployer(config(), store=store, sleep=no_sleep) as deployer:
        with pytest.raises(Exception, match="does not match its SHA-256"):
            await deployer.promote("staging", "production")
    assert pointer_key("dags/production/") not in store.live()


async def test_history_shows_the_release_of_each_deploy(tmp_path: Path) -> None:
    store = MemoryStore()
    report = await deploy(store, [write_tree(tmp_path, FILES)])
    async with Deployer(config(), store=store, sleep=no_sleep) as deployer:
        (line,) = await deployer.history("dev")
    assert (line["release"], line["pointer_seq"]) == (report.release, 1)
