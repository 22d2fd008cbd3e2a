"""Least-privilege IAM policies for the three roles of a dagmirror bucket (pure: data in, JSON-able out).

- **mirror** (`dagmirror sync/run`): lists and reads its environments' `dags/<env>/`, reads the release
  objects it needs (its environments' pointers; manifests, archives and bodies, which are shared and
  content-addressed), and writes only its status objects (`metadata/fleet/dags/<env>/`) and audit logs
  (`metadata/sync-logs/`).
- **deployer** (`dagmirror deploy/rollback/promote/history`, `fleet`): reads and writes its environments
  (files, pointers, deploy records), writes the shared content-addressed release objects, reads the
  status objects of its environments; `--read-env` adds read-only environments (the source of a promote).
- **admin** (`dagmirror bucket init`, `gc`): the bucket's configuration, and deletes under
  `metadata/releases/`. Nobody else may delete a release object or change the bucket.

Prefix conditions are exact: every prefix ends in `/`, so `dags/production/` never matches
`dags/production-old/`. Environment names are checked so that no IAM wildcard (`*`, `?`) or policy
variable (`${...}`) can widen a grant. docs/setup.md explains each grant."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dagmirror.config.deploy import ENV_NAME  # no '*', '?', '$', '/': nothing widens a grant
from dagmirror.errors import ConfigError
from dagmirror.manifest import POINTERS, PROBE_KEY, ROOT

Role = Literal["mirror", "deployer", "admin"]
ROLES: tuple[Role, ...] = ("mirror", "deployer", "admin")
VERSION = "2012-10-17"
SID_PREFIX = "Dagmirror"
FLEET = "metadata/fleet/"
SYNC_LOGS = "metadata/sync-logs/"
DEPLOYS = "metadata/deploys/"
# Shared by every environment: addressed by SHA-256, so a reader needs the id from its own pointer first.
SHARED_RELEASE_OBJECTS = (f"{ROOT}manifests/", f"{ROOT}archives/", f"{ROOT}bodies/")
_VPCE = re.compile(r"^vpce-[0-9a-z]{1,32}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
BUCKET_READ = ("s3:GetBucketLocation", "s3:GetBucketVersioning")
ADMIN_BUCKET = (
    "s3:CreateBucket",
    "s3:ListBucket",
    "s3:ListBucketVersions",
    "s3:GetBucketLocation",
    "s3:GetBucketVersioning",
    "s3:PutBucketVersioning",
    "s3:GetBucketPublicAccessBlock",
    "s3:PutBucketPublicAccessBlock",
    "s3:GetBucketPolicy",
    "s3:PutBucketPolicy",
    "s3:GetLifecycleConfiguration",
    "s3:PutLifecycleConfiguration",
    "s3:GetBucketNotification",
    "s3:PutBucketNotification",
)


@dataclass(frozen=True)
class PolicyRequest:
    role: Role
    bucket: str
    envs: tuple[str, ...] = ()
    read_envs: tuple[str, ...] = ()  # deployer only: environments it may read (promote's source)
    vpce: str | None = None
    dags_root: str = "dags/"  # environment E lives at <dags_root>E/

    @classmethod
    def create(
        cls,
        role: str,
        bucket: str,
        envs: Sequence[str] = (),
        *,
        read_envs: Sequence[str] = (),
        vpce: str | None = None,
        dags_root: str = "dags/",
    ) -> PolicyRequest:
        """Every bad field at once, one line each, in one ConfigError."""
        problems = _problems(role, bucket, envs, read_envs, vpce, dags_root)
        if problems:
            raise ConfigError("\n".join(problems))
        root = dags_root.strip("/") + "/"
        return cls(role, bucket, tuple(dict.fromkeys(envs)), tuple(dict.fromkeys(read_envs)), vpce, root)  # type: ignore[arg-type]

    def env_prefix(self, env: str) -> str:
        return f"{self.dags_root}{env}/"


def _problems(
    role: str, bucket: str, envs: Sequence[str], read_envs: Sequence[str], vpce: str | None, root: str
) -> list[str]:
    problems = [] if role in ROLES else [f"unknown role {role!r}: one of {', '.join(ROLES)}"]
    if not _BUCKET.match(bucket):
        problems.append(f"invalid bucket name {bucket!r}")
    problems += [
        f"invalid environment name {e!r} (letters, digits, . _ -)"
        for e in (*envs, *read_envs)
        if not ENV_NAME.match(e)
    ]
    if role in ("mirror", "deployer") and not envs:
        problems.append(f"a {role} needs at least one --env")
    if role != "deployer" and read_envs:
        problems.append("--read-env is for the deployer role only")
    if role == "admin" and envs:
        problems.append("the admin role covers the whole bucket: give no --env")
    if vpce is not None and not _VPCE.match(vpce):
        problems.append(f"invalid VPC endpoint id {vpce!r} (vpce-...)")
    parts = root.strip("/").split("/")
    if not root.strip("/") or any(not ENV_NAME.match(p) for p in parts):
        problems.append(f"invalid DAGs root {root!r} (e.g. dags/)")
    return problems


def policy(req: PolicyRequest) -> dict[str, Any]:
    """The IAM policy document (identity-based: attach it to the role) for `req`."""
    build = {"mirror": _mirror, "deployer": _deployer, "admin": _admin}[req.role]
    statements = [s for s in build(req) if s is not None]
    if req.vpce is not None:
        for s in statements:
            s.setdefault("Condition", {}).setdefault("StringEquals", {})["aws:SourceVpce"] = req.vpce
    return {"Version": VERSION, "Statement": statements}


def _mirror(req: PolicyRequest) -> list[dict[str, Any] | None]:
    envs = [req.env_prefix(e) for e in req.envs]
    return [
        _list("ListEnvironments", req.bucket, "s3:ListBucket", envs),
        _bucket("ReadBucketSettings", req.bucket, BUCKET_READ),
        _objects(
            "ReadEnvironmentsAndReleases",
            req.bucket,
            ["s3:GetObject"],
            [*envs, *(POINTERS + p for p in envs), *SHARED_RELEASE_OBJECTS],
        ),
        _objects(
            "WriteOwnStatusAndAudit", req.bucket, ["s3:PutObject"], [*(FLEET + p for p in envs), SYNC_LOGS]
        ),
    ]


def _deployer(req: PolicyRequest) -> list[dict[str, Any] | None]:
    envs = [req.env_prefix(e) for e in req.envs]
    reads = [req.env_prefix(e) for e in req.read_envs if e not in req.envs]
    records = [f"{DEPLOYS}{e}/" for e in req.envs]
    fleet = [FLEET + p for p in envs]
    return [
        # Unconditional: without s3:ListBucket, S3 answers 403 instead of 404 for a missing key, and a
        # publish HEADs bodies to learn which ones are missing (keys only; reading needs s3:GetObject).
        _bucket("ListBucket", req.bucket, ("s3:ListBucket",)),
        _list("ListVersionsOfEnvironments", req.bucket, "s3:ListBucketVersions", [*envs, *reads]),
        _bucket("ReadBucketSettings", req.bucket, BUCKET_READ),
        _objects(
            "ReadEnvironmentsRecordsAndReleases",
            req.bucket,
            ["s3:GetObject", "s3:GetObjectVersion"],
            [*envs, *reads, *(POINTERS + p for p in envs), *records, *fleet, *SHARED_RELEASE_OBJECTS],
        ),
        _objects(
            "WriteEnvironmentsAndReleases",
            req.bucket,
            ["s3:PutObject"],
            [*envs, *(POINTERS + p for p in envs), *records, *SHARED_RELEASE_OBJECTS, PROBE_KEY],
        ),
        # A delete in a versioned bucket leaves a delete marker; no s3:DeleteObjectVersion: nothing a
        # deployer does is unrecoverable.
        _objects("DeleteEnvironmentFiles", req.bucket, ["s3:DeleteObject"], envs),
    ]


def _admin(req: PolicyRequest) -> list[dict[str, Any] | None]:
    return [
        _bucket("ConfigureBucket", req.bucket, ADMIN_BUCKET),
        _objects("ReadEverything", req.bucket, ["s3:GetObject", "s3:GetObjectVersion"], [""]),
        _objects("CollectReleases", req.bucket, ["s3:DeleteObject"], [ROOT]),
    ]


def _bucket(sid: str, bucket: str, actions: Sequence[str]) -> dict[str, Any]:
    return {"Sid": SID_PREFIX + sid, "Effect": "Allow", "Action": list(actions), "Resource": _arn(bucket)}


def _list(sid: str, bucket: str, action: str, prefixes: Sequence[str]) -> dict[str, Any] | None:
    """A listing limited to `prefixes` (each ending in '/'): the prefix itself or anything below it."""
    if not prefixes:
        return None
    allowed = [p for prefix in prefixes for p in (prefix, prefix + "*")]
    statement = _bucket(sid, bucket, (action,))
    statement["Condition"] = {"StringLike": {"s3:prefix": allowed}}
    return statement


def _objects(sid: str, bucket: str, actions: Sequence[str], keys: Sequence[str]) -> dict[str, Any]:
    """`actions` on every key under each of `keys` (a prefix ending in '/', '' for all) or on that key."""
    resources = [_arn(bucket, k + "*" if k == "" or k.endswith("/") else k) for k in keys]
    return {"Sid": SID_PREFIX + sid, "Effect": "Allow", "Action": list(actions), "Resource": resources}


def _arn(bucket: str, key: str | None = None) -> str:
    return f"arn:aws:s3:::{bucket}" if key is None else f"arn:aws:s3:::{bucket}/{key}"
