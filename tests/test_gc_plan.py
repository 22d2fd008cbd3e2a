"""gc's decision (deploy/gcplan.py) over literals: what the last K releases of every environment, young
objects and remaining manifests protect, and what goes."""

from __future__ import annotations

import orjson
import pytest

from dagmirror.deploy.gcplan import ReleaseRefs, chain, decide, kind_of, read_refs
from dagmirror.errors import ReleaseError
from dagmirror.manifest import (
    PROBE_KEY,
    FileEntry,
    Manifest,
    archive_key,
    body_key,
    manifest_key,
    pointer_key,
)
from dagmirror.models import StoredObject

DAY = 86400.0
NOW = 100 * DAY
OLD = NOW - 30 * DAY  # older than the grace period
NEW = NOW - 60.0  # younger than it
GRACE = 7 * DAY


def h(c: str) -> str:
    return c * 64


def release(*objs: tuple[str, float]) -> list[StoredObject]:
    return [StoredObject(k, 10, t) for k, t in objs]


def objects_of(
    releases: dict[str, tuple[ReleaseRefs, float]], bodies: dict[str, float]
) -> list[StoredObject]:
    out = [StoredObject(body_key(d), 100, t) for d, t in bodies.items()]
    for rid, (_, t) in releases.items():
        out += [StoredObject(manifest_key(rid), 10, t), StoredObject(archive_key(rid), 50, t)]
    return out


def keys(plan_deletes: tuple[StoredObject, ...]) -> set[str]:
    return {o.key for o in plan_deletes}


# dev: r1 <- r2 <- r3 (current); prod: p1 <- p2 (current). Bodies: a (r1 only), b (r1, r2), c (r3, p1),
# d (p2), e (nobody: a publish that died long ago).
DEV, PROD = "dags/dev/", "dags/prod/"
REFS = {
    h("1"): ReleaseRefs(DEV, None, frozenset({h("a"), h("b")})),
    h("2"): ReleaseRefs(DEV, h("1"), frozenset({h("b")})),
    h("3"): ReleaseRefs(DEV, h("2"), frozenset({h("c")})),
    h("4"): ReleaseRefs(PROD, None, frozenset({h("c")})),
    h("5"): ReleaseRefs(PROD, h("4"), frozenset({h("d")})),
}
POINTERS = {DEV: h("3"), PROD: h("5")}
ALL_OLD = objects_of({r: (refs, OLD) for r, refs in REFS.items()}, {h(c): OLD for c in "abcde"})


def test_keep_one_deletes_every_old_release_but_the_current_ones_and_their_bodies_stay() -> None:
    plan = decide(ALL_OLD, POINTERS, REFS, keep=1, grace=GRACE, now=NOW)
    gone = {h("1"), h("2"), h("4")}
    assert keys(plan.deletes) == (
        {manifest_key(r) for r in gone} | {archive_key(r) for r in gone} | {body_key(h(c)) for c in "abe"}
    )
    assert plan.kept == {h("3"), h("5")}
    assert plan.counts() == {"bodies": 3, "manifests": 3, "archives": 3}
    assert plan.bytes == 3 * 100 + 3 * 10 + 3 * 50


def test_keep_k_follows_the_parent_chain_of_every_environment() -> None:
    plan = decide(ALL_OLD, POINTERS, REFS, keep=2, grace=GRACE, now=NOW)
    assert plan.kept == {h("2"), h("3"), h("4"), h("5")}
    assert keys(plan.deletes) == {
        manifest_key(h("1")),
        archive_key(h("1")),
        body_key(h("a")),
        body_key(h("e")),
    }


def test_a_body_shared_with_another_environment_stays_when_one_environment_is_collected() -> None:
    # c is named by dev's current release and by prod's old p1: collecting prod removes p1, not c
    plan = decide(ALL_OLD, POINTERS, REFS, keep=1, grace=GRACE, now=NOW, scope=[PROD])
    assert keys(plan.deletes) == {manifest_key(h("4")), archive_key(h("4")), body_key(h("e"))}


def test_with_a_scope_a_body_goes_only_when_no_remaining_manifest_names_it() -> None:
    # collecting dev removes r1 and r2: a goes (only r1 named it), b goes (r1, r2), nothing of prod's
    plan = decide(ALL_OLD, POINTERS, REFS, keep=1, grace=GRACE, now=NOW, scope=[DEV])
    gone = {h("1"), h("2")}
    expected = {manifest_key(r) for r in gone} | {archive_key(r) for r in gone}
    assert keys(plan.deletes) == expected | {body_key(h(c)) for c in "abe"}


def test_everything_younger_than_the_grace_period_stays_and_keeps_its_old_bodies() -> None:
    # a publish in flight: manifest r9 written a minute ago, pointer not moved; it reuses old body a
    refs = REFS | {h("9"): ReleaseRefs(DEV, h("3"), frozenset({h("a"), h("f")}))}
    objs = [*ALL_OLD, StoredObject(manifest_key(h("9")), 10, NEW), StoredObject(body_key(h("f")), 100, NEW)]
    plan = decide(objs, POINTERS, refs, keep=1, grace=GRACE, now=NOW)
    assert body_key(h("a")) not in keys(plan.deletes)
    assert {manifest_key(h("9")), body_key(h("f"))}.isdisjoint(keys(plan.deletes))
    assert plan.young == {h("9")}


def test_young_old_releases_and_orphan_bodies_are_spared_by_the_grace_period() -> None:
    objs = objects_of({r: (refs, NEW) for r, refs in REFS.items()}, {h(c): NEW for c in "abcde"})
    plan = decide(objs, POINTERS, REFS, keep=1, grace=GRACE, now=NOW)
    assert plan.deletes == ()
    assert plan.protected_young == 9  # 3 manifests, 3 archives, bodies a, b, e


def test_pointers_probe_unknown_keys_and_unreadable_manifests_are_never_deleted() -> None:
    extra = release(
        (pointer_key(DEV), OLD),
        (PROBE_KEY, OLD),
        ("metadata/releases/notes.txt", OLD),
        (body_key(h("a")).replace("/aa/", "/bb/"), OLD),  # a body under the wrong fan-out folder
        (manifest_key(h("8")), OLD),  # unreadable: absent from the references
    )
    plan = decide([*ALL_OLD, *extra], POINTERS, REFS, keep=1, grace=GRACE, now=NOW)
    assert keys(plan.deletes).isdisjoint({o.key for o in extra})


def test_an_archive_whose_manifest_is_gone_goes_once_old() -> None:
    objs = release((archive_key(h("7")), OLD), (archive_key(h("6")), NEW))
    plan = decide(objs, {}, {}, keep=1, grace=GRACE, now=NOW)
    assert keys(plan.deletes) == {archive_key(h("7"))}


def test_an_environment_nobody_named_still_protects_its_releases() -> None:
    refs = REFS | {h("6"): ReleaseRefs("dags/qa/", None, frozenset({h("a")}))}
    objs = [*ALL_OLD, StoredObject(manifest_key(h("6")), 10, OLD)]
    plan = decide(objs, POINTERS | {"dags/qa/": h("6")}, refs, keep=1, grace=GRACE, now=NOW, scope=[DEV])
    assert body_key(h("a")) not in keys(plan.deletes)
    assert manifest_key(h("6")) not in keys(plan.deletes)


def test_chain_stops_at_a_missing_manifest_and_at_a_cycle() -> None:
    assert chain(h("3"), REFS, 10) == [h("3"), h("2"), h("1")]
    assert chain(h("9"), REFS, 10) == [h("9")]
    cyclic = {h("1"): ReleaseRefs(DEV, h("2"), frozenset()), h("2"): ReleaseRefs(DEV, h("1"), frozenset())}
    assert chain(h("1"), cyclic, 10) == [h("1"), h("2")]


def test_keep_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="keep"):
        decide([], {}, {}, keep=0, grace=GRACE, now=NOW)


def test_kind_of_names_each_key() -> None:
    assert kind_of(body_key(h("a"))) == ("body", h("a"))
    assert kind_of(manifest_key(h("1"))) == ("manifest", h("1"))
    assert kind_of(archive_key(h("1"))) == ("archive", h("1"))
    assert kind_of(pointer_key(DEV)) == ("pointer", DEV)
    assert kind_of(PROBE_KEY)[0] == "other"


def test_read_refs_checks_the_hash_and_counts_every_entry() -> None:
    body = Manifest(
        DEV, {"a.py": FileEntry(h("a"), 1), "../x": FileEntry(h("b"), 1)}, 1.0, parent=h("1")
    ).encode()
    from dagmirror.manifest import sha256_hex

    refs = read_refs(body, sha256_hex(body))
    assert refs == ReleaseRefs(DEV, h("1"), frozenset({h("a"), h("b")}))
    with pytest.raises(ReleaseError, match="hash"):
        read_refs(body, h("0"))
    bad = orjson.dumps({"format": "other"})
    with pytest.raises(ReleaseError, match="malformed"):
        read_refs(bad, sha256_hex(bad))
