"""The pure planner: decisions, collisions and the delete guard, tested with literals."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from dagmirror.models import Action, LocalDigest, LocalStat, RemoteObject, StateEntry
from dagmirror.plan import (
    CollisionFilter,
    PathClaims,
    decide,
    decide_after_check,
    empty_parents,
    plan_deletions,
)
from dagmirror.state import UNKNOWN

ETAG = hashlib.md5(b"v1").hexdigest()
OBJ = RemoteObject("dags/a.py", ETAG, 2)
ENTRY = StateEntry(ETAG, 2, "x1", local_size=2, mtime_ns=100, ino=7)
INTACT = LocalStat("file", 2, 100, 7)


def test_unchanged_object_with_intact_file_is_kept_without_io() -> None:
    assert decide(OBJ, ENTRY, INTACT).action is Action.KEEP


def test_changed_etag_downloads_conditionally_when_local_is_intact() -> None:
    d = decide(RemoteObject("dags/a.py", "other", 2), ENTRY, INTACT)
    assert (d.action, d.if_none_match) == (Action.DOWNLOAD, ETAG)


def test_changed_etag_with_tampered_file_downloads_unconditionally() -> None:
    d = decide(RemoteObject("dags/a.py", "other", 2), ENTRY, LocalStat("file", 2, 999, 7))
    assert (d.action, d.if_none_match) == (Action.DOWNLOAD, None)


def test_missing_managed_file_is_restored_unconditionally() -> None:
    d = decide(OBJ, ENTRY, None)
    assert (d.action, d.reason, d.if_none_match) == (Action.DOWNLOAD, "restore", None)


def test_stat_drift_is_verified_by_hash_before_deciding() -> None:
    assert decide(OBJ, ENTRY, LocalStat("file", 2, 555, 7)).action is Action.VERIFY_LOCAL
    assert decide_after_check(OBJ, ENTRY, LocalDigest("x1", ETAG)).action is Action.KEEP
    assert decide_after_check(OBJ, ENTRY, LocalDigest("tampered", "?")).reason == "restore"


def test_planted_symlink_at_a_file_path_is_replaced() -> None:
    assert decide(OBJ, ENTRY, LocalStat("symlink")).action is Action.DOWNLOAD


def test_unmanaged_identical_file_is_adopted_without_a_get() -> None:
    assert decide(OBJ, None, INTACT).action is Action.VERIFY_LOCAL
    d = decide_after_check(OBJ, None, LocalDigest("x", ETAG))
    assert (d.action, d.reason) == (Action.KEEP, "adopt")
    assert decide_after_check(OBJ, None, LocalDigest("x", "different")).action is Action.DOWNLOAD


def test_journal_only_entry_is_decided_as_unmanaged() -> None:
    assert decide(OBJ, UNKNOWN, INTACT).action is Action.VERIFY_LOCAL


def _stream(keys: list[str], cut: int) -> tuple[set[str], set[str]]:
    """Feed sorted keys through one filter, split into two pages at `cut`."""
    f = CollisionFilter()
    released: set[str] = set()
    rejected: set[str] = set()
    for page in (keys[:cut], keys[cut:]):
        for k in page:
            rel, rej = f.feed(k, None if k.endswith("/") else RemoteObject(k, "e", 1))
            released |= {o.key for o in rel}
            rejected |= {r.key for r in rej}
    released |= {o.key for o in f.finish()}
    return released, rejected


def test_directory_wins_over_a_file_of_the_same_name() -> None:
    keys = sorted(["pkg", "pkg-1.py", "pkg.py", "pkg/mod.py", "pkgz.py"])
    released, rejected = _stream(keys, 2)
    assert rejected == {"pkg"}
    assert released == {"pkg-1.py", "pkg.py", "pkg/mod.py", "pkgz.py"}


def test_common_prefix_entry_rejects_the_file() -> None:
    released, rejected = _stream(["a.py", "pkg", "pkg/"], 1)
    assert (released, rejected) == ({"a.py"}, {"pkg"})


@given(st.sets(st.text(alphabet="ab/.-", min_size=1, max_size=6), max_size=25), st.integers(0, 25))
def test_collision_outcome_does_not_depend_on_page_boundaries(keyset: set[str], cut: int) -> None:
    keys = sorted(k for k in keyset if not k.endswith("/"))
    released, rejected = _stream(keys, min(cut, len(keys)))
    assert released | rejected == set(keys)
    for k in rejected:
        assert any(o.startswith(k + "/") for o in keys)
    for k in released:
        assert not any(o.startswith(k + "/") for o in keys)


def test_path_claims_refuse_late_collisions_either_way() -> None:
    claims = PathClaims()
    assert claims.claim("pkg/mod.py") is None
    assert claims.claim("pkg") is not None
    claims2 = PathClaims()
    assert claims2.claim("pkg") is None
    assert claims2.claim("pkg/mod.py") is not None
    assert claims2.claim("pkg") == "duplicate path"


MANAGED = {f"f{i}.py": ENTRY for i in range(10)}


def _deletions(listed: set[str], **kw: object) -> tuple[tuple[str, ...], str | None]:
    options: dict[str, object] = {
        "mirrored": lambda p: True,
        "listed_any": bool(listed),
        "max_fraction": 0.5,
        "allow_mass_delete": False,
    }
    options.update(kw)
    plan = plan_deletions(MANAGED, listed, **options)  # type: ignore[arg-type]
    return plan.paths, plan.refused


def test_deletes_what_the_listing_no_longer_has() -> None:
    assert _deletions(set(MANAGED) - {"f3.py"}) == (("f3.py",), None)


def test_empty_listing_never_deletes() -> None:
    paths, refused = _deletions(set())
    assert len(paths) == 10
    assert refused is not None
    assert "empty" in refused


def test_deleting_more_than_the_fraction_is_refused_unless_allowed() -> None:
    listed = {"f0.py", "f1.py", "f2.py", "f3.py"}
    assert _deletions(listed)[1] is not None
    assert _deletions(listed, max_fraction=0.7)[1] is None
    assert _deletions(listed, allow_mass_delete=True)[1] is None
    assert _deletions({f"f{i}.py" for i in range(5)})[1] is None  # exactly 50% is allowed


def test_filtered_out_managed_files_are_left_alone() -> None:
    paths, refused = _deletions({"f0.py"}, mirrored=lambda p: p in {"f0.py", "f1.py"})
    assert (paths, refused) == (("f1.py",), None)


def test_empty_parents_deepest_first() -> None:
    assert empty_parents(["a/b/c.py", "a/d.py", "e.py"]) == ["a/b", "a"]
