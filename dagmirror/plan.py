"""Pure decisions: what to do with each listed object, which paths collide, what to delete and whether the
delete guard allows it. No I/O: every input is data, so each rule is testable with literals."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence, Set

from dagmirror.manifest import FileEntry
from dagmirror.models import (
    Action,
    Decision,
    DeletePlan,
    LocalDigest,
    LocalStat,
    Rejection,
    RemoteObject,
    StateEntry,
)
from dagmirror.verify import is_md5_etag

KEEP = Decision(Action.KEEP, "unchanged")
RELEASE_ETAG = "sha256:"  # a state entry installed from a release: 'sha256:<hex>' of its body


def decide(obj: RemoteObject, entry: StateEntry | None, local: LocalStat | None) -> Decision:
    """Listing vs state vs disk, using only the cheap facts (ETag and lstat)."""
    entry = _listed(entry)
    if local is None or local.kind == "symlink":
        # Nothing there, or a planted link: an unconditional GET (a 304 would leave us without a file).
        return Decision(Action.DOWNLOAD, "restore" if entry else "new")
    if local.kind != "file":
        return Decision(Action.DOWNLOAD, "restore" if entry else "new")  # the installer reports the blocker
    if entry is None:
        return Decision(Action.VERIFY_LOCAL, "unmanaged file present")
    intact = local.same_signature(entry)
    if entry.etag == obj.etag:
        return KEEP if intact else Decision(Action.VERIFY_LOCAL, "local file changed")
    # The object changed; if our copy is intact a 304 still lets the server tell us it has not.
    return Decision(Action.DOWNLOAD, "changed", if_none_match=entry.etag if intact else None)


def decide_after_check(obj: RemoteObject, entry: StateEntry | None, digest: LocalDigest | None) -> Decision:
    """Second look for VERIFY_LOCAL: the file's content hashes decide keep (adopt) or download."""
    entry = _listed(entry)
    if digest is None:
        return Decision(Action.DOWNLOAD, "restore" if entry else "new")
    if entry is not None and entry.etag == obj.etag:
        return KEEP if digest.xxh3 == entry.xxh3 else Decision(Action.DOWNLOAD, "restore")
    if is_md5_etag(obj.etag) and digest.md5 == obj.etag:
        return Decision(Action.KEEP, "adopt")  # identical bytes already there: record, no GET
    return Decision(Action.DOWNLOAD, "replace")


def _listed(entry: StateEntry | None) -> StateEntry | None:
    """An entry a release installed names a SHA-256, not an S3 ETag: to a listing pass its content is
    unknown, so the file is hashed and adopted by MD5 (no GET) when a mirror goes back to listing."""
    return None if entry is not None and entry.etag.startswith(RELEASE_ETAG) else _known(entry)


def _known(entry: StateEntry | None) -> StateEntry | None:
    """A journal-only entry (etag '') is managed but says nothing about content: decide as if unmanaged."""
    return entry if entry is not None and entry.etag else None


class CollisionFilter:
    """For one sorted listing stream: a file key K and any key under K + '/' cannot both be mirrored.

    The directory wins, whatever the fan-out: K is held back until the stream has moved past K + '/'
    (sorted order puts every key under K/ before any key >= K + '0'), then released or rejected.
    Entries are object keys and common prefixes (which end in '/').
    """

    def __init__(self) -> None:
        self._pending: list[RemoteObject] = []

    def feed(self, key: str, obj: RemoteObject | None) -> tuple[list[RemoteObject], list[Rejection]]:
        released: list[RemoteObject] = []
        rejected: list[Rejection] = []
        still: list[RemoteObject] = []
        for held in self._pending:
            below = held.key + "/"
            if key.startswith(below):
                rejected.append(Rejection(held.key, f"file collides with directory '{below}'"))
            elif key > below:
                released.append(held)
            else:
                still.append(held)
        self._pending = still
        if obj is not None and obj.key.endswith("/"):
            released.append(obj)  # a folder marker collides with nothing; key_to_path skips or rejects it
        elif obj is not None:
            self._pending.append(obj)
        return released, rejected

    def finish(self) -> list[RemoteObject]:
        released, self._pending = self._pending, []
        return released


class PathClaims:
    """Every path accepted in this pass, so a late collision (servers that do not sort) is still refused."""

    def __init__(self) -> None:
        self.files: set[str] = set()
        self._dirs: set[str] = set()

    def claim(self, path: str) -> str | None:
        """Accept `path` or return why not."""
        if path in self._dirs:
            return f"file collides with directory '{path}/'"
        parents = _parents(path)
        for parent in parents:
            if parent in self.files:
                return f"path is under file '{parent}'"
        if path in self.files:
            return "duplicate path"
        self.files.add(path)
        self._dirs.update(parents)
        return None


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def plan_deletions(
    managed: Collection[str],
    listed: Set[str],
    *,
    mirrored: Callable[[str], bool],
    listed_any: bool,
    max_fraction: float,
    allow_mass_delete: bool,
) -> DeletePlan:
    """Managed paths the complete listing no longer has, behind the delete guard.

    `managed` are the paths dagmirror installed (state's keys; a deploy passes the live paths in scope).
    `mirrored` is the include/exclude filter: a managed path that is filtered out is left alone, not deleted.
    `listed_any` is whether the listing returned any object at all (rejected and excluded ones included).
    """
    in_scope = [p for p in managed if mirrored(p)]
    doomed = tuple(sorted(p for p in in_scope if p not in listed))
    if not doomed or allow_mass_delete:
        return DeletePlan(doomed)
    if not listed_any:
        return DeletePlan(
            doomed, refused=f"listing is empty while {len(in_scope)} files are managed; refusing to delete"
        )
    if len(doomed) > max_fraction * len(in_scope):
        return DeletePlan(
            doomed,
            refused=(
                f"pass would delete {len(doomed)} of {len(in_scope)} managed files "
                f"(more than {max_fraction:.0%}); refusing (--allow-mass-delete overrides)"
            ),
        )
    return DeletePlan(doomed)


def empty_parents(paths: Iterable[str]) -> list[str]:
    """Candidate directories to remove after deleting `paths`, deepest first."""
    dirs = {parent for path in paths for parent in _parents(path)}
    return sorted(dirs, key=lambda d: (-d.count("/"), d))


# -- releases --------------------------------------------------------------------------------------------
# What one more GET costs, in bytes of an archive download: below this, single GETs win (one missing file
# never takes the archive), above it the archive does (a cold start takes one request).
GET_COST_BYTES = 64 << 10


def release_etag(sha256: str) -> str:
    return RELEASE_ETAG + sha256


def accept_release_paths(
    prefix: str, files: Mapping[str, FileEntry], mirrored: Callable[[str], bool]
) -> tuple[dict[str, FileEntry], list[Rejection], int]:
    """The manifest's paths this mirror installs: (accepted, rejections, number excluded by the filters).

    A path that is also a folder of another path is refused: the directory wins, as with listed keys."""
    dirs = {parent for path in files for parent in _parents(path)}
    accepted: dict[str, FileEntry] = {}
    rejections: list[Rejection] = []
    excluded = 0
    for path, entry in files.items():
        if path in dirs:
            rejections.append(Rejection(prefix + path, f"file collides with directory '{prefix}{path}/'"))
        elif not mirrored(path):
            excluded += 1
        else:
            accepted[path] = entry
    return accepted, rejections, excluded


def decide_release(want: FileEntry, entry: StateEntry | None, local: LocalStat | None) -> Decision:
    """A release's file vs state vs disk, from cheap facts: keep, hash the local file first, or install."""
    entry = _known(entry)
    ours = entry is not None and entry.etag == release_etag(want.sha256)
    if local is None or local.kind != "file":
        return Decision(Action.DOWNLOAD, "restore" if ours else "new" if entry is None else "changed")
    if ours and entry is not None and local.same_signature(entry):
        return KEEP
    if ours or local.size == want.size:
        # Changed by hand, or maybe already these bytes (unmanaged, or installed by a listing pass).
        return Decision(Action.VERIFY_LOCAL, "local file changed" if ours else "same size")
    return Decision(Action.DOWNLOAD, "new" if entry is None else "changed")


def decide_release_after_check(want: FileEntry, check: Decision, sha256: str | None) -> Decision:
    """Second look for VERIFY_LOCAL: the local file's SHA-256 decides keep (or adopt) or install."""
    if sha256 == want.sha256:
        return KEEP if check.reason == "local file changed" else Decision(Action.KEEP, "adopt")
    return Decision(Action.DOWNLOAD, "restore" if check.reason == "local file changed" else "replace")


def archive_is_cheaper(missing: int, missing_bytes: int, archive_size: int | None) -> bool:
    """Take the release's archive instead of `missing` single GETs (whose bodies total `missing_bytes`)?"""
    if archive_size is None or missing < 2:
        return False
    return archive_size <= missing_bytes + missing * GET_COST_BYTES


# -- listing: where a flat listing splits in two (engine/listing.py) ---------------------------------------
def shared_folder(keys: Sequence[str], prefix: str) -> str:
    """The deepest folder (ending in '/', or `prefix` itself) that holds every key of `keys` (sorted; all
    under `prefix`): where the rest of a listing that began with these keys is best looked at."""
    if not keys:
        return prefix
    first, last = keys[0], keys[-1]  # sorted: what the first and the last share, every key shares
    common = len(prefix)
    while common < min(len(first), len(last)) and first[common] == last[common]:
        common += 1
    cut = first.rfind("/", len(prefix), common)
    return first[: cut + 1] if cut >= 0 else prefix


def split_key(entries: Sequence[str], *, after: str, truncated: bool) -> str | None:
    """Where to split the rest of a flat listing in two, given the sorted keys and common prefixes that one
    delimiter page found after key `after` (the first page's last): range A lists keys up to the split key,
    range B those after it. Any key after `after` splits correctly (the collision filter sees both ranges
    in order); this one balances them by the entries the page shows: its middle, or its last entry when
    more remain unseen. A common prefix can sort before `after` (its folder holds `after`): never a split.
    None: fewer than two entries, so no split is worth a page."""
    beyond = [e for e in entries if e > after]
    if len(beyond) < 2:
        return None
    return beyond[-1] if truncated else beyond[len(beyond) // 2 - 1]


def straddling(split: str, prefix: str) -> list[str]:
    """The file keys of range A (keys <= `split`) whose folder `key + "/"` sorts after `split`, so that keys
    under it fall in range B: exactly the prefixes F of `split` (below `prefix`) where F is `split` itself or
    the character after F sorts before '/' ('dags/a' for the split 'dags/a-b/x'). Only keys under these
    folders can collide with a key of range A; range B holds them back for range A's filter."""
    return [split[:i] for i in range(len(prefix) + 1, len(split) + 1) if i == len(split) or split[i] < "/"]
