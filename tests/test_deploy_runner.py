"""`Deployer` over the in-memory versioned store: the pipeline without a network (S3: test_deploy_s3.py)."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from dagmirror.config.deploy import DeployConfig, EnvPolicy
from dagmirror.deploy import Deployer, DeployReport, load_deploy_config
from dagmirror.deploy.local import git_info, read_local
from dagmirror.errors import ConfigError, DeployRefused, GuardRefused, SourceUnavailable
from dagmirror.keys import PathFilter
from dagmirror.retry import RetryPolicy
from dagmirror.source.memory import MemoryStore
from dagmirror.verify import xxh3_hex

from .helpers import git, no_sleep, write_tree

PREFIX = "dags/dev/"
ARN = "arn:aws:sts::123456789012:user/alice"


def md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


def config(**changes: Any) -> DeployConfig:
    base = load_deploy_config(None, {}, {"bucket_url": "s3://bkt/dags/"})
    return replace(base, retry=RetryPolicy(attempts=3), **changes)


async def deploy(store: MemoryStore, paths: list[Path], env: str = "dev", **kw: Any) -> DeployReport:
    cfg = kw.pop("cfg", None) or config()
    async with Deployer(cfg, store=store, sleep=no_sleep, user="alice", host="laptop") as deployer:
        return await deployer.deploy(paths, env, **kw)


def records(store: MemoryStore) -> list[dict[str, Any]]:
    return [
        orjson.loads(body)
        for key, body in sorted(store.live().items())
        if key.startswith("metadata/deploys/")
    ]


FILES = {"a.py": b"a = 1\n", "team/b.py": b"b = 2\n", "team/sql/q.sql": b"select 1;\n"}


async def test_a_directory_deploy_uploads_with_xxh3_metadata_and_records_the_live_versions(
    tmp_path: Path,
) -> None:
    store = MemoryStore(identity=ARN)
    report = await deploy(store, [write_tree(tmp_path, FILES)])
    assert {k.removeprefix(PREFIX): v for k, v in store.live().items() if k.startswith(PREFIX)} == FILES
    for rel, body in FILES.items():
        assert store.history[PREFIX + rel][-1].metadata == {"xxh3": xxh3_hex(body)}
    (record,) = records(store)
    assert record["deploy_id"] == report.deploy_id
    assert (record["kind"], record["env"], record["result"], record["scopes"]) == (
        "deploy",
        "dev",
        "ok",
        [""],
    )
    assert record["who"] == {"user": "alice", "identity": ARN}
    assert record["host"] == "laptop"
    assert {f["path"]: f["version_id"] for f in record["files"]} == {
        rel: store.history[PREFIX + rel][-1].version_id for rel in FILES
    }
    assert {f["action"] for f in record["files"]} == {"upload"}
    assert record["validation"]["python_files"] == 2


async def test_redeploying_unchanged_files_writes_nothing_not_even_a_record(tmp_path: Path) -> None:
    store = MemoryStore()
    await deploy(store, [write_tree(tmp_path, FILES)])
    store.counts.clear()
    report = await deploy(store, [tmp_path])
    assert report.result == "unchanged"
    assert report.record_key is None
    assert store.counts["PUT"] == store.counts["COPY"] == store.counts["DELETE"] == 0
    assert {f.action for f in report.files} == {"unchanged"}


async def test_on_a_kms_bucket_unchanged_files_are_recognised_by_their_xxh3_metadata(tmp_path: Path) -> None:
    store = MemoryStore(opaque_etags=True)  # ETags are not MD5s, as with SSE-KMS
    await deploy(store, [write_tree(tmp_path, FILES)])
    store.counts.clear()
    report = await deploy(store, [tmp_path])
    assert (report.result, store.counts["HEAD"], store.counts["PUT"]) == ("unchanged", 3, 0)
    (tmp_path / "a.py").write_bytes(b"a = 9\n")  # same size, new content
    report = await deploy(store, [tmp_path])
    assert report.counts()["upload"] == 1


async def test_a_write_that_keeps_failing_is_retried_reported_and_blocks_deletes(tmp_path: Path) -> None:
    store = MemoryStore()
    await deploy(store, [write_tree(tmp_path, FILES)])
    before = store.history[PREFIX + "a.py"][-1].version_id
    attempts: list[str] = []

    def flaky(op: str, key: str) -> None:
        if op == "PUT" and key == PREFIX + "a.py":
            attempts.append(key)
            raise SourceUnavailable("503 SlowDown")

    store.fault = flaky
    (tmp_path / "a.py").write_bytes(b"a = 2  # changed\n")
    (tmp_path / "team/b.py").write_bytes(b"b = 3  # changed\n")
    (tmp_path / "team/sql/q.sql").unlink()
    report = await deploy(store, [tmp_path])
    assert len(attempts) == 3  # the RetryPolicy's attempts
    assert report.result == "partial"
    by_path = {f.path: f for f in report.files}
    assert (by_path["a.py"].action, by_path["a.py"].version_id) == ("failed", before)
    assert "SlowDown" in str(by_path["a.py"].error)
    assert by_path["team/b.py"].action == "upload"
    assert by_path["team/sql/q.sql"].action == "unchanged"  # the delete waits for a complete deploy
    assert PREFIX + "team/sql/q.sql" in store.live()
    (_, record) = records(store)
    assert record["result"] == "partial"
    assert {f["path"]: f["version_id"] for f in record["files"]} == {
        rel: store.history[PREFIX + rel][-1].version_id for rel in FILES
    }


async def test_a_write_whose_answer_was_lost_is_recorded_with_the_version_that_landed(tmp_path: Path) -> None:
    store = MemoryStore()
    put = store.put

    async def lost_answer(
        key: str, body: bytes, *, metadata: dict[str, str] | None = None, **conditions: Any
    ) -> str | None:
        await put(key, body, metadata=metadata, **conditions)
        if key.startswith(PREFIX):
            raise SourceUnavailable("connection reset after the upload")
        return None

    store.put = lost_answer  # type: ignore[method-assign]
    report = await deploy(store, [write_tree(tmp_path, {"a.py": b"a = 1\n"})])
    (result,) = report.files
    assert (result.action, result.version_id) == ("upload", store.history[PREFIX + "a.py"][-1].version_id)
    assert report.result == "ok"


async def test_a_dry_run_validates_and_plans_but_writes_nothing(tmp_path: Path) -> None:
    store = MemoryStore()
    report = await deploy(store, [write_tree(tmp_path, FILES)], dry_run=True)
    assert (report.result, report.counts()["upload"]) == ("dry-run", 3)
    assert store.live() == {}
    with pytest.raises(DeployRefused):
        await deploy(store, [write_tree(tmp_path, {"bad.py": b"def (\n"})], dry_run=True)


async def test_a_syntax_error_refuses_the_whole_deploy_before_any_request_is_made(tmp_path: Path) -> None:
    store = MemoryStore()
    with pytest.raises(DeployRefused) as caught:
        await deploy(store, [write_tree(tmp_path, FILES | {"team/bad.py": b"x = 1\nif x\n"})])
    assert caught.value.problems == ("team/bad.py:2: expected ':'",)
    assert not store.counts  # not even a listing: local problems need no bucket


async def test_budgets_count_the_files_already_in_the_environment(tmp_path: Path) -> None:
    store = MemoryStore({PREFIX + f"old{i}.py": b"x" for i in range(3)})
    cfg = config(policies={"dev": EnvPolicy(max_files=4, max_file_bytes=100)})
    files = write_tree(tmp_path, {"a.py": b"1", "b.py": b"2"})
    with pytest.raises(DeployRefused) as caught:
        await deploy(store, [files / "a.py", files / "b.py"], cfg=cfg)
    assert caught.value.problems == ("dev would hold 5 files, over its budget of 4",)
    with pytest.raises(DeployRefused, match="over the dev budget of 100 bytes"):
        await deploy(store, [write_tree(tmp_path, {"big.py": b"#" * 101}) / "big.py"], cfg=cfg)
    assert store.counts["PUT"] == 0


async def test_a_file_that_would_collide_with_a_folder_already_deployed_is_refused(tmp_path: Path) -> None:
    store = MemoryStore({PREFIX + "pkg/mod.py": b"m = 1\n"})
    with pytest.raises(DeployRefused, match=r"pkg/mod.py \(already in dev\): path is under file 'pkg'"):
        await deploy(store, [write_tree(tmp_path, {"pkg": b"oops"}) / "pkg"])


async def test_mass_removal_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    store = MemoryStore()
    await deploy(store, [write_tree(tmp_path, {f"f{i}.py": b"x = 1\n" for i in range(4)})])
    for i in range(3):
        (tmp_path / f"f{i}.py").unlink()
    (tmp_path / "new.py").write_bytes(b"n = 1\n")
    store.counts.clear()
    with pytest.raises(GuardRefused, match="would delete 3 of the 4 files"):
        await deploy(store, [tmp_path])
    assert store.counts["PUT"] == store.counts["DELETE"] == 0
    report = await deploy(store, [tmp_path], cfg=config(allow_mass_delete=True))
    assert report.counts() | {"unchanged": 0} == {
        "upload": 1,
        "copy": 0,
        "unchanged": 0,
        "delete": 3,
        "failed": 0,
    }


async def test_rollback_needs_versioning_and_changes_nothing_without_it(tmp_path: Path) -> None:
    store = MemoryStore(versioned=False)
    old = config(releases=False)  # the versioned path: a deploy from before releases
    report = await deploy(store, [write_tree(tmp_path, FILES)], cfg=old)
    store.counts.clear()
    async with Deployer(old, store=store, sleep=no_sleep) as deployer:
        with pytest.raises(
            ConfigError, match=r"rollback needs versioning on s3://bkt \(it is off\); nothing"
        ):
            await deployer.rollback("dev", report.deploy_id)
    assert store.counts["PUT"] == store.counts["COPY"] == 0


async def test_rollback_refuses_when_a_recorded_version_has_expired(tmp_path: Path) -> None:
    store = MemoryStore()
    old = config(releases=False)  # the versioned path: deploys from before releases
    first = await deploy(store, [write_tree(tmp_path, {"a.py": b"v = 1\n"})], cfg=old)
    (tmp_path / "a.py").write_bytes(b"v = 22\n")
    await deploy(store, [tmp_path], cfg=old)
    del store.history[PREFIX + "a.py"][0]  # a lifecycle rule expired the noncurrent version
    store.counts.clear()
    async with Deployer(old, store=store, sleep=no_sleep) as deployer:
        with pytest.raises(DeployRefused, match=r"a\.py: version \S+ no longer exists"):
            await deployer.rollback("dev", first.deploy_id)
    assert store.counts["COPY"] == store.counts["PUT"] == 0


async def test_rollback_to_an_unknown_deploy_is_a_usage_error(tmp_path: Path) -> None:
    async with Deployer(config(), store=MemoryStore(), sleep=no_sleep) as deployer:
        with pytest.raises(ConfigError, match="no deploy 0123456789ab in dev"):
            await deployer.rollback("dev", "0123456789ab")
        with pytest.raises(ConfigError, match="12 hex digits"):
            await deployer.rollback("dev", "../../x")


async def test_promote_refuses_content_that_fails_verification(tmp_path: Path) -> None:
    store = MemoryStore()
    old = config(releases=False)  # the plain-file path (promote from an environment without releases)
    await deploy(store, [write_tree(tmp_path, FILES)], env="staging", cfg=old)
    tampered = store.history["dags/staging/a.py"][-1]
    evil = b"a = 666\n"  # a plain PUT that kept the old x-amz-meta-xxh3
    store.history["dags/staging/a.py"].append(
        replace(tampered, body=evil, etag=md5(evil), version_id="v-evil")
    )
    async with Deployer(old, store=store, sleep=no_sleep) as deployer:
        with pytest.raises(DeployRefused, match=r"a\.py: .*xxh3 \S+ does not match x-amz-meta-xxh3"):
            await deployer.promote("staging", "production")
    assert not any(k.startswith("dags/production/") for k in store.live())


async def test_history_lists_newest_first_and_survives_an_unreadable_record(tmp_path: Path) -> None:
    store = MemoryStore()
    clock = iter([1_700_000_000.0, 1_700_000_100.0])
    async with Deployer(config(), store=store, sleep=no_sleep, clock=lambda: next(clock)) as deployer:
        first = await deployer.deploy([write_tree(tmp_path, {"a.py": b"1"})], "dev")
        (tmp_path / "a.py").write_bytes(b"22")
        second = await deployer.deploy([tmp_path], "dev")
        await store.put("metadata/deploys/dev/20000101T000000.000000Z-badbadbadbad.json", b"{")
        listed = await deployer.history("dev")
    assert [d["deploy_id"] for d in listed] == [second.deploy_id, first.deploy_id, "badbadbadbad"]
    assert "unreadable record" in listed[2]["error"]
    assert listed[0]["counts"]["upload"] == 1


# -- the local side ----------------------------------------------------------------------------------------
def test_folders_skip_vcs_and_bytecode_and_refuse_symlinks(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "dags", {"a.py": b"a", ".git/HEAD": b"ref", "__pycache__/a.pyc": b"\0", "x.pyc": b"\0"}
    )
    write_tree(root, {".airflowignore": b"tests/\n"})
    (root / "link.py").symlink_to(root / "a.py")
    (root / "linkdir").symlink_to(root / ".git")
    local = read_local([root], root=None, exclude=PathFilter.of((), ("*.pyc",)))
    assert sorted(local.files) == [".airflowignore", "a.py"]
    assert local.scopes == [""]
    assert sorted(p.split(": ")[1] for p in local.problems) == [
        "symlink; deploy the file it points to",
        "symlinked folder; deploy the folder it points to",
    ]


def test_a_root_maps_paths_below_it_and_a_folder_owns_only_its_part(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "repo" / "dags", {"top.py": b"t", "team/a.py": b"a", "team/sub/b.py": b"b"})
    local = read_local([root / "team", root / "top.py"], root=root, exclude=PathFilter())
    assert sorted(local.files) == ["team/a.py", "team/sub/b.py", "top.py"]
    assert local.scopes == ["team/"]
    plain = read_local([root / "team" / "a.py"], root=None, exclude=PathFilter())
    assert list(plain.files) == ["a.py"]
    with pytest.raises(ConfigError, match="is not inside the deploy root"):
        read_local([tmp_path], root=root, exclude=PathFilter())
    with pytest.raises(ConfigError, match="no such file or directory"):
        read_local([root / "missing.py"], root=None, exclude=PathFilter())


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_git_commit_and_whether_the_deployed_paths_differ_from_it_are_recorded(tmp_path: Path) -> None:
    repo = write_tree(tmp_path, {"dags/a.py": b"a = 1\n", "README": b"r"})
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "one"]):
        git(repo, *args)
    head = git(repo, "rev-parse", "HEAD")
    assert git_info([repo / "dags"]) == {"commit": head.strip(), "dirty": False}
    (repo / "README").write_bytes(b"changed elsewhere")
    assert git_info([repo / "dags"]) == {"commit": head.strip(), "dirty": False}
    (repo / "dags/new.py").write_bytes(b"untracked")
    assert git_info([repo / "dags"]) == {"commit": head.strip(), "dirty": True}
    assert git_info([tmp_path.parent / "not-a-repo-at-all"]) is None


async def test_the_request_pool_keeps_order_and_raises_the_first_error_as_itself() -> None:
    from dagmirror.pool import bounded_map

    async def double(n: int) -> int:
        await asyncio.sleep(0.001 * (n % 3))
        return 2 * n

    assert await bounded_map(list(range(50)), double, concurrency=4) == [2 * n for n in range(50)]
    started: list[int] = []

    async def fail_on_three(n: int) -> int:
        started.append(n)
        if n == 3:
            raise SourceUnavailable("boom")
        return n

    with pytest.raises(SourceUnavailable, match="boom"):
        await bounded_map(list(range(100)), fail_on_three, concurrency=2)
    assert len(started) < 10  # no new work is taken once a request failed
