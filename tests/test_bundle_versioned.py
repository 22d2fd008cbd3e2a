"""The Airflow bundle's logic without Airflow (engine/versioned.py, engine/materialise.py) on MemorySource:
unpinned refreshes into immutable generations, pinned releases built from the content store or the bucket,
objects mode, cleanup. Real Airflow runs these in tests/test_bundle_airflow.py."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from dagmirror.config import MirrorConfig
from dagmirror.engine.materialise import remove_versions, stale_versions
from dagmirror.engine.versioned import RECORD, Layout, VersionedMirror
from dagmirror.errors import PassFailed, ReleaseError
from dagmirror.source import ObjectSource
from dagmirror.source.memory import MemorySource
from dagmirror.trust import KeySigner, Untrusted, generate_ed25519

from .helpers import read_tree
from .releases import publish_to

PREFIX = "dags/prod/"
SOURCE = f"s3://bucket/{PREFIX}"
A = {"a.py": b"print('a1')\n", "pkg/util.py": b"X = 1\n", "same.py": b"same\n"}
B = {"a.py": b"print('a2')\n", "pkg/util.py": b"X = 1\n", "b.py": b"print('b')\n", "same.py": b"same\n"}


def layout(root: Path) -> Layout:
    return Layout(root / "bundle", root / "bundle" / "versions", root / "_tracking" / "bundle")


def bundle(root: Path, source: MemorySource, **kw: object) -> VersionedMirror:
    async def open_source(config: MirrorConfig) -> ObjectSource:
        return source

    return VersionedMirror(SOURCE, layout(root), options={"fsync": False}, open_source=open_source, **kw)


def refreshed(root: Path, files: dict[str, bytes]) -> tuple[MemorySource, VersionedMirror]:
    """A source with `files` published as release 1, and a bundle that refreshed once."""
    source = MemorySource()
    publish_to(source.put, PREFIX, files)
    mirror = bundle(root, source)
    mirror.refresh()
    return source, mirror


def gets(source: MemorySource) -> int:
    return source.counts["GET"]


def test_refresh_makes_path_the_release_generation_and_the_version_its_release_id(tmp_path: Path) -> None:
    source = MemorySource()
    release = publish_to(source.put, PREFIX, A)
    mirror = bundle(tmp_path, source)
    assert mirror.current() is None
    report = mirror.refresh()
    current = mirror.current()
    assert current is not None
    assert current.release == release == report.release
    assert current.path.parent.name == "generations"
    assert read_tree(current.path) == A


def test_current_version_after_a_restart_costs_no_request(tmp_path: Path) -> None:
    source = MemorySource()
    release = publish_to(source.put, PREFIX, A)
    bundle(tmp_path, source).refresh()
    before = dict(source.counts)
    again = bundle(tmp_path, source)  # a new process: reads current.json
    current = again.current()
    assert current is not None
    assert current.release == release
    assert read_tree(current.path) == A
    assert dict(source.counts) == before


def test_noop_refresh_is_one_request(tmp_path: Path) -> None:
    _, mirror = refreshed(tmp_path, A)
    report = mirror.refresh()
    assert report.requests == {"GET": 1, "GET 304": 1}  # MemorySource counts the GET and its outcome


def test_a_new_release_gets_a_new_directory_and_the_old_one_stays_whole(tmp_path: Path) -> None:
    source, mirror = refreshed(tmp_path, A)
    old = mirror.current()
    release_b = publish_to(source.put, PREFIX, B, seq=2)
    mirror.refresh()
    new = mirror.current()
    assert old is not None
    assert new is not None
    assert new.release == release_b
    assert new.path != old.path
    assert read_tree(new.path) == B
    assert read_tree(old.path) == A


def test_pinned_release_on_the_same_node_is_built_from_the_store_without_a_request(tmp_path: Path) -> None:
    source = MemorySource()
    release_a = publish_to(source.put, PREFIX, A)
    mirror = bundle(tmp_path, source)
    mirror.refresh()
    publish_to(source.put, PREFIX, B, seq=2)
    mirror.refresh()
    before = gets(source)
    done = mirror.pin(release_a)
    assert gets(source) == before  # manifest and bodies of the previous release are in the content store
    assert done.built
    assert done.path == mirror.layout.versions_dir / release_a
    assert read_tree(done.path) == A
    store = mirror.layout.store_meta / "bodies"
    linked = os.stat(done.path / "a.py")
    assert any(os.stat(store / n).st_ino == linked.st_ino for n in os.listdir(store))


def test_pinned_release_on_a_cold_worker_costs_the_manifest_and_the_archive(tmp_path: Path) -> None:
    source = MemorySource()
    release_a = publish_to(source.put, PREFIX, A)
    publish_to(source.put, PREFIX, B, seq=2)
    done = bundle(tmp_path, source).pin(release_a)
    assert read_tree(done.path) == A
    assert done.requests == {"GET": 2, "GET 200": 2}


def test_pinned_release_without_an_archive_fetches_each_body(tmp_path: Path) -> None:
    source = MemorySource()
    release_a = publish_to(source.put, PREFIX, A, archive=False)
    done = bundle(tmp_path, source).pin(release_a)
    assert read_tree(done.path) == A
    assert gets(source) == 1 + len(set(A.values())) + 1  # manifest, bodies, the archive's 404


def test_a_second_pin_of_the_same_release_builds_nothing(tmp_path: Path) -> None:
    source = MemorySource()
    release_a = publish_to(source.put, PREFIX, A)
    first = bundle(tmp_path, source).pin(release_a)
    before = gets(source)
    second = bundle(tmp_path, source).pin(release_a)
    assert (first.built, second.built) == (True, False)
    assert second.path == first.path
    assert gets(source) == before


def test_concurrent_pins_of_one_release_build_it_once_and_agree(tmp_path: Path) -> None:
    source = MemorySource(latency=0.01)
    release_a = publish_to(source.put, PREFIX, A)
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(bundle(tmp_path, source).pin(release_a)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    built = [r.built for r in results]  # type: ignore[attr-defined]
    assert sorted(built) == [False, False, False, True]
    assert {r.path for r in results} == {tmp_path / "bundle" / "versions" / release_a}  # type: ignore[attr-defined]
    assert read_tree(tmp_path / "bundle" / "versions" / release_a) == A


def test_a_release_that_cannot_be_had_whole_leaves_no_version_directory(tmp_path: Path) -> None:
    source = MemorySource()
    release_a = publish_to(source.put, PREFIX, A, archive=False)
    del source.objects[next(k for k in source.objects if "/bodies/" in k)]
    mirror = bundle(tmp_path, source)
    with pytest.raises(ReleaseError):
        mirror.pin(release_a)
    assert [n for n in os.listdir(mirror.layout.versions_dir) if not n.endswith(".lock")] == []


def test_a_version_that_is_not_a_release_id_is_refused_before_any_request(tmp_path: Path) -> None:
    source = MemorySource()
    with pytest.raises(ReleaseError, match="not a dagmirror release id"):
        bundle(tmp_path, source).pin("../../etc")
    assert gets(source) == 0


def test_an_environment_without_releases_is_mirrored_unversioned(tmp_path: Path) -> None:
    source = MemorySource({PREFIX + p: b for p, b in A.items()})
    mirror = bundle(tmp_path, source)
    mirror.refresh()
    current = mirror.current()
    assert current is not None
    assert current.release is None
    assert current.path == mirror.layout.objects
    assert read_tree(current.path) == A
    source.put(PREFIX + "b.py", b"print('b')\n")
    mirror.refresh()
    assert read_tree(mirror.layout.objects)["b.py"] == b"print('b')\n"


def test_an_unversioned_environment_that_starts_publishing_releases_becomes_versioned(tmp_path: Path) -> None:
    source = MemorySource({PREFIX + p: b for p, b in A.items()})
    mirror = bundle(tmp_path, source)
    mirror.refresh()
    release = publish_to(source.put, PREFIX, B)
    mirror.refresh()
    current = mirror.current()
    assert current is not None
    assert current.release == release
    assert read_tree(current.path) == B
    assert (tmp_path / "bundle" / RECORD).exists()


def test_stale_versions_are_the_untracked_unkept_ones_older_than_the_grace() -> None:
    found = {"old": 0.0, "tracked": 0.0, "kept": 0.0, "young": 950.0}
    assert stale_versions(found, tracked={"tracked"}, keep={"kept"}, now=1000.0, grace=100.0) == ["old"]
    assert stale_versions(found, tracked=set(), keep=set(), now=1000.0, grace=5000.0) == []


def test_cleanup_removes_old_untracked_versions_and_keeps_tracked_kept_and_young_ones(tmp_path: Path) -> None:
    source = MemorySource()
    ids = [publish_to(source.put, PREFIX, {"v.py": f"V = {i}\n".encode()}, seq=i + 1) for i in range(5)]
    mirror = bundle(tmp_path, source, version_grace=60.0)
    for release in ids:
        mirror.pin(release)
    old = time.time() - 3600
    for release in ids[:4]:  # ids[4] stays young
        os.utime(mirror.layout.versions_dir / release, (old, old))
    tracking = mirror.layout.tracking_dir
    tracking.mkdir(parents=True)
    (tracking / ids[1]).write_text("2026-01-01T00:00:00+00:00")
    removed = mirror.cleanup(keep={ids[2]})
    assert sorted(removed) == sorted([ids[0], ids[3]])
    left = {n for n in os.listdir(mirror.layout.versions_dir) if not n.startswith(".")}
    assert left == {ids[1], ids[2], ids[4]}


def test_a_version_handed_out_again_is_used_now_and_survives_cleanup(tmp_path: Path) -> None:
    source = MemorySource()
    release = publish_to(source.put, PREFIX, A)
    mirror = bundle(tmp_path, source, version_grace=60.0)
    path = mirror.pin(release).path
    old = time.time() - 3600
    os.utime(path, (old, old))
    before = gets(source)
    assert mirror.pin(release).built is False  # a task starting on it: no request, mtime set to now
    assert gets(source) == before
    assert mirror.cleanup(keep=set()) == []
    assert read_tree(path) == A


def test_removal_checks_again_under_the_lock_that_the_version_is_still_stale(tmp_path: Path) -> None:
    source = MemorySource()
    release = publish_to(source.put, PREFIX, A)
    mirror = bundle(tmp_path, source)
    mirror.pin(release)
    assert remove_versions(mirror.layout.versions_dir, [release], stale=lambda mtime: False) == []
    assert remove_versions(mirror.layout.versions_dir, [release], stale=lambda mtime: True) == [release]
    assert not (mirror.layout.versions_dir / release).exists()


# -- signed releases (docs/security.md): the bundle given a trust file --------------------------------------
def trusting(root: Path, source: MemorySource, key: KeySigner) -> VersionedMirror:
    root.mkdir(parents=True, exist_ok=True)
    policy = root / "trust.toml"
    policy.write_text(f'threshold = 1\n[[keys]]\npaths = ["**"]\npublic = """\n{key.public.pem}"""\n')

    async def open_source(config: MirrorConfig) -> ObjectSource:
        return source

    options = {"fsync": False, "trust": str(policy)}
    return VersionedMirror(SOURCE, layout(root), options=options, open_source=open_source)


def test_with_trust_signed_releases_are_followed_and_pinned(tmp_path: Path) -> None:
    key = KeySigner(generate_ed25519())
    source = MemorySource()
    first = publish_to(source.put, PREFIX, A, seq=1, signer=key)
    publish_to(source.put, PREFIX, B, seq=2, signer=key)
    mirror = trusting(tmp_path, source, key)
    assert mirror.refresh().release is not None
    assert read_tree(mirror.pin(first).path) == A


def test_with_trust_an_unsigned_release_is_neither_followed_nor_pinned(tmp_path: Path) -> None:
    key, attacker = KeySigner(generate_ed25519()), KeySigner(generate_ed25519())
    source = MemorySource()
    signed = publish_to(source.put, PREFIX, A, seq=1, signer=key)
    mirror = trusting(tmp_path / "good", source, key)
    mirror.refresh()
    forged = publish_to(source.put, PREFIX, B, seq=2, signer=attacker)
    with pytest.raises(PassFailed, match="untrusted: pointer seq 2"):
        mirror.refresh()
    current = mirror.current()
    assert current is not None
    assert current.release == signed  # the bundle stays where it was
    with pytest.raises(Untrusted, match="valid signature"):
        mirror.pin(forged)  # a task pinned to a release no trusted key signed never gets its files
    assert not (tmp_path / "good" / "bundle" / "versions" / forged).exists()


def test_with_trust_a_prefix_without_releases_is_never_mirrored_unversioned(tmp_path: Path) -> None:
    key = KeySigner(generate_ed25519())
    source = MemorySource({PREFIX + "a.py": b"unsigned plain file\n"})
    mirror = trusting(tmp_path, source, key)
    with pytest.raises(PassFailed):
        mirror.refresh()
    assert not (tmp_path / "bundle" / "objects" / "a.py").exists()


def test_a_pinned_version_is_durable_before_it_is_renamed_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its files are hard links to content-store entries written without fsync: each is fsynced before the
    rename that makes the version visible (and none is, with fsync off)."""
    source = MemorySource()
    release_a = publish_to(source.put, PREFIX, A)
    publish_to(source.put, PREFIX, B, seq=2)
    events: list[tuple[str, int | str]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)

    def rename(src: str | Path, dst: str | Path, **kw: object) -> None:
        events.append(("rename", Path(dst).name))
        real_rename(src, dst, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)

    async def open_source(config: MirrorConfig) -> ObjectSource:
        return source

    durable = VersionedMirror(SOURCE, layout(tmp_path), options={"fsync": True}, open_source=open_source)
    done = durable.pin(release_a)
    assert read_tree(done.path) == A
    renamed = events.index(("rename", release_a))
    synced = {ino for what, ino in events[:renamed] if what == "fsync"}
    assert {os.stat(done.path / p).st_ino for p in A} <= synced

    events.clear()
    loose = bundle(tmp_path / "loose", source)  # fsync off
    loose.pin(release_a)
    assert ("rename", release_a) in events
    assert not any(what == "fsync" for what, _ in events)
