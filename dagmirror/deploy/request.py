"""What each command asks of an environment, built before the environment's listing is read: a deploy from
local files, a promote from another environment's live versions, a rollback from a record. Each builder
collects every problem it can find on its own, so runner.py refuses before its first request when it can."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from dagmirror.config.deploy import DeployConfig
from dagmirror.deploy.bucket import Bucket
from dagmirror.deploy.local import git_info, read_local
from dagmirror.deploy.plan import Origin, Wanted, live_by_path
from dagmirror.deploy.publish import Publisher
from dagmirror.deploy.record import (
    MAX_RECORD_BYTES,
    StoredDeploy,
    check_deploy_id,
    find_record,
    is_release_id,
    parse_record,
    records_prefix,
    wanted_from_record,
)
from dagmirror.deploy.validate import compile_problems, key_problems
from dagmirror.errors import ConfigError, DagmirrorError, ReleaseError
from dagmirror.keys import PathFilter
from dagmirror.manifest import FileEntry, body_key
from dagmirror.models import BODY_ROOM
from dagmirror.source import LiveObject
from dagmirror.verify import verify, xxh3_hex


@dataclass(frozen=True)
class DeployRequest:
    """One deploy, promote or rollback as asked: what each path of `env` should hold, the folders it owns
    (`scopes`: removals there delete), the problems that already refuse it, and the checks it wants."""

    kind: str  # deploy, promote, rollback: the record's `kind`
    env: str
    wanted: dict[str, Wanted]
    scopes: tuple[str, ...]
    problems: list[str]
    notes: list[str]  # warnings for the record's validation section
    dry_run: bool
    git: dict[str, Any] | None = None
    origin: dict[str, Any] = field(default_factory=dict)  # rollback_of, or promoted_from
    budgets: bool = True  # False for a rollback: it puts back versions that were already live
    airflow: bool = False
    check_origins: bool = False  # copies of old versions: each must still exist
    publish: bool = True  # False: a rollback to a deploy from before releases (the versioned copies only)
    release: str | None = None  # a rollback to this existing release: the pointer moves, nothing is built
    tree: Mapping[str, FileEntry] | None = None  # that release's files


async def from_local(
    config: DeployConfig,
    paths: Sequence[Path],
    env: str,
    *,
    exclude: PathFilter,
    dry_run: bool,
    airflow_check: bool | None,
) -> DeployRequest:
    """`env` should hold `paths` (files, or directories whose removed files are deleted there too)."""
    prefix = config.env_prefix(env)
    tree = await asyncio.to_thread(read_local, paths, root=config.root, exclude=exclude)
    syntax, notes = compile_problems(tree.files)
    wanted = {p: _from_body(p, body) for p, body in tree.files.items()}
    problems = tree.problems + key_problems(wanted, prefix) + syntax
    git = await asyncio.to_thread(git_info, paths)
    return DeployRequest(
        "deploy",
        env,
        wanted,
        tuple(tree.scopes),
        problems,
        notes,
        dry_run,
        git=git,
        airflow=_wants_airflow(config, env, airflow_check),
    )


async def from_environment(
    config: DeployConfig,
    bucket: Bucket,
    source: str,
    target: str,
    *,
    dry_run: bool,
    airflow_check: bool | None,
) -> DeployRequest:
    """`target` should hold exactly the live versions of `source`, by server-side copies."""
    source_prefix, target_prefix = config.env_prefix(source), config.env_prefix(target)
    if source == target:
        raise ConfigError("promote needs two different environments")
    wanted, problems = await _source_release(config, bucket, source)
    if wanted is None:  # the source has no release yet: its live plain versions
        objects, rejected = live_by_path(await bucket.list_live(source_prefix), source_prefix)
        if not objects:
            raise ConfigError(f"nothing to promote: s3://{config.bucket.bucket}/{source_prefix} is empty")
        fetched = await bucket.pool(list(objects.items()), partial(_fetch_verified, bucket))
        wanted = {w.path: w for w in fetched if isinstance(w, Wanted)}
        problems = [f"{source} has {r}" for r in rejected] + [p for p in fetched if isinstance(p, str)]
    syntax, notes = compile_problems({p: w.body for p, w in wanted.items() if w.body is not None})
    problems += key_problems(wanted, target_prefix) + syntax
    return DeployRequest(
        "promote",
        target,
        wanted,
        ("",),  # the whole target environment: what `source` lacks is deleted
        problems,
        notes,
        dry_run,
        origin={"promoted_from": source},
        airflow=_wants_airflow(config, target, airflow_check),
    )


async def from_record(
    config: DeployConfig, bucket: Bucket, env: str, deploy_id: str, *, dry_run: bool
) -> DeployRequest:
    """The environment should hold a release again (`deploy_id`: a release id, or a deploy whose record
    names one): a pointer move. A deploy from before releases: the versions it recorded, copied again."""
    prefix = config.env_prefix(env)
    if config.releases:
        release = await _release_to_restore(config, bucket, env, deploy_id)
        if release is not None:
            return await _pointer_move(bucket, prefix, env, deploy_id, release, dry_run=dry_run)
    check_deploy_id(deploy_id)
    status = await bucket.versioning()
    if status != "Enabled":
        raise ConfigError(
            f"rollback needs versioning on s3://{config.bucket.bucket} "
            f"(it is {status.lower() or 'off'}); nothing was changed"
        )
    stored = await _read_record(bucket, env, deploy_id)
    wanted, problems = wanted_from_record(stored, prefix)
    return DeployRequest(
        "rollback",
        env,
        wanted,
        stored.scopes,
        problems,
        [],
        dry_run,
        origin={"rollback_of": deploy_id},
        budgets=False,
        check_origins=True,
        publish=False,
    )


async def _release_to_restore(config: DeployConfig, bucket: Bucket, env: str, ident: str) -> str | None:
    """The release a rollback restores; None for a deploy from before releases in an environment that has
    none yet (the versioned path). Such a deploy in an environment with releases is refused: restoring its
    versions would leave the pointer naming another tree."""
    if is_release_id(ident):
        return ident
    check_deploy_id(ident)
    stored = await _read_record(bucket, env, ident)
    if stored.release is not None:
        return stored.release
    current = await Publisher(bucket, config.env_prefix(env)).current()
    if current.pointer is not None:
        raise ConfigError(
            f"deploy {ident} predates releases in {env}, which now has them: roll back to a deploy that "
            f"names a release (dagmirror history --env {env}), or to a release id"
        )
    return None


async def _pointer_move(
    bucket: Bucket, prefix: str, env: str, ident: str, release: str, *, dry_run: bool
) -> DeployRequest:
    """Every file of the release, its plain file copied from its body when it differs (runner.py pins the
    ones that do not)."""
    tree = await Publisher(bucket, prefix).tree(release)
    wanted = {
        p: Wanted(p, e.size, None, None, origin=Origin(body_key(e.sha256), None)) for p, e in tree.items()
    }
    return DeployRequest(
        "rollback",
        env,
        wanted,
        ("",),
        key_problems(wanted, prefix),
        [],
        dry_run,
        origin={"rollback_of": ident},
        budgets=False,
        release=release,
        tree=tree,
    )


async def _source_release(
    config: DeployConfig, bucket: Bucket, source: str
) -> tuple[dict[str, Wanted] | None, list[str]]:
    """The files of the source environment's release, each body read from the bucket and checked against
    its SHA-256; plain files are then copied from the bodies. None when releases are off or it has none."""
    if not config.releases:
        return None, []
    publisher = Publisher(bucket, config.env_prefix(source))
    current = await publisher.current()
    if current.pointer is None:
        return None, []
    if not current.files:
        raise ConfigError(f"nothing to promote: release {current.release} of {source} is empty")

    async def fetch(item: tuple[str, FileEntry]) -> Wanted | str:
        path, entry = item
        try:
            body = await bucket.read_body(entry.sha256, entry.size)
        except ReleaseError as exc:
            return f"{path}: {exc}"
        origin = Origin(body_key(entry.sha256), None)
        return Wanted(path, len(body), _md5(body), xxh3_hex(body), body, origin)

    fetched = await bucket.pool(sorted(current.files.items()), fetch)
    return {w.path: w for w in fetched if isinstance(w, Wanted)}, [p for p in fetched if isinstance(p, str)]


async def _read_record(bucket: Bucket, env: str, deploy_id: str) -> StoredDeploy:
    """The one exact record of `deploy_id` (record.find_record), its contents checked against the ask."""
    found = find_record(await bucket.list_stamped(records_prefix(env)), env, deploy_id)
    body = (await bucket.get_version(found.key, None, max_bytes=MAX_RECORD_BYTES)).body
    return parse_record(body, found.key, deploy_id=deploy_id, env=env)


async def _fetch_verified(bucket: Bucket, item: tuple[str, LiveObject]) -> Wanted | str:
    """One live version of the promoted environment, checked as the mirror checks it; or why not."""
    path, obj = item
    store = await bucket.store()

    async def once() -> Wanted:  # a body that fails its check is fetched again, like a failed request
        fetched = await store.get_version(obj.key, obj.version_id, max_bytes=obj.size + BODY_ROOM)
        digest = verify(fetched)
        body = fetched.body
        return Wanted(path, len(body), _md5(body), digest, body, Origin(obj.key, obj.version_id))

    try:
        return await bucket.retry(once)
    except DagmirrorError as exc:
        return f"{path}: {exc}"


def _wants_airflow(config: DeployConfig, env: str, flag: bool | None) -> bool:
    return config.policy(env).airflow_check if flag is None else flag


def _from_body(path: str, body: bytes) -> Wanted:
    return Wanted(path, len(body), _md5(body), xxh3_hex(body), body)


def _md5(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()
