"""The release format (dagmirror/manifest.py): canonical bytes, ids, and refusal of anything else."""

from __future__ import annotations

import orjson
import pytest

from dagmirror.errors import ReleaseError
from dagmirror.manifest import (
    FileEntry,
    Manifest,
    Pointer,
    body_key,
    parse_manifest,
    parse_pointer,
    pointer_key,
    sha256_hex,
)

PREFIX = "dags/production/"
A, B = "a" * 64, "b" * 64


def manifest(**files: FileEntry) -> Manifest:
    return Manifest(PREFIX, files or {"a.py": FileEntry(A, 3), "team/b.py": FileEntry(B, 5)}, 1.7e9, seq=3)


def test_a_manifest_round_trips_and_its_id_is_the_sha256_of_its_canonical_bytes() -> None:
    body = manifest().encode()
    checked = parse_manifest(body, release_id=sha256_hex(body), prefix=PREFIX)
    assert checked.manifest == manifest()
    assert checked.rejections == ()
    assert checked.manifest.encode() == body  # canonical: the same release always has the same id
    assert body == orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)


def test_a_manifest_whose_bytes_are_not_the_named_release_is_refused() -> None:
    body = manifest().encode()
    with pytest.raises(ReleaseError, match="not the release the pointer names"):
        parse_manifest(body + b" ", release_id=sha256_hex(body), prefix=PREFIX)


def test_a_manifest_of_another_environment_is_refused() -> None:
    body = Manifest("dags/dev/", {}, 1.0).encode()
    with pytest.raises(ReleaseError, match="expected 'dags/production/'"):
        parse_manifest(body, release_id=sha256_hex(body), prefix=PREFIX)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../escape.py", "'..' path segment"),
        ("/etc/passwd", "absolute path (leading '/')"),
        ("a\\b.py", "backslash in key"),
        ("esc\x1b.py", "control character in key"),
        (".dagmirror/state.json", "'.dagmirror/' is reserved for dagmirror's state"),
        ("non\ufffe.py", "Unicode noncharacter in key"),
        ("dir/", "not a file path"),
    ],
)
def test_hostile_manifest_paths_are_rejected_like_keys_and_the_rest_kept(path: str, reason: str) -> None:
    body = manifest(**{"ok.py": FileEntry(A, 1), path: FileEntry(B, 1)}).encode()
    checked = parse_manifest(body, release_id=sha256_hex(body), prefix=PREFIX)
    assert list(checked.manifest.files) == ["ok.py"]
    assert [(r.key, r.reason) for r in checked.rejections] == [(PREFIX + path, reason)]


@pytest.mark.parametrize(
    "change",
    [
        {"files": {"a.py": {"sha256": "xyz", "size": 1}}},
        {"files": {"a.py": {"sha256": A, "size": -1}}},
        {"files": {"a.py": {"sha256": A}}},
        {"files": ["a.py"]},
        {"created": "yesterday"},
        {"signatures": {}},
        {"format": "dagmirror.manifest/2"},
        {"format": "something/1"},
    ],
)
def test_a_malformed_manifest_is_one_line(change: dict[str, object]) -> None:
    doc = orjson.loads(manifest().encode()) | change
    body = orjson.dumps(doc)
    with pytest.raises(ReleaseError) as caught:
        parse_manifest(body, release_id=sha256_hex(body), prefix=PREFIX)
    assert "\n" not in str(caught.value)


def test_a_pointer_round_trips_and_must_name_its_own_prefix() -> None:
    pointer = Pointer(PREFIX, A, seq=7, time=1.7e9, files=2, size=8, archive_size=100)
    assert parse_pointer(pointer.encode(), prefix=PREFIX) == pointer
    with pytest.raises(ReleaseError, match="expected 'dags/dev/'"):
        parse_pointer(pointer.encode(), prefix="dags/dev/")
    with pytest.raises(ReleaseError, match="malformed"):
        parse_pointer(orjson.dumps(orjson.loads(pointer.encode()) | {"seq": -1}), prefix=PREFIX)
    with pytest.raises(ReleaseError, match="not JSON"):
        parse_pointer(b"<html>", prefix=PREFIX)


def test_keys_live_outside_the_dag_prefix_and_map_from_the_mirror_url() -> None:
    assert pointer_key(PREFIX) == "metadata/releases/pointers/dags/production/pointer.json"
    assert body_key(A) == f"metadata/releases/bodies/sha256/aa/{A}"
    assert not body_key(A).startswith("dags/")
