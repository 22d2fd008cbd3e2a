"""`dagmirror doctor`'s verdicts (pure): each function turns what doctor.py gathered into one `Check`, ok /
warn / fail with the fix. An answer that could not be had arrives as the error's one line (`str`)."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal

from dagmirror.errors import ReleaseError
from dagmirror.manifest import Pointer, parse_pointer

Status = Literal["ok", "warn", "fail"]
SKEW_WARN = 30.0  # seconds: S3's Date has one-second resolution and the request takes time
SKEW_FAIL = 300.0  # SigV4 refuses requests 15 min off; staleness and grace periods go wrong well before
MIN_FREE = 100 << 20  # bytes free below which DEST is tight whatever the release size


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def failed(checks: list[Check]) -> bool:
    return any(c.status == "fail" for c in checks)


def credentials(identity: str | Exception, *, no_credentials: bool) -> Check:
    if not isinstance(identity, Exception):
        return Check("credentials", "ok", f"authenticated as {identity}")
    if no_credentials:
        return Check(
            "credentials",
            "fail",
            str(identity),
            "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or run where a role is attached (IRSA, instance profile)",
        )
    code = getattr(identity, "code", None) or ""
    if code in ("InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidAccessKeyId"):
        return Check("credentials", "fail", str(identity), "the credentials are wrong or expired: renew them")
    return Check(
        "credentials",
        "warn",
        f"credentials found, identity unknown (STS: {identity})",
        "S3-compatible servers often have no STS; set AWS_ENDPOINT_URL_STS if yours has one",
    )


def endpoint(where: str, region: str, bucket_region: str | Exception) -> Check:
    detail = f"endpoint {where}, region {region}"
    if bucket_region == "?":  # not asked: the bucket check says why
        return Check("region", "ok", detail)
    if isinstance(bucket_region, Exception):
        return Check(
            "region",
            "warn",
            f"{detail}; bucket region unknown ({bucket_region})",
            "grant s3:GetBucketLocation to check it (dagmirror iam-policy includes it)",
        )
    if bucket_region != region:
        return Check(
            "region",
            "fail",
            f"{detail}; the bucket is in {bucket_region}",
            f"set AWS_REGION={bucket_region} (or --region {bucket_region})",
        )
    return Check("region", "ok", detail)


def clock(server_date: str | Exception, now: float) -> Check:
    if isinstance(server_date, Exception):
        return Check("clock", "warn", f"S3's Date unknown ({server_date})", "")
    try:
        skew = now - parsedate_to_datetime(server_date).timestamp()
    except (TypeError, ValueError):
        return Check("clock", "warn", f"S3 sent an unreadable Date: {server_date!r}", "")
    detail = f"local clock {abs(skew):.0f}s {'ahead of' if skew > 0 else 'behind'} S3"
    fix = "synchronise the clock (chrony or systemd-timesyncd against NTP)"
    if abs(skew) > SKEW_FAIL:
        return Check("clock", "fail", detail, fix)
    if abs(skew) > SKEW_WARN:
        return Check("clock", "warn", detail, fix)
    return Check("clock", "ok", detail)


def bucket(bucket_name: str, exists: bool | Exception, versioning: str | Exception) -> Check:
    if isinstance(exists, Exception):
        return Check("bucket", "fail", f"s3://{bucket_name} not reachable: {exists}", _access_fix(exists))
    if not exists:
        return Check(
            "bucket",
            "fail",
            f"s3://{bucket_name} does not exist",
            f"dagmirror bucket init s3://{bucket_name} (as admin), or fix the name",
        )
    if isinstance(versioning, Exception):
        return Check(
            "bucket",
            "warn",
            f"s3://{bucket_name} reachable; versioning unknown ({versioning})",
            "grant s3:GetBucketVersioning (dagmirror iam-policy includes it)",
        )
    if versioning != "Enabled":
        return Check(
            "bucket",
            "warn",
            f"s3://{bucket_name} reachable; versioning {versioning or 'off'}",
            f"dagmirror bucket init s3://{bucket_name}: rollbacks of plain deploys need versions",
        )
    return Check("bucket", "ok", f"s3://{bucket_name} reachable, versioning on")


def releases(prefix: str, body: bytes | Exception | None) -> tuple[Check, Pointer | None]:
    if body is None:
        return Check(
            "releases",
            "warn",
            f"no release pointer for {prefix or '(bucket root)'}: mirrors list objects",
            "publish one: dagmirror deploy ... (docs/releases.md)",
        ), None
    if isinstance(body, Exception):
        return Check(
            "releases",
            "warn",
            f"release pointer not readable: {body}",
            "a missing pointer reads as AccessDenied without s3:ListBucket; else grant s3:GetObject on "
            "metadata/releases/pointers/<prefix>",
        ), None
    try:
        pointer = parse_pointer(body, prefix=prefix)
    except ReleaseError as exc:
        return Check("releases", "fail", f"release pointer unreadable: {exc}", "redeploy, or roll back"), None
    size = f"{pointer.files} files, {pointer.size / 1e6:.1f} MB"
    return Check("releases", "ok", f"release {pointer.release[:12]} (seq {pointer.seq}), {size}"), pointer


def read_access(prefix: str, count: int | Exception) -> Check:
    if isinstance(count, Exception):
        return Check("read", "fail", f"cannot list {prefix or '(bucket root)'}: {count}", _access_fix(count))
    if count == 0:
        return Check(
            "read",
            "warn",
            f"{prefix or '(bucket root)'} lists no object",
            "deploy to the environment, or check the prefix (s3://BUCKET/dags/<env>)",
        )
    more = "+" if count >= 1000 else ""
    return Check("read", "ok", f"{prefix or '(bucket root)'} lists {count}{more} objects")


def write_access(role: str, probes: dict[str, str | Exception]) -> Check:
    """`probes`: key -> 'denied' | 'allowed' | the error. A mirror must be denied everywhere but its status
    key; a deployer must be allowed in its environment."""
    errors = {k: v for k, v in probes.items() if isinstance(v, Exception)}
    if errors:
        key, exc = next(iter(errors.items()))
        return Check("write", "warn", f"write access not determined for {key}: {exc}", "")
    allowed = sorted(k for k, v in probes.items() if v == "allowed" and not _status_key(k))
    if role == "mirror" and allowed:
        return Check(
            "write",
            "fail",
            f"these credentials may write {', '.join(allowed)}",
            "a mirror should only read: dagmirror iam-policy --role mirror --bucket B --env E",
        )
    if role == "deployer" and not allowed:
        return Check(
            "write",
            "fail",
            "these credentials may not write the environment",
            "dagmirror iam-policy --role deployer --bucket B --env E",
        )
    status = [k for k, v in probes.items() if _status_key(k) and v == "denied"]
    if role == "mirror" and status:
        return Check(
            "write",
            "warn",
            f"cannot publish instance status ({status[0]})",
            "grant s3:PutObject on metadata/fleet/<prefix>* (dagmirror iam-policy --role mirror)",
        )
    what = "no write outside its status and audit objects" if role == "mirror" else "writes its environment"
    return Check("write", "ok", f"{role}: {what} (PutObject probed, nothing written)")


def _status_key(key: str) -> bool:
    return key.startswith("metadata/fleet/")


def _access_fix(exc: Exception) -> str:
    code = getattr(exc, "code", None) or ""
    if code in ("AccessDenied", "403", "AllAccessDisabled"):
        return (
            "attach the policy of `dagmirror iam-policy --role ROLE --bucket B --env E` to these credentials"
        )
    if code == "NoSuchBucket":
        return "dagmirror bucket init s3://BUCKET (as admin), or fix the name"
    return "check the endpoint, the network path and the credentials"


def dest_filesystem(dest: str, mounts: list[str], dest_is_mount: bool) -> Check:
    if mounts:
        return Check(
            "dest-filesystem",
            "fail",
            f"{dest} spans filesystems: {', '.join(mounts[:3])} mounted inside",
            "renames across filesystems fail: give DEST a folder on one filesystem",
        )
    if dest_is_mount:
        return Check(
            "dest-filesystem",
            "warn",
            f"{dest} is a mount point",
            "fine for --switch files; --switch symlink needs DEST inside the volume (e.g. /dags/current)",
        )
    return Check("dest-filesystem", "ok", f"{dest} on one filesystem")


def dest_writable(dest: str, error: str | None) -> Check:
    if error is not None:
        return Check(
            "dest-writable",
            "fail",
            f"cannot write in {dest}: {error}",
            "give the user dagmirror runs as write access (Kubernetes: fsGroup, or an emptyDir)",
        )
    return Check("dest-writable", "ok", f"{dest} writable")


def dest_space(dest: str, free: int, pointer: Pointer | None) -> Check:
    detail = f"{free / 1e6:.1f} MB free"
    if pointer is not None:
        need = 2 * pointer.size  # the tree and the content store; generations are hard links
        detail += f", the release needs about {need / 1e6:.1f} MB (files + content store)"
        if free < need:
            return Check("dest-space", "fail", f"{dest}: {detail}", "give DEST a larger volume")
        if free < 2 * need:
            return Check("dest-space", "warn", f"{dest}: {detail}", "the next larger release may not fit")
    if free < MIN_FREE:
        return Check("dest-space", "warn", f"{dest}: {detail}", "less than 100 MB free: give DEST more room")
    return Check("dest-space", "ok", f"{dest}: {detail}")


def readyz(url: str, status: int | Exception, body: str) -> Check:
    if isinstance(status, Exception):
        return Check(
            "readyz", "fail", f"{url}: {status}", "is `dagmirror run --http HOST:PORT` running there?"
        )
    if status == 200:
        return Check("readyz", "ok", f"{url}: ready")
    return Check("readyz", "fail", f"{url}: {status} {body[:300]}", "see the daemon's log for its last pass")
