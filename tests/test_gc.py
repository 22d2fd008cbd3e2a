"""`dagmirror gc` (docs/releases.md, "Garbage collection"): over MemoryStore, what goes and what stays, a
publish in flight surviving it, pointers moving while it plans; through the CLI against moto, collecting one
environment leaves another (sharing bodies with it) mirroring whole."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from dagmirror.config.deploy import DeployConfig, load_deploy_config
from dagmirror.deploy import Deployer, DeployReport
from dagmirror.deploy.gc import GcAborted, GcReport
from dagmirror.deploy.gcplan import POINTERS, kind_of
from dagmirror.errors import SourceError
from dagmirror.manifest import (
    PROBE_KEY,
    body_key,
    manifest_key,
    parse_manifest,
    parse_pointer,
    pointer_key,
    sha256_hex,
)
from dagmirror.retry import RetryPolicy
from dagmirror.source.memory import MemoryStore

from .helpers import dagmirror, no_sleep, read_tree, write_tree

DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000 * DAY

    def __call__(self) -> float:
        return self.now


def config(**changes: Any) -> DeployConfig:
    base = load_deploy_config(None, {}, {"bucket_url": "s3://bkt/dags/"})
    return replace(base, retry=RetryPolicy(attempts=2), sts=False, **changes)


async def deploy(
    store: MemoryStore, clock: Clock, src: Path, env: str, files: dict[str, bytes]
) -> DeployReport:
    replace_tree(src, files)
    async with Deployer(config(root=src), store=store, sleep=no_sleep, clock=clock, user="u", host="h") as d:
        report = await d.deploy([src], env)
    clock.now += 60
    return report


def replace_tree(src: Path, files: dict[str, bytes]) -> None:
    for old in src.rglob("*.py"):
        old.unlink()
    write_tree(src, files)


def fresh() -> tuple[MemoryStore, Clock]:
    clock = Clock()
    return MemoryStore(clock=clock), clock


async def gc(store: MemoryStore, clock: Clock, envs: list[str] | None, **kw: Any) -> GcReport:
    async with Deployer(config(), store=store, sleep=no_sleep, clock=clock, user="u", host="h") as d:
        return await d.gc(envs, **kw)


def current(store: MemoryStore, prefix: str) -> tuple[str, dict[str, str]]:
    """The release an environment's pointer names and its files' digests, every body checked present."""
    live = store.live()
    release = parse_pointer(live[pointer_key(prefix)], prefix=prefix).release
    files = parse_manifest(live[manifest_key(release)], release_id=release, prefix=prefix).manifest.files
    for entry in files.values():
        assert sha256_hex(live[body_key(entry.sha256)]) == entry.sha256
    return release, {p: e.sha256 for p, e in files.items()}


def kinds(store: MemoryStore, kind: str) -> set[str]:
    return {name for k in store.live() if (found := kind_of(k))[0] == kind for name in [found[1]]}


async def four_dev_releases_one_prod(store: MemoryStore, clock: Clock, src: Path) -> list[str]:
    """dev: a.py = v1..v4, shared.py constant; prod: a.py = v1 and shared.py (shares v1 with dev's first)."""
    ids = []
    for n in range(1, 5):
        report = await deploy(store, clock, src, "dev", {"a.py": f"v = {n}\n".encode(), "shared.py": b"S\n"})
        ids.append(report.release)
    await deploy(store, clock, src, "production", {"a.py": b"v = 1\n", "shared.py": b"S\n"})
    return ids


async def test_gc_of_one_environment_keeps_its_last_k_and_every_body_another_environment_needs(
    tmp_path: Path,
) -> None:
    store, clock = fresh()
    ids = await four_dev_releases_one_prod(store, clock, tmp_path / "src")
    prod_before = current(store, "dags/production/")
    clock.now += 30 * DAY

    dry = await gc(store, clock, ["dev"], keep=2, grace=7 * DAY, dry_run=True)
    assert dry.deleted == {"bodies": 1, "manifests": 2, "archives": 2}
    assert set(ids[:2]) <= kinds(store, "manifest")  # a dry run deletes nothing

    report = await gc(store, clock, ["dev"], keep=2, grace=7 * DAY)
    assert report.deleted == {"bodies": 1, "manifests": 2, "archives": 2}  # v2's body: v1's is prod's too
    assert report.bytes_freed > 0
    assert not report.failed
    assert not report.damaged
    assert kinds(store, "manifest") == {ids[2], ids[3], prod_before[0]}
    assert kinds(store, "archive") == {ids[2], ids[3], prod_before[0]}
    assert sha256_hex(b"v = 1\n") in kinds(store, "body")  # dev's first release is gone, prod still needs it
    assert sha256_hex(b"v = 2\n") not in kinds(store, "body")
    assert current(store, "dags/production/") == prod_before
    assert current(store, "dags/dev/")[0] == ids[3]
    assert PROBE_KEY in store.live()
    assert pointer_key("dags/dev/") in store.live()

    again = await gc(store, clock, None, keep=2, grace=7 * DAY)  # nothing left to collect in dev or prod
    assert again.deleted == {"bodies": 0, "manifests": 0, "archives": 0}


async def test_nothing_younger_than_the_grace_period_goes(tmp_path: Path) -> None:
    store, clock = fresh()
    await four_dev_releases_one_prod(store, clock, tmp_path / "src")
    before = dict(store.live())
    report = await gc(store, clock, None, keep=1, grace=7 * DAY)
    assert store.live() == before
    assert report.deleted == {"bodies": 0, "manifests": 0, "archives": 0}
    assert report.plan.protected_young > 0


async def test_a_publish_whose_pointer_has_not_moved_yet_survives_gc_and_lands_whole(tmp_path: Path) -> None:
    """The race: bodies, manifest and archive written, pointer not yet. The pending release reverts a.py to
    bytes only an old, collectable release holds, so its one new body is old: its young manifest keeps it."""
    store, clock = fresh()
    ids = await four_dev_releases_one_prod(store, clock, tmp_path / "src")
    clock.now += 30 * DAY

    def no_pointer(op: str, key: str) -> None:
        if op == "PUT" and key == pointer_key("dags/dev/"):
            raise SourceError("the deploy is still on its way to the pointer", transient=False)

    store.fault = no_pointer
    with pytest.raises(SourceError):
        await deploy(store, clock, tmp_path / "src", "dev", {"a.py": b"v = 2\n", "shared.py": b"S\n"})
    pending = kinds(store, "manifest") - set(ids) - {current(store, "dags/production/")[0]}
    assert len(pending) == 1

    report = await gc(store, clock, ["dev"], keep=1, grace=7 * DAY)
    assert report.deleted["manifests"] == 3  # dev's first three releases, old and superseded
    assert pending <= kinds(store, "manifest")
    assert sha256_hex(b"v = 2\n") in kinds(store, "body")  # old, but the young manifest names it
    store.fault = None
    finished = await deploy(store, clock, tmp_path / "src", "dev", {"a.py": b"v = 2\n", "shared.py": b"S\n"})
    assert {finished.release} == pending
    assert current(store, "dags/dev/")[1]["a.py"] == sha256_hex(b"v = 2\n")  # every body present


async def test_a_pointer_moving_while_gc_plans_makes_it_plan_again(tmp_path: Path) -> None:
    store, clock = fresh()
    ids = await four_dev_releases_one_prod(store, clock, tmp_path / "src")
    clock.now += 30 * DAY
    dev = pointer_key("dags/dev/")
    pointer = parse_pointer(store.live()[dev], prefix="dags/dev/")
    lists = 0

    def rollback_meanwhile(op: str, key: str) -> None:  # between the plan and its check: a rollback to ids[0]
        nonlocal lists
        if op == "LIST" and key == POINTERS:
            lists += 1
            if lists == 2:
                moved = replace(pointer, release=ids[0], seq=pointer.seq + 1)
                store.history[dev][-1].body = moved.encode()

    store.fault = rollback_meanwhile
    report = await gc(store, clock, ["dev"], keep=1, grace=7 * DAY)
    assert report.attempts == 2
    assert report.environments["dags/dev/"] == ids[0]
    assert current(store, "dags/dev/")[0] == ids[0]  # the release rolled back to is whole


async def test_gc_that_sees_pointers_move_on_every_plan_deletes_nothing(tmp_path: Path) -> None:
    store, clock = fresh()
    ids = await four_dev_releases_one_prod(store, clock, tmp_path / "src")
    clock.now += 30 * DAY
    dev = pointer_key("dags/dev/")
    pointer = parse_pointer(store.live()[dev], prefix="dags/dev/")
    before = dict(store.live())
    flip = iter(range(1_000))

    def always_moving(op: str, key: str) -> None:
        if op == "LIST" and key == POINTERS:
            n = next(flip)
            store.history[dev][-1].body = replace(pointer, release=ids[n % 2], seq=pointer.seq + n).encode()

    store.fault = always_moving
    with pytest.raises(GcAborted, match="nothing was deleted"):
        await gc(store, clock, ["dev"], keep=1, grace=7 * DAY)
    assert store.live().keys() == before.keys()


# -- through the CLI, against moto ---------------------------------------------------------------------------
def cli_deploy(bucket: str, endpoint: str, src: Path, env: str, files: dict[str, bytes]) -> str:
    replace_tree(src, files)
    run = dagmirror(
        "deploy", src, "--env", env, "--root", src, "--bucket-url", f"s3://{bucket}/dags/", "--json",
        endpoint=endpoint,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    return str(run.report["release"])


def test_gc_of_dev_through_the_cli_leaves_production_mirroring_whole(
    bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    shared = {"lib/common.py": b"C = 1\n", "lib/big.py": b"# big\n" * 1000}
    dev = [
        cli_deploy(bucket, moto_endpoint, src, "dev", shared | {"a.py": f"v = {n}\n".encode()})
        for n in range(4)
    ]
    prod_files = shared | {"a.py": b"v = 0\n", "p.py": b"p = 1\n"}
    cli_deploy(bucket, moto_endpoint, src, "production", prod_files)

    args = ("--bucket-url", f"s3://{bucket}/dags/", "--keep", "1", "--grace", "0s", "--json")
    run = dagmirror("gc", "--env", "dev", *args, endpoint=moto_endpoint)
    assert run.code == 0, run.stderr
    report = orjson.loads(run.stdout.strip().splitlines()[-1])
    assert report["deleted"] == {"bodies": 2, "manifests": 3, "archives": 3}  # v = 1, v = 2; v = 0 is prod's
    assert report["bytes_freed"] > 0
    assert set(report["environments"]) == {"dags/dev/", "dags/production/"}

    for env, files in (("production", prod_files), ("dev", shared | {"a.py": b"v = 3\n"})):
        dest = tmp_path / f"dest-{env}"
        sync = dagmirror("sync", f"s3://{bucket}/dags/{env}/", dest, "--mode", "releases", "--json",
                         endpoint=moto_endpoint)  # fmt: skip
        assert sync.code == 0, sync.stderr
        assert read_tree(dest) == files

    usage = dagmirror("gc", "--bucket-url", f"s3://{bucket}/dags/", endpoint=moto_endpoint)
    assert usage.code == 2
    assert "--all-envs" in usage.stderr
    text = dagmirror(
        "gc", "--all-envs", "--bucket-url", f"s3://{bucket}/dags/", "--dry-run", endpoint=moto_endpoint
    )
    assert text.code == 0, text.stderr
    assert "would delete 0 bodies" in text.stdout
    assert dev[0] not in text.stdout


def rollback_when(store: MemoryStore, deleting: str, to: str) -> None:
    """Move dev's pointer to release `to` (a new seq) at gc's first DELETE of a `deleting` object."""
    dev = pointer_key("dags/dev/")
    pointer = parse_pointer(store.live()[dev], prefix="dags/dev/")

    def rollback(op: str, key: str) -> None:
        if op == "DELETE" and kind_of(key)[0] == deleting and store.live()[dev] == pointer.encode():
            store.history[dev][-1].body = replace(pointer, release=to, seq=pointer.seq + 1).encode()

    store.fault = rollback


async def test_a_rollback_landing_while_gc_deletes_bodies_keeps_its_manifest_and_names_lost_bodies(
    tmp_path: Path,
) -> None:
    """The window gc cannot close (docs/releases.md): a pointer moved after gc's check, to a release gc is
    deleting. Manifests go last, after another read of the pointers: the release keeps its manifest (deploys
    and rollbacks of the environment keep working), and the body it lost is named in `damaged` (exit 1)."""
    store, clock = fresh()
    ids = await four_dev_releases_one_prod(store, clock, tmp_path / "src")
    clock.now += 30 * DAY
    rollback_when(store, "body", to=ids[1])  # v = 2: its a.py body is in no other release
    report = await gc(store, clock, ["dev"], keep=1, grace=7 * DAY)
    assert ids[1] in kinds(store, "manifest")
    assert len(report.damaged) == 1
    assert report.damaged[0].startswith(f"release {ids[1]} of dags/dev/: gc removed 1 of its bodies")
    assert not report.restored


async def test_a_rollback_landing_while_gc_deletes_manifests_gets_its_manifest_put_back(
    tmp_path: Path,
) -> None:
    """Later still, as the manifests go: gc holds the bytes of what it deletes and puts the manifest back
    (If-None-Match: *, the same bytes: its name is their SHA-256); no body of it was lost."""
    store, clock = fresh()
    ids = await four_dev_releases_one_prod(store, clock, tmp_path / "src")
    clock.now += 30 * DAY
    rollback_when(store, "manifest", to=ids[0])  # v = 1: its bodies are production's too
    report = await gc(store, clock, ["dev"], keep=1, grace=7 * DAY)
    assert report.restored == (
        f"release {ids[0]} of dags/dev/: became current as gc deleted it; manifest put back",
    )
    assert not report.damaged
    assert current(store, "dags/dev/")[0] == ids[0]  # manifest and every body present
    assert report.deleted["manifests"] == 2  # ids[1]'s and ids[2]'s; ids[0]'s is not counted
