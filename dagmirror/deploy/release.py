"""Pure decisions of a publish: the release a deploy makes from the current one, what two releases changed,
and whether a deploy that lost the pointer's compare-and-swap can be replayed on top of the winner. No I/O:
trees are plain `{relative path: FileEntry}` mappings (manifest.py), testable with literals."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from dagmirror.deploy.plan import Wanted
from dagmirror.manifest import FileEntry, Pointer, sha256_hex
from dagmirror.source import LiveObject

Tree = Mapping[str, FileEntry]


@dataclass(frozen=True)
class Current:
    """An environment's release when a publish starts: its pointer (None: no release yet), the pointer
    object's ETag (the compare-and-swap condition) and the tree it names; `bodies` (SHA-256 -> content) are
    the ones already read (the plain files of an environment switching to releases)."""

    pointer: Pointer | None
    etag: str | None
    files: Tree
    bodies: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def seq(self) -> int:
        return self.pointer.seq if self.pointer else 0

    @property
    def release(self) -> str | None:
        return self.pointer.release if self.pointer else None

    def stored(self) -> set[str]:
        """Bodies the bucket surely holds: those of a published release (gc keeps them)."""
        return {e.sha256 for e in self.files.values()} if self.pointer else set()


def next_tree(base: Tree, deletes: Iterable[str], wanted: Mapping[str, Wanted]) -> dict[str, FileEntry]:
    """`base` with a deploy applied: its deletions, and every path it wants with a known body (unchanged
    ones too, so a release always holds what the deploy says, even where `base` had drifted)."""
    files = dict(base)
    for path in deletes:
        files.pop(path, None)
    for path, w in wanted.items():
        if w.body is not None:
            files[path] = FileEntry(sha256_hex(w.body), len(w.body))
    return files


def pin_unchanged(
    wanted: Mapping[str, Wanted], current: Tree, target: Tree, live: Mapping[str, LiveObject]
) -> dict[str, Wanted]:
    """A pointer move's plain files: a path whose body is the same in the current and the target release,
    and whose plain file has that size, is taken as unchanged (its listed ETag becomes the wanted MD5), so
    only the paths the two releases disagree on are copied from their bodies."""
    pinned = dict(wanted)
    for path, w in wanted.items():
        obj = live.get(path)
        if obj is not None and obj.size == w.size and current.get(path) == target.get(path) is not None:
            pinned[path] = replace(w, md5=obj.etag)
    return pinned


def bodies_of(wanted: Mapping[str, Wanted]) -> dict[str, bytes]:
    return {sha256_hex(w.body): w.body for w in wanted.values() if w.body is not None}


def changed(before: Tree, after: Tree) -> set[str]:
    """Paths added, removed or given another body between two trees."""
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


def rebase(base: Tree, mine: Tree, theirs: Tree) -> dict[str, FileEntry] | list[str]:
    """Replay my changes (base -> mine) on top of a release published meanwhile (base -> theirs): the merged
    tree, or the paths both changed (then nothing may be published). A path of one that is a folder of a
    path of the other (`pkg` and `pkg/mod.py`) is a conflict too: the mirror could install only one."""
    ours, their = changed(base, mine), changed(base, theirs)
    both = ours & their
    if both:
        return sorted(both)
    merged = dict(theirs)
    for path in ours:
        if path in mine:
            merged[path] = mine[path]
        else:
            merged.pop(path, None)
    clashes = collisions(merged, ours)
    return clashes if clashes else merged


def collisions(files: Tree, paths: Iterable[str]) -> list[str]:
    """Those of `paths` that are a file and a folder of `files` at once."""
    folders = {p[:i] for p in files for i in range(len(p)) if p[i] == "/"}
    found = {p for p in paths if p in files and p in folders}
    found |= {p for p in paths if p in files and any(f in files for f in _parents(p))}
    return sorted(found)


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]
