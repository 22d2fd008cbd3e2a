"""Pure decisions of a deploy: what each path should hold, what to write, keep or delete, and whether the
delete guard allows it. No I/O: the local files (or recorded versions) and the environment's listing are
plain data, so every rule is testable with literals."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from dagmirror.keys import key_to_path
from dagmirror.models import Rejection
from dagmirror.plan import plan_deletions
from dagmirror.source import LiveObject, ObjectHead


class Op(enum.Enum):
    UPLOAD = "upload"
    COPY = "copy"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class Origin:
    """A version already in the bucket, to be copied server-side instead of uploaded."""

    key: str
    version_id: str | None


@dataclass(frozen=True, slots=True)
class Wanted:
    """What one path of the environment should hold after the deploy."""

    path: str
    size: int
    md5: str | None  # hex MD5 of the content, when known: equal to a plain single-part ETag
    xxh3: str | None  # xxh3-128 hex of the content, when known: compared with x-amz-meta-xxh3
    body: bytes | None = None
    origin: Origin | None = None

    @property
    def write_op(self) -> Op:
        return Op.COPY if self.origin is not None else Op.UPLOAD


@dataclass(frozen=True, slots=True)
class Step:
    """Make `path` hold `wanted` (a write, or nothing when `op` is UNCHANGED); `live` is what it holds now."""

    op: Op
    path: str
    wanted: Wanted
    live: LiveObject | None = None


@dataclass(frozen=True, slots=True)
class Removal:
    path: str
    live: LiveObject


@dataclass(frozen=True)
class DeployPlan:
    writes: tuple[Step, ...]  # uploads and copies
    unchanged: tuple[Step, ...]
    deletes: tuple[Removal, ...]
    to_check: tuple[Step, ...]  # same size, ETag not the MD5 (SSE-KMS, multipart): HEAD's xxh3 decides
    guard: str | None = None


def plan_deploy(
    wanted: Mapping[str, Wanted],
    live: Mapping[str, LiveObject],
    scopes: Sequence[str],
    *,
    wants: Callable[[str], bool],
    max_fraction: float,
    allow_mass_delete: bool,
) -> DeployPlan:
    """Compare each wanted path with the live version; delete live paths under a `scope` (a folder a
    directory deploy owns, '' for the whole environment) that are not wanted and that `wants` (the exclude
    filter) does not leave alone. The delete guard is the mirror's: `plan.plan_deletions`."""
    writes: list[Step] = []
    unchanged: list[Step] = []
    to_check: list[Step] = []
    for path in sorted(wanted):
        w, current = wanted[path], live.get(path)
        op = compare(w, current)
        step = Step(op or w.write_op, path, w, current)
        (to_check if op is None else unchanged if op is Op.UNCHANGED else writes).append(step)
    in_scope = [p for p in live if wants(p) and any(p.startswith(s) for s in scopes)]
    verdict = plan_deletions(
        in_scope,
        set(wanted),
        mirrored=lambda _: True,
        listed_any=bool(wanted),
        max_fraction=max_fraction,
        allow_mass_delete=allow_mass_delete,
    )
    deletes = tuple(Removal(p, live[p]) for p in verdict.paths)
    guard = _guard(len(deletes), len(in_scope), max_fraction, empty=not wanted) if verdict.refused else None
    return DeployPlan(tuple(writes), tuple(unchanged), deletes, tuple(to_check), guard)


def _guard(doomed: int, managed: int, max_fraction: float, *, empty: bool) -> str:
    """The mirror's verdict (plan_deletions), in a deploy's words."""
    if empty:
        return (
            f"nothing to deploy in the given folders, which would delete all {managed} files there; "
            "refusing (--allow-mass-delete overrides)"
        )
    return (
        f"deploying would delete {doomed} of the {managed} files under the deployed folders "
        f"(more than {max_fraction:.0%}); refusing (--allow-mass-delete overrides)"
    )


def compare(w: Wanted, live: LiveObject | None) -> Op | None:
    """UNCHANGED, the write that makes the path hold `w`, or None when only the object's x-amz-meta-xxh3
    can tell (same size, an ETag that is not the content's MD5)."""
    if live is None:
        return w.write_op
    if (
        w.origin is not None
        and w.origin.version_id is not None
        and w.origin == Origin(live.key, live.version_id)
    ):
        return Op.UNCHANGED  # a rollback to the version that is live anyway
    if live.size != w.size:
        return w.write_op
    if w.md5 is not None and live.etag == w.md5:
        return Op.UNCHANGED
    return None if w.xxh3 is not None else w.write_op


def settle(step: Step, head: ObjectHead | None) -> Step:
    """The decision for a `to_check` step once HEAD has answered (None: the object is gone)."""
    w = step.wanted
    if head is not None and head.size == w.size and head.meta_xxh3 is not None and head.meta_xxh3 == w.xxh3:
        return replace(step, op=Op.UNCHANGED)
    return replace(step, op=w.write_op)


def live_by_path(objects: Sequence[LiveObject], prefix: str) -> tuple[dict[str, LiveObject], list[str]]:
    """Live objects by environment path; keys the mirror rejects are left out, and described."""
    live: dict[str, LiveObject] = {}
    rejected: list[str] = []
    for obj in objects:
        mapped = key_to_path(obj.key, prefix)
        if isinstance(mapped, Rejection):
            rejected.append(f"{obj.key!r}: {mapped.reason}")
        elif mapped is not None:
            live[mapped] = obj
    return live, rejected


def live_after(plan: DeployPlan, live: Mapping[str, LiveObject]) -> list[str]:
    """Live paths the deploy leaves alone: neither written, kept as they are, nor deleted."""
    touched = {s.path for s in (*plan.writes, *plan.unchanged, *plan.to_check)}
    touched |= {r.path for r in plan.deletes}
    return sorted(p for p in live if p not in touched)
