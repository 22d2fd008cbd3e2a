"""Deploy records: what one deploy, rollback or promote made live, stored as JSON (orjson) at
`s3://BUCKET/metadata/deploys/<env>/<time>-<id>.json`. Names sort by time; the record is the source of
truth for `history` and `rollback`. Pure: building, naming and parsing only."""

from __future__ import annotations

import re
import secrets
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

import orjson

from dagmirror.deploy.plan import DeployPlan, Origin, Removal, Step, Wanted
from dagmirror.deploy.validate import key_problems
from dagmirror.errors import ConfigError
from dagmirror.models import StoredObject

PREFIX = "metadata/deploys"
FORMAT = 1
_ID = re.compile(r"^[0-9a-f]{12}$")
_RELEASE = re.compile(r"^[0-9a-f]{64}$")
# The one name a record has (record_key): anything else under the prefix, nested or renamed, is not a record.
_RECORD_NAME = re.compile(r"^[0-9]{8}T[0-9]{6}\.[0-9]{6}Z-[0-9a-f]{12}\.json$")
# A record of 10,000 files is about 4 MB; anything far larger is not one `dagmirror` wrote, and is not read.
MAX_RECORD_BYTES = 32 << 20
T = TypeVar("T")
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


def exact_records(listed: Iterable[StoredObject], env: str) -> list[StoredObject]:
    """The records of `env` in a listing of its prefix, oldest first: only keys `record_key` makes."""
    prefix = records_prefix(env)
    named = (o for o in listed if o.key.startswith(prefix) and _RECORD_NAME.match(o.key[len(prefix) :]))
    return sorted(named, key=lambda o: o.key)


def find_record(listed: Iterable[StoredObject], env: str, deploy_id: str) -> StoredObject:
    """The one record of `deploy_id` in `env`; none, more than one or an oversized one is a ConfigError
    (two records claiming one deploy mean someone else wrote there: dagmirror does not pick one)."""
    found = [o for o in exact_records(listed, env) if deploy_id_of(o.key) == deploy_id]
    if not found:
        raise ConfigError(f"no deploy {deploy_id} in {env} (see: dagmirror history --env {env})")
    if len(found) > 1:
        keys = ", ".join(o.key for o in found)
        raise ConfigError(
            f"more than one record claims deploy {deploy_id} in {env} ({keys}): refusing to pick"
        )
    if found[0].size > MAX_RECORD_BYTES:
        raise ConfigError(f"deploy record {found[0].key} is {found[0].size} bytes, over {MAX_RECORD_BYTES}")
    return found[0]


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


def parse_record(body: bytes, where: str, *, deploy_id: str, env: str) -> StoredDeploy:
    """Read back the record of `deploy_id` in `env`, refusing anything malformed, oversized, or about
    another deploy or environment than its name says (ConfigError names the record)."""
    if len(body) > MAX_RECORD_BYTES:
        raise ConfigError(f"deploy record {where} is {len(body)} bytes, over {MAX_RECORD_BYTES}")
    try:
        doc = orjson.loads(body)
        files = tuple(_file_result(f) for f in _typed(doc["files"], list))
        scopes = tuple(_typed(s, str) for s in _typed(doc.get("scopes", []), list))
        release = _release(doc.get("release"))
        stored = StoredDeploy(_typed(doc["deploy_id"], str), _typed(doc["env"], str), scopes, files, release)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"deploy record {where} is malformed: {type(exc).__name__}: {exc}") from None
    if (stored.deploy_id, stored.env) != (deploy_id, env):
        raise ConfigError(
            f"deploy record {where} is about deploy {stored.deploy_id!r} in {stored.env!r}, not {deploy_id} "
            f"in {env}: refusing it"
        )
    return stored


_FILE_TYPES = {f.name: (int if f.name == "size" else str) for f in fields(FileResult)}


def _file_result(doc: object) -> FileResult:
    """One recorded file, each field of its type (path, key and action required, the rest optional)."""
    given = {k: v for k, v in _typed(doc, dict).items() if k in _FILE_TYPES and v is not None}
    for name, value in given.items():
        if not isinstance(value, _FILE_TYPES[name]) or isinstance(value, bool):
            raise TypeError(f"file field {name} is {type(value).__name__}")
    return FileResult(**given)


def _typed(value: object, kind: type[T]) -> T:
    if not isinstance(value, kind):
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def summary(body: bytes, key: str, *, oversized: bool = False) -> dict[str, Any]:
    """One line of `history`: who deployed what, when, and what it changed, every field of its type (a
    record is whatever a bucket writer put there). Unreadable records are listed with an error rather
    than hiding the others; one over MAX_RECORD_BYTES (`oversized`: by the listing) is not read at all."""
    deploy_id = deploy_id_of(key)
    if oversized or len(body) > MAX_RECORD_BYTES:
        return {
            "deploy_id": deploy_id,
            "key": key,
            "error": f"record over {MAX_RECORD_BYTES} bytes, not read",
        }
    try:
        doc = _typed(orjson.loads(body), dict)
        return {
            "deploy_id": _named(doc["deploy_id"], deploy_id),
            "time": _time(doc["time"]),
            "kind": _typed(doc.get("kind", "deploy"), str),
            "who": _texts(doc.get("who") or {}),
            "host": _optional(doc.get("host"), str),
            "git": _git(doc.get("git")),
            "result": _optional(doc.get("result"), str),
            "counts": {_typed(k, str): _count(v) for k, v in _typed(doc.get("counts") or {}, dict).items()},
            "origin": {k: _typed(doc[k], str) for k in ("rollback_of", "promoted_from") if k in doc},
            "release": _optional(doc.get("release"), str),
            "pointer_seq": None if doc.get("pointer_seq") is None else _count(doc["pointer_seq"]),
            "key": key,
        }
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        return {
            "deploy_id": deploy_id,
            "key": key,
            "error": f"unreadable record: {type(exc).__name__}: {exc}",
        }


def _release(value: object) -> str | None:
    if value is not None and not (isinstance(value, str) and _RELEASE.match(value)):
        raise ValueError("release is not a release id")
    return value


def _named(value: object, deploy_id: str) -> str:
    if value != deploy_id:
        raise ValueError("its deploy_id is not the one its name says")
    return deploy_id


def _time(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e11:
        raise ValueError("time is not a time")
    return float(value)


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError("a count is not a whole number")
    return value


def _optional(value: object, kind: type[T]) -> T | None:
    return None if value is None else _typed(value, kind)


def _texts(value: object) -> dict[str, str | None]:
    return {_typed(k, str): _optional(v, str) for k, v in _typed(value, dict).items()}


def _git(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    doc = _typed(value, dict)
    return {
        k: (v if isinstance(v, bool) else _optional(v, str)) for k, v in doc.items() if isinstance(k, str)
    }


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
