"""Deploy records: what one deploy, rollback or promote made live, stored as JSON (orjson) at
`s3://BUCKET/metadata/deploys/<env>/<time>-<id>.json`. Names sort by time; the record is the source of
truth for `history` and `rollback`. Pure: building, naming and parsing only."""

from __future__ import annotations

import re
import secrets
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from dagmirror.deploy.plan import DeployPlan, Origin, Removal, Step, Wanted
from dagmirror.deploy.validate import key_problems
from dagmirror.errors import ConfigError

PREFIX = "metadata/deploys"
FORMAT = 1
_ID = re.compile(r"^[0-9a-f]{12}$")
_RELEASE = re.compile(r"^[0-9a-f]{64}$")
# Actions after which `version_id` is the path's live version; "delete" leaves nothing live.
LIVE_ACTIONS = frozenset({"upload", "copy", "unchanged", "failed"})


def new_deploy_id() -> str:
    return secrets.token_hex(6)


def record_key(env: str, at: float, deploy_id: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}Z"
    return f"{PREFIX}/{env}/{stamp}-{deploy_id}.json"


def records_prefix(env: str) -> str:
    return f"{PREFIX}/{env}/"


def deploy_id_of(key: str) -> str:
    return key.rsplit("/", 1)[-1].removesuffix(".json").rsplit("-", 1)[-1]


def check_deploy_id(deploy_id: str) -> str:
    if not _ID.match(deploy_id):
        raise ConfigError(f"a deploy id is 12 hex digits (see `dagmirror history`), got {deploy_id!r}")
    return deploy_id


def is_release_id(value: str) -> bool:
    return bool(_RELEASE.match(value))


@dataclass(frozen=True, slots=True)
class FileResult:
    """One path of a deploy. `version_id` is what is live at that path after it (None: nothing, or a bucket
    without versioning); `previous_version` what was live before, when the deploy changed it."""

    path: str
    key: str
    action: str  # upload, copy, unchanged, delete, failed; with a dry run, what would happen
    version_id: str | None = None
    size: int | None = None
    md5: str | None = None
    xxh3: str | None = None
    previous_version: str | None = None
    source_key: str | None = None  # copies: the version copied
    source_version: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        for optional in ("previous_version", "source_key", "source_version", "error"):
            if doc[optional] is None:
                del doc[optional]
        return doc


@dataclass(frozen=True)
class DeployReport:
    """One deploy, rollback or promote, as the record stores it and the CLI prints it."""

    deploy_id: str
    kind: str  # deploy, rollback, promote
    env: str
    bucket: str
    prefix: str
    scopes: tuple[str, ...]
    started_at: float
    seconds: float
    who: dict[str, str | None]
    host: str
    git: dict[str, Any] | None
    files: tuple[FileResult, ...]
    validation: dict[str, Any]
    origin: dict[str, Any] = field(default_factory=dict)  # rollback_of, or promoted_from
    dry_run: bool = False
    record_key: str | None = None
    record_error: str | None = None
    release: str | None = None  # the release this run published or moved the pointer to (docs/releases.md)
    pointer_seq: int | None = None

    def counts(self) -> dict[str, int]:
        counted = Counter(f.action for f in self.files)
        return {a: counted[a] for a in ("upload", "copy", "unchanged", "delete", "failed")}

    @property
    def changed(self) -> bool:
        c = self.counts()
        moved = self.pointer_seq is not None  # a first release, or a rollback that only moved the pointer
        return bool(c["upload"] or c["copy"] or c["delete"] or c["failed"]) or moved

    @property
    def result(self) -> str:
        if self.dry_run:
            return "dry-run"
        if self.counts()["failed"]:
            return "partial"
        return "ok" if self.changed else "unchanged"

    def record(self) -> dict[str, Any]:
        """The JSON document stored in the bucket. Identity, host and git only: never a credential."""
        return {
            "format": FORMAT,
            "deploy_id": self.deploy_id,
            "kind": self.kind,
            "env": self.env,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "scopes": list(self.scopes),
            "time": round(self.started_at, 3),
            "duration": round(self.seconds, 4),
            "who": self.who,
            "host": self.host,
            "git": self.git,
            "result": self.result,
            "counts": self.counts(),
            "validation": self.validation,
            **self.origin,
            "release": self.release,
            "pointer_seq": self.pointer_seq,
            "files": [f.to_dict() for f in self.files],
        }

    def to_dict(self) -> dict[str, Any]:
        """The CLI's --json report: the record, plus where it was stored."""
        url = f"s3://{self.bucket}/{self.record_key}" if self.record_key else None
        return self.record() | {"dry_run": self.dry_run, "record": url, "record_error": self.record_error}


@dataclass(frozen=True)
class StoredDeploy:
    """A record read back: what `rollback` needs."""

    deploy_id: str
    env: str
    scopes: tuple[str, ...]
    files: tuple[FileResult, ...]
    release: str | None = None  # None: a record from before releases


def parse_record(body: bytes, where: str) -> StoredDeploy:
    """Read a record back, refusing anything malformed (ConfigError names the record)."""
    try:
        doc = orjson.loads(body)
        files = tuple(
            FileResult(**{k: v for k, v in f.items() if k in FileResult.__slots__}) for f in doc["files"]
        )
        scopes = tuple(str(s) for s in doc.get("scopes", ()))
        release = doc.get("release")
        release = release if isinstance(release, str) and _RELEASE.match(release) else None
        stored = StoredDeploy(str(doc["deploy_id"]), str(doc["env"]), scopes, files, release)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"deploy record {where} is malformed: {type(exc).__name__}: {exc}") from None
    if not all(isinstance(f.path, str) and isinstance(f.key, str) for f in files):
        raise ConfigError(f"deploy record {where} is malformed: a file without path or key")
    return stored


def summary(body: bytes, key: str) -> dict[str, Any]:
    """One line of `history`: who deployed what, when, and what it changed. Unreadable records are listed
    with an error rather than hiding the others."""
    try:
        doc = orjson.loads(body)
        return {
            "deploy_id": doc["deploy_id"],
            "time": doc["time"],
            "kind": doc.get("kind", "deploy"),
            "who": doc.get("who", {}),
            "host": doc.get("host"),
            "git": doc.get("git"),
            "result": doc.get("result"),
            "counts": doc.get("counts", {}),
            "origin": {k: doc[k] for k in ("rollback_of", "promoted_from") if k in doc},
            "release": doc.get("release"),
            "pointer_seq": doc.get("pointer_seq"),
            "key": key,
        }
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        return {"deploy_id": deploy_id_of(key), "key": key, "error": f"unreadable record: {exc}"}


def wanted_from_record(stored: StoredDeploy, prefix: str) -> tuple[dict[str, Wanted], list[str]]:
    """What a rollback restores: each recorded live version, at its recorded path; or why it cannot."""
    wanted: dict[str, Wanted] = {}
    problems: list[str] = []
    for f in stored.files:
        if f.action not in LIVE_ACTIONS or (f.action == "failed" and f.version_id is None):
            continue  # nothing was live there after that deploy: its scope, if any, deletes it
        if f.key != prefix + f.path:
            problems.append(f"{f.path!r}: recorded key {f.key!r} is not that path under {prefix}")
        elif f.version_id is None:
            problems.append(f"{f.path}: no version recorded (the bucket was not versioned then)")
        else:
            origin = Origin(f.key, f.version_id)
            wanted[f.path] = Wanted(f.path, f.size or 0, f.md5, f.xxh3, origin=origin)
    return wanted, problems + key_problems(wanted, prefix)


def planned_results(plan: DeployPlan, prefix: str) -> tuple[FileResult, ...]:
    """The plan as file results: unchanged paths with their live version, and what a dry run would do."""
    files = [written_result(s, prefix + s.path, None) for s in plan.writes]
    files += [unchanged_result(s, prefix) for s in plan.unchanged]
    files += [deleted_result(r, prefix) for r in plan.deletes]
    return tuple(sorted(files, key=lambda f: f.path))


def unchanged_result(step: Step, prefix: str) -> FileResult:
    w = step.wanted
    return FileResult(step.path, prefix + step.path, "unchanged", _live_version(step), w.size, w.md5, w.xxh3)


def written_result(step: Step, key: str, version: str | None) -> FileResult:
    w, origin = step.wanted, step.wanted.origin
    return FileResult(
        step.path,
        key,
        step.op.value,
        version,
        w.size,
        w.md5,
        w.xxh3,
        previous_version=_live_version(step),
        source_key=origin.key if origin else None,
        source_version=origin.version_id if origin else None,
    )


def deleted_result(removal: Removal, prefix: str) -> FileResult:
    return FileResult(removal.path, prefix + removal.path, "delete", previous_version=removal.live.version_id)


def kept_result(removal: Removal, prefix: str, why: str, *, action: str = "unchanged") -> FileResult:
    """A planned delete that did not happen: the path still holds its live version."""
    live = removal.live
    return FileResult(removal.path, prefix + removal.path, action, live.version_id, live.size, error=why)


def _live_version(step: Step) -> str | None:
    return step.live.version_id if step.live else None
