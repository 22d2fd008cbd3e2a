"""Key -> path safety: literal hostile keys plus hypothesis properties over arbitrary keys."""

from __future__ import annotations

import posixpath
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dagmirror.keys import PathFilter, key_to_path, normalize_prefix
from dagmirror.models import Rejection

PREFIX = "dags/dev/"

HOSTILE = {
    "dags/dev/../etc/passwd": "'..' path segment",
    "dags/dev/a/../../x.py": "'..' path segment",
    "dags/dev/..": "'..' path segment",
    "dags/dev/./x.py": "'.' path segment",
    "dags/dev//etc/passwd": "absolute path (leading '/')",
    "dags/dev/a//b.py": "empty path segment ('//')",
    "dags/dev/a\\..\\b.py": "backslash in key",
    "dags/dev/nul\x00.py": "control character in key",
    "dags/dev/new\nline.py": "control character in key",
    "dags/dev/esc\x1b[31m.py": "control character in key",
    "dags/dev/del\x7f.py": "control character in key",
    "dags/dev/c1\x85.py": "control character in key",
    "dags/dev/" + "a" * 256 + ".py": "path segment longer than 255 bytes",
    "dags/dev/" + "é" * 128: "path segment longer than 255 bytes",
    "dags/dev/.dagmirror/state.json": "'.dagmirror/' is reserved for dagmirror's state",
    "dags/other/x.py": "key is outside the source prefix",
    "dags/dev/evil\u202eyp.py": "bidirectional-override or line-separator character in key",
    "dags/dev/iso\u2066x\u2069.py": "bidirectional-override or line-separator character in key",
    "dags/dev/line\u2028sep.py": "bidirectional-override or line-separator character in key",
    # Noncharacters: S3 stores them, but a server's 404 for such a key may carry no parseable NoSuchKey,
    # so a deletion could never be confirmed (seen on moto server with U+FFFE).
    "dags/dev/non\ufffe.py": "Unicode noncharacter in key",
    "dags/dev/non\uffff.py": "Unicode noncharacter in key",
    "dags/dev/non\ufdd0.py": "Unicode noncharacter in key",
    "dags/dev/non\U0001fffe.py": "Unicode noncharacter in key",
    "dags/dev/non\U0010ffff/x.py": "Unicode noncharacter in key",
    "dags/dev/../": "'..' path segment",  # a folder marker that climbs is reported, not skipped
    "dags/dev/a/../../": "'..' path segment",
    "dags/dev/.dagmirror/": "'.dagmirror/' is reserved for dagmirror's state",
}


@pytest.mark.parametrize(("key", "reason"), sorted(HOSTILE.items()))
def test_hostile_key_is_rejected_with_its_reason(key: str, reason: str) -> None:
    assert key_to_path(key, PREFIX) == Rejection(key, reason)


@pytest.mark.parametrize("key", ["dags/dev/", "dags/dev/team/", "dags/dev/a/b/"])
def test_folder_markers_are_skipped(key: str) -> None:
    assert key_to_path(key, PREFIX) is None


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("dags/dev/x.py", "x.py"),
        ("dags/dev/team/sub/etl.py", "team/sub/etl.py"),
        ("dags/dev/.airflowignore", ".airflowignore"),
        ("dags/dev/..hidden.py", "..hidden.py"),
        ("dags/dev/ünïcode/dag 1.py", "ünïcode/dag 1.py"),
        ("dags/dev/" + "a" * 255, "a" * 255),
    ],
)
def test_ordinary_keys_map_to_their_relative_path(key: str, path: str) -> None:
    assert key_to_path(key, PREFIX) == path


def test_prefix_is_normalized_to_a_folder() -> None:
    assert normalize_prefix("dags/dev") == "dags/dev/"
    assert normalize_prefix("/dags/dev/") == "dags/dev/"
    assert normalize_prefix("") == ""


@given(st.text(min_size=1, max_size=300))
def test_any_accepted_key_stays_inside_dest(rel: str) -> None:
    result = key_to_path(PREFIX + rel, PREFIX)
    if result is None:
        assert rel.endswith("/")
        return
    if isinstance(result, Rejection):
        assert result.reason
        return
    joined = posixpath.normpath(posixpath.join("/dest", result))
    assert joined.startswith("/dest/")
    assert posixpath.normpath(result) == result  # no '.', '..', '//' or trailing '/'
    assert not any(unicodedata.category(c) == "Cc" for c in result)
    assert all(0 < len(seg.encode()) <= 255 for seg in result.split("/"))
    assert result.split("/")[0] != ".dagmirror"


@given(st.text(min_size=1, max_size=60).map(lambda s: s + "/"))
def test_any_folder_marker_is_skipped_or_rejected_never_mapped(rel: str) -> None:
    result = key_to_path(PREFIX + rel, PREFIX)
    assert result is None or (isinstance(result, Rejection) and result.reason)


@given(st.lists(st.sampled_from(["a", "b", "..", ".", "", "c.py", "\\", "\x00"]), min_size=1, max_size=6))
def test_keys_built_from_dangerous_segments_never_escape(parts: list[str]) -> None:
    result = key_to_path(PREFIX + "/".join(parts), PREFIX)
    if isinstance(result, str):
        assert ".." not in result.split("/")
        assert "\\" not in result


def test_filter_includes_then_excludes() -> None:
    f = PathFilter.of(include=["*.py", "sql/*"], exclude=["*_test.py"])
    assert f.wants("team/etl.py")
    assert f.wants("sql/query.sql")
    assert not f.wants("team/etl_test.py")
    assert not f.wants("README.md")
    assert PathFilter().wants("anything/at/all")
