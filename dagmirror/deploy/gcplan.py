"""Pure decisions of `dagmirror gc` (docs/releases.md, "Garbage collection"): which bodies, manifests and
archives under metadata/releases/ may go, given the listing (key, size, LastModified), every environment's
pointer, what every manifest references, K and the grace period. No I/O: testable with literals.

The rules, in order:

1. **Kept releases**: for every pointer of the bucket (every environment, named or not), the release it names
   and its `parent` chain, K releases in all.
2. **Young releases**: every manifest younger than the grace period (a publish in flight, or one that just
   landed) is kept too, as is every archive younger than it.
3. **In scope**: without `scope` every other manifest and archive older than the grace period goes; with a
   scope (the prefixes of `--env`), only those of releases whose manifest names a prefix in it. An archive
   whose manifest is gone goes either way, once older than the grace period.
4. **Bodies**: a body goes when it is older than the grace period and no manifest that stays references it.
   So every manifest left in the bucket has all its bodies, whatever the scope.

Pointers, the conditional-write probe and keys gc does not recognise are never deleted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from dagmirror.errors import ReleaseError
from dagmirror.manifest import MANIFEST_FORMAT, MAX_MANIFEST_BYTES, POINTERS, ROOT, sha256_hex
from dagmirror.models import StoredObject

_BODY = re.compile(rf"^{re.escape(ROOT)}bodies/sha256/([0-9a-f]{{2}})/([0-9a-f]{{64}})$")
_MANIFEST = re.compile(rf"^{re.escape(ROOT)}manifests/([0-9a-f]{{64}})\.json$")
_ARCHIVE = re.compile(rf"^{re.escape(ROOT)}archives/([0-9a-f]{{64}})\.tar\.zst$")
_POINTER_NAME = "pointer.json"


@dataclass(frozen=True, slots=True)
class ReleaseRefs:
    """What gc needs of one manifest: its environment, the release it was built on, the bodies it names."""

    prefix: str
    parent: str | None
    bodies: frozenset[str]


@dataclass(frozen=True, slots=True)
class GcPlan:
    """The decision. `deletes` are listed objects; `kept`: releases kept as one of the last K of an
    environment; `young`: releases (and orphan bodies/archives) kept only by the grace period."""

    deletes: tuple[StoredObject, ...]
    kept: frozenset[str]
    young: frozenset[str]
    protected_young: int  # objects that would go but for the grace period

    def counts(self) -> dict[str, int]:
        return count_kinds(self.deletes)

    @property
    def bytes(self) -> int:
        return sum(o.size for o in self.deletes)


def count_kinds(objects: Iterable[StoredObject]) -> dict[str, int]:
    out = {"bodies": 0, "manifests": 0, "archives": 0}
    for obj in objects:
        out[_PLURAL[kind_of(obj.key)[0]]] += 1
    return out


_PLURAL = {"body": "bodies", "manifest": "manifests", "archive": "archives"}


def kind_of(key: str) -> tuple[str, str]:
    """('body', sha256) | ('manifest', id) | ('archive', id) | ('pointer', prefix) | ('other', key)."""
    for kind, pattern in (("body", _BODY), ("manifest", _MANIFEST), ("archive", _ARCHIVE)):
        match = pattern.match(key)
        if match:
            digest = match.group(match.lastindex or 1)
            if kind != "body" or digest[:2] == match.group(1):
                return kind, digest
    if key.startswith(POINTERS) and key.endswith(_POINTER_NAME):
        return "pointer", key[len(POINTERS) : -len(_POINTER_NAME)]
    return "other", key


def read_refs(body: bytes, release_id: str) -> ReleaseRefs:
    """The references of manifest `release_id`; ReleaseError when the bytes are not that manifest. Every
    entry counts, even one a mirror would refuse: gc must not delete what any reader might still want."""
    if len(body) > MAX_MANIFEST_BYTES or sha256_hex(body) != release_id:
        raise ReleaseError(f"manifest {release_id} does not hash to its id")
    try:
        return _refs(orjson.loads(body))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ReleaseError(f"manifest {release_id} is malformed: {exc}") from None


def _refs(doc: Any) -> ReleaseRefs:
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise ValueError("not a dagmirror.manifest/1 document")
    prefix, parent, files = doc["prefix"], doc.get("parent"), doc["files"]
    if not isinstance(prefix, str) or not isinstance(files, dict):
        raise TypeError("prefix or files of the wrong type")
    if parent is not None and not isinstance(parent, str):
        raise TypeError("parent of the wrong type")
    return ReleaseRefs(prefix, parent, frozenset(str(entry["sha256"]) for entry in files.values()))


def chain(start: str, releases: Mapping[str, ReleaseRefs], keep: int) -> list[str]:
    """`start` and its ancestors by `parent`, `keep` in all (fewer when a manifest is missing)."""
    out: list[str] = []
    current: str | None = start
    while current is not None and len(out) < keep and current not in out:
        out.append(current)
        refs = releases.get(current)
        current = refs.parent if refs is not None else None
    return out


def decide(
    objects: Sequence[StoredObject],
    pointers: Mapping[str, str],
    releases: Mapping[str, ReleaseRefs],
    *,
    keep: int,
    grace: float,
    now: float,
    scope: Iterable[str] | None = None,
) -> GcPlan:
    """What to delete. `pointers`: prefix -> current release of every environment; `releases`: the
    references of every readable manifest listed (one missing here is kept, and protects nothing)."""
    if keep < 1:
        raise ValueError("keep must be at least 1: the current release of every environment stays")
    prefixes = None if scope is None else frozenset(scope)
    kept = frozenset(r for p in pointers.values() for r in chain(p, releases, keep))
    deletes, young = _select(objects, releases, kept, prefixes, grace, now)
    without_grace, _ = _select(objects, releases, kept, prefixes, 0.0, float("inf"))
    return GcPlan(deletes, kept, young, len(without_grace) - len(deletes))


def _select(
    objects: Sequence[StoredObject],
    releases: Mapping[str, ReleaseRefs],
    kept: frozenset[str],
    prefixes: frozenset[str] | None,
    grace: float,
    now: float,
) -> tuple[tuple[StoredObject, ...], frozenset[str]]:
    """The objects that go, and the releases kept only because they are young."""
    manifests = {kind_of(o.key)[1]: o for o in objects if kind_of(o.key)[0] == "manifest"}
    young = frozenset(r for r, o in manifests.items() if now - o.modified < grace) - kept

    def candidate(rid: str) -> bool:
        if rid in kept or rid not in releases:
            return False  # kept, or unreadable: gc cannot know what it references, so it stays
        return prefixes is None or releases[rid].prefix in prefixes

    gone = {rid for rid in manifests if candidate(rid) and rid not in young}
    needed = {d for rid in manifests.keys() - gone for d in releases.get(rid, _NONE).bodies}
    deletes: list[StoredObject] = []
    for obj in objects:
        kind, name = kind_of(obj.key)
        if kind == "manifest":
            goes = name in gone
        elif kind == "archive":
            goes = name not in kept and (name in gone or name not in manifests)
        elif kind == "body":
            goes = name not in needed
        else:
            continue
        if goes and now - obj.modified >= grace:
            deletes.append(obj)
    return tuple(deletes), young


_NONE = ReleaseRefs("", None, frozenset())
