"""The pure side of mirroring releases: decisions over literals, the archive reader on hostile archives,
the release in metrics and audit records."""

from __future__ import annotations

import io
import tarfile

import pytest
import zstandard

from dagmirror.archive import read_archive
from dagmirror.audit import audit_record
from dagmirror.errors import ReleaseError
from dagmirror.manifest import FileEntry, sha256_hex
from dagmirror.metrics import Metrics
from dagmirror.models import Action, LocalDigest, LocalStat, RemoteObject, SyncReport
from dagmirror.plan import (
    accept_release_paths,
    archive_is_cheaper,
    decide,
    decide_after_check,
    decide_release,
    decide_release_after_check,
    release_etag,
)
from dagmirror.state import StateEntry

from .releases import archive_bytes

A = FileEntry("a" * 64, 10)
OURS = StateEntry(release_etag(A.sha256), 10, "x", 10, 5, 7)
INTACT = LocalStat("file", 10, 5, 7)


def test_an_intact_file_of_the_release_is_kept_without_hashing() -> None:
    assert decide_release(A, OURS, INTACT).action is Action.KEEP


def test_a_missing_or_replaced_file_is_restored_and_a_changed_stat_is_hashed_first() -> None:
    assert decide_release(A, OURS, None).reason == "restore"
    assert decide_release(A, OURS, LocalStat("symlink")).reason == "restore"
    touched = decide_release(A, OURS, LocalStat("file", 10, 6, 7))
    assert (touched.action, touched.reason) == (Action.VERIFY_LOCAL, "local file changed")
    assert decide_release_after_check(A, touched, A.sha256).action is Action.KEEP
    assert decide_release_after_check(A, touched, "b" * 64).reason == "restore"


def test_an_unmanaged_file_of_the_same_size_is_adopted_when_its_sha256_matches() -> None:
    listed = StateEntry("0" * 32, 10, "x", 10, 5, 7)  # installed by a listing pass
    check = decide_release(A, listed, INTACT)
    assert (check.action, check.reason) == (Action.VERIFY_LOCAL, "same size")
    assert decide_release_after_check(A, check, A.sha256).reason == "adopt"
    assert decide_release_after_check(A, check, "b" * 64).reason == "replace"
    assert decide_release(A, None, LocalStat("file", 11, 5, 7)).reason == "new"


def test_a_path_that_is_also_a_folder_is_refused_and_filters_apply() -> None:
    files = {"pkg": A, "pkg/mod.py": A, "skip.md": A, "ok.py": A}
    accepted, rejected, excluded = accept_release_paths("p/", files, lambda p: not p.endswith(".md"))
    assert set(accepted) == {"pkg/mod.py", "ok.py"}
    assert [r.key for r in rejected] == ["p/pkg"]
    assert excluded == 1


def test_the_archive_is_taken_only_when_cheaper_than_single_gets() -> None:
    assert not archive_is_cheaper(1, 10, 5)  # one GET never loses to the archive
    assert not archive_is_cheaper(100, 1_000, None)  # no archive written
    assert archive_is_cheaper(10_000, 50_000_000, 10_000_000)  # a cold start
    assert not archive_is_cheaper(3, 3_000, 10_000_000)  # three small changes in a big release


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, body in members:
            tar.addfile(info, io.BytesIO(body) if info.isreg() else None)
    return zstandard.ZstdCompressor().compress(raw.getvalue())


def test_the_archive_reader_takes_only_wanted_intact_regular_members() -> None:
    good, bad = b"good\n", b"evil\n"
    link = tarfile.TarInfo("link.py")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    members = [(link, b"")]
    for name, body in (("./ok.py", good), ("wrong.py", bad), ("other.py", good), ("../up.py", good)):
        info = tarfile.TarInfo(name)
        info.size = len(body)
        members.append((info, body))
    wanted = {
        "ok.py": FileEntry(sha256_hex(good), len(good)),
        "wrong.py": FileEntry(sha256_hex(b"right\n"), 6),
        "link.py": FileEntry(sha256_hex(good), len(good)),
    }
    assert read_archive(_tar(members), wanted, 1 << 20) == {sha256_hex(good): good}


def test_a_damaged_or_oversized_archive_is_a_release_error() -> None:
    with pytest.raises(ReleaseError, match="damaged"):
        read_archive(b"not zstd at all", {}, 1 << 20)
    big = archive_bytes({"a.py": b"x" * 5000})
    with pytest.raises(ReleaseError, match="more than"):
        read_archive(big, {"a.py": FileEntry(sha256_hex(b"x" * 5000), 5000)}, 100)


def test_metrics_and_audit_name_the_installed_release() -> None:
    metrics = Metrics(clock=lambda: 1.0)
    base = SyncReport("s3://b/p/", "d", False, 1, 1, 0, 0, 0, 0, 5, 0.1)
    first = SyncReport(**{**base.__dict__, "mode": "releases", "release": "r1", "release_seq": 1})
    metrics.observe("m", first)
    metrics.observe("m", SyncReport(**{**first.__dict__, "release": "r2", "release_seq": 2}))
    text = metrics.exposition().decode()
    assert 'dagmirror_release_info{mapping="m",release="r2",seq="2"} 1.0' in text
    assert 'release="r1"' not in text
    metrics.observe("m", base)  # back to listing objects: no release series
    assert "release=" not in metrics.exposition().decode()
    record = audit_record(first, mapping="m", pass_id="p", host="h", at=1.0)
    assert (record["mode"], record["release"], record["release_seq"]) == ("releases", "r1", 1)


def test_a_listing_pass_hashes_a_file_a_release_installed_instead_of_fetching_it() -> None:
    obj = RemoteObject("p/a.py", "0" * 32, 10)
    check = decide(obj, OURS, INTACT)
    assert (check.action, check.reason) == (Action.VERIFY_LOCAL, "unmanaged file present")
    assert decide_after_check(obj, OURS, LocalDigest("x", "0" * 32)).reason == "adopt"
