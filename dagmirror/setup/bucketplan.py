"""What `dagmirror bucket init` would change (pure): the bucket's configuration as it is (`Current`, in the
S3 API's own shapes) and as the flags want it (`BucketSpec`) -> a `BucketPlan` of changes, each with the
line `--dry-run` prints.

Ownership: dagmirror's lifecycle rules and notification configurations have an ID starting `dagmirror-`,
its bucket policy statements a Sid starting `Dagmirror` (IAM Sids are alphanumeric). Everything else is
foreign and is kept as it is, in its place; only dagmirror's own items are added, updated, or removed
when a flag asks for that (`--audit-days 0`). An item counts as up to date when the bucket's copy holds
every field dagmirror sets with the same value (S3 may echo a document with extra fields or reordered).

Lifecycle, and why not release bodies by age: bodies, manifests and archives under `metadata/releases/`
are content-addressed and shared by every release of every environment; a body uploaded a year ago may be
in today's release. Expiring them by age would break releases still pointed to, so only `dagmirror gc`
removes them (it knows which releases are kept). The rules are: noncurrent versions of every object
after N days (what gc and deploys delete stays recoverable for that long), expired delete markers and
incomplete multipart uploads; audit logs and instance status objects after their own number of days (a
live instance rewrites its status as a heartbeat, so only departed instances' statuses expire)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dagmirror.manifest import ROOT
from dagmirror.setup.iam import FLEET, SID_PREFIX, SYNC_LOGS

RULE_PREFIX = "dagmirror-"
NONCURRENT_RULE = f"{RULE_PREFIX}noncurrent-versions"
AUDIT_RULE = f"{RULE_PREFIX}audit-logs"
STATUS_RULE = f"{RULE_PREFIX}instance-status"
TLS_SID = f"{SID_PREFIX}DenyInsecureTransport"
EVENTS = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
BLOCK_ALL = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
# Prefixes whose current objects must never expire by age: releases still pointed to need them.
PROTECTED = (ROOT, "dags/", "metadata/deploys/")


@dataclass(frozen=True)
class BucketSpec:
    bucket: str
    region: str | None = None
    tls_only: bool = True
    noncurrent_days: int = 30
    audit_days: int = 90  # 0: keep audit logs forever (no rule)
    status_days: int = 30  # 0: keep status objects forever (no rule)
    multipart_days: int = 7
    queue_arn: str | None = None  # S3 event notifications to this SQS queue
    dags_root: str = "dags/"


@dataclass(frozen=True)
class Current:
    """The bucket's configuration now, as the S3 API returns it; empty/None where nothing is set."""

    exists: bool
    versioning: str = ""  # "", "Enabled" or "Suspended"
    public_access_block: Mapping[str, Any] | None = None
    policy: Mapping[str, Any] | None = None
    lifecycle: tuple[Mapping[str, Any], ...] = ()
    notification: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BucketPlan:
    """What to write; None/False: leave it. `changes`: one line per change; `warnings`: what init does not
    change but a person should look at."""

    create: bool = False
    versioning: bool = False
    public_access_block: Mapping[str, Any] | None = None
    policy: Mapping[str, Any] | None = None
    lifecycle: tuple[Mapping[str, Any], ...] | None = None
    notification: Mapping[str, Any] | None = None
    changes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.changes


def plan(spec: BucketSpec, current: Current) -> BucketPlan:
    changes: list[str] = []
    if not current.exists:
        changes.append(f"create bucket {spec.bucket}" + (f" in {spec.region}" if spec.region else ""))
    versioning = current.versioning != "Enabled"
    if versioning:
        changes.append(f"turn on versioning (now {current.versioning or 'never enabled'})")
    pab = None if _holds(current.public_access_block or {}, BLOCK_ALL) else dict(BLOCK_ALL)
    if pab is not None:
        changes.append("block all public access (the four public access block settings)")
    policy = _policy(spec, current.policy, changes)
    lifecycle = _lifecycle(spec, current.lifecycle, changes)
    notification = _notification(spec, current.notification, changes)
    return BucketPlan(
        create=not current.exists,
        versioning=versioning,
        public_access_block=pab,
        policy=policy,
        lifecycle=lifecycle,
        notification=notification,
        changes=tuple(changes),
        warnings=tuple(lifecycle_warnings(current.lifecycle)),
    )


def tls_statement(bucket: str) -> dict[str, Any]:
    return {
        "Sid": TLS_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def lifecycle_rules(spec: BucketSpec) -> tuple[list[dict[str, Any]], set[str]]:
    """dagmirror's rules for `spec`, and the IDs of its rules that must go (a flag turned them off)."""
    rules = [
        {
            "ID": NONCURRENT_RULE,
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "NoncurrentVersionExpiration": {"NoncurrentDays": spec.noncurrent_days},
            "Expiration": {"ExpiredObjectDeleteMarker": True},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": spec.multipart_days},
        }
    ]
    dropped: set[str] = set()
    for rule_id, prefix, days in (
        (AUDIT_RULE, SYNC_LOGS, spec.audit_days),
        (STATUS_RULE, FLEET, spec.status_days),
    ):
        if days:
            rules.append(
                {
                    "ID": rule_id,
                    "Status": "Enabled",
                    "Filter": {"Prefix": prefix},
                    "Expiration": {"Days": days},
                }
            )
        else:
            dropped.add(rule_id)
    return rules, dropped


def queue_configurations(spec: BucketSpec) -> list[dict[str, Any]]:
    """Two configurations, one per prefix (S3 allows one prefix filter each): release pointers (a release
    mirror wakes on its pointer) and the DAG files (an objects-mode mirror wakes on its files)."""
    assert spec.queue_arn is not None
    return [
        {
            "Id": f"{RULE_PREFIX}{name}",
            "QueueArn": spec.queue_arn,
            "Events": list(EVENTS),
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
        }
        for name, prefix in (("release-pointers", f"{ROOT}pointers/"), ("dag-files", spec.dags_root))
    ]


def lifecycle_warnings(rules: Sequence[Mapping[str, Any]]) -> list[str]:
    """Foreign rules that expire current objects where releases live: init keeps them, a person decides."""
    found = []
    for rule in rules:
        rule_id = str(rule.get("ID", ""))
        expiration = rule.get("Expiration") or {}
        if rule_id.startswith(RULE_PREFIX) or rule.get("Status") != "Enabled":
            continue
        if not ("Days" in expiration or "Date" in expiration):
            continue
        prefix = _rule_prefix(rule)
        hit = [p for p in PROTECTED if p.startswith(prefix) or prefix.startswith(p)]
        if hit:
            found.append(
                f"lifecycle rule {rule_id!r} (not dagmirror's) expires current objects under "
                f"{prefix or '(all)'!r}: releases still pointed to can lose files under {', '.join(hit)}; "
                "dagmirror gc removes release objects safely"
            )
    return found


def _rule_prefix(rule: Mapping[str, Any]) -> str:
    filt = rule.get("Filter") or {}
    prefix = filt.get("Prefix", (filt.get("And") or {}).get("Prefix", rule.get("Prefix", "")))
    return str(prefix or "")


def _policy(spec: BucketSpec, current: Mapping[str, Any] | None, changes: list[str]) -> dict[str, Any] | None:
    if not spec.tls_only:
        return None
    statements = list((current or {}).get("Statement") or [])
    statements = [statements] if isinstance(statements, Mapping) else statements
    merged, lines = _merge(
        statements, [tls_statement(spec.bucket)], set(), "Sid", _ours_sid, "bucket policy statement"
    )
    if not lines:
        return None
    changes += [f"{line} (refuse every request not made over TLS)" for line in lines]
    return {"Version": (current or {}).get("Version", "2012-10-17"), "Statement": merged}


def _lifecycle(
    spec: BucketSpec, current: Sequence[Mapping[str, Any]], changes: list[str]
) -> tuple[Mapping[str, Any], ...] | None:
    ours, dropped = lifecycle_rules(spec)
    merged, lines = _merge(list(current), ours, dropped, "ID", _ours_id, "lifecycle rule")
    changes += [
        f"{line}: keep those objects forever"
        if line.startswith("remove")
        else f"{line}: {_describe_rule(name, spec)}"
        for line, name in _with_ids(lines)
    ]
    return tuple(merged) if lines else None


def _notification(spec: BucketSpec, current: Mapping[str, Any], changes: list[str]) -> dict[str, Any] | None:
    if spec.queue_arn is None:
        return None
    queues = list(current.get("QueueConfigurations") or [])
    merged, lines = _merge(queues, queue_configurations(spec), set(), "Id", _ours_id, "event notification")
    if not lines:
        return None
    changes += [f"{line} to {spec.queue_arn}" for line in lines]
    kept = {k: v for k, v in current.items() if k != "ResponseMetadata"}
    return kept | {"QueueConfigurations": merged}


def _merge(
    existing: list[Mapping[str, Any]],
    ours: list[dict[str, Any]],
    dropped: set[str],
    key: str,
    owned: Callable[[str], bool],
    noun: str,
) -> tuple[list[Mapping[str, Any]], list[str]]:
    """Foreign items stay where they are; each of ours is kept when up to date, else replaced in place
    (or appended); ours named in `dropped` go. Returns the new list and one line per change."""
    wanted = {str(item[key]): item for item in ours}
    merged: list[Mapping[str, Any]] = []
    lines: list[str] = []
    for item in existing:
        name = str(item.get(key, ""))
        if not owned(name) or (name not in wanted and name not in dropped):
            merged.append(item)
        elif name in dropped:
            lines.append(f"remove {noun} {name}")
        else:
            new = wanted.pop(name)
            merged.append(item if _holds(item, new) else new)
            lines += [] if _holds(item, new) else [f"update {noun} {name}"]
    for name, item in wanted.items():
        merged.append(item)
        lines.append(f"add {noun} {name}")
    return merged, lines


def _holds(have: Any, want: Any) -> bool:
    """`have` has every field of `want` with the same value (lists: same length, item by item; a single
    value equals a one-item list; booleans equal their lowercase strings, as S3 echoes them)."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(k in have and _holds(have[k], v) for k, v in want.items())
    if isinstance(want, list) and len(want) == 1 and not isinstance(have, list):
        return _holds(have, want[0])
    if isinstance(want, list):
        have = have if isinstance(have, list) else [have]
        return len(have) == len(want) and all(_holds(h, w) for h, w in zip(have, want, strict=True))
    if isinstance(have, list) and len(have) == 1:
        have = have[0]
    return _scalar(have) == _scalar(want)


def _scalar(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _ours_id(name: str) -> bool:
    return name.startswith(RULE_PREFIX)


def _ours_sid(name: str) -> bool:
    return name.startswith(SID_PREFIX)


def _with_ids(lines: list[str]) -> list[tuple[str, str]]:
    return [(line, line.rsplit(" ", 1)[-1]) for line in lines]


def _describe_rule(rule_id: str, spec: BucketSpec) -> str:
    return {
        NONCURRENT_RULE: f"expire noncurrent versions after {spec.noncurrent_days} days, expired delete "
        f"markers, incomplete uploads after {spec.multipart_days} days",
        AUDIT_RULE: f"expire audit logs ({SYNC_LOGS}) after {spec.audit_days} days",
        STATUS_RULE: f"expire instance status objects ({FLEET}) not rewritten for {spec.status_days} days",
    }.get(rule_id, rule_id)
