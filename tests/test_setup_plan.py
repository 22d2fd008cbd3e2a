"""The pure side of `bucket init` (dagmirror/setup/bucketplan.py) with literals, and its application order
on the in-memory fake."""

from __future__ import annotations

from typing import Any

from dagmirror.setup.bucketplan import BLOCK_ALL, BucketSpec, Current, lifecycle_rules, plan, tls_statement
from dagmirror.setup.init import init_bucket
from dagmirror.setup.memory import MemoryAdmin, MemoryBucket

SPEC = BucketSpec("acme-airflow")


def configured(spec: BucketSpec = SPEC, **changes: Any) -> Current:
    fields: dict[str, Any] = {
        "exists": True,
        "versioning": "Enabled",
        "public_access_block": dict(BLOCK_ALL),
        "policy": {"Version": "2012-10-17", "Statement": [tls_statement(spec.bucket)]},
        "lifecycle": tuple(lifecycle_rules(spec)[0]),
    }
    return Current(**(fields | changes))


def test_a_configured_bucket_needs_nothing() -> None:
    assert plan(SPEC, configured()).empty


def test_s3_echoing_a_document_differently_is_not_a_change() -> None:
    """S3 returns booleans as strings, single-item lists as strings, and adds fields of its own."""
    echoed = dict(tls_statement(SPEC.bucket))
    echoed["Condition"] = {"Bool": {"aws:SecureTransport": False}}
    echoed["Action"] = ["s3:*"]
    rules = [dict(r, Prefix="") if i else dict(r) for i, r in enumerate(lifecycle_rules(SPEC)[0])]
    assert plan(SPEC, configured(policy={"Statement": [echoed]}, lifecycle=tuple(rules))).empty


def test_a_tampered_dagmirror_statement_is_replaced_in_place_and_foreign_ones_stay() -> None:
    foreign = {"Sid": "Other", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*"}
    weakened = tls_statement(SPEC.bucket) | {"Resource": ["arn:aws:s3:::acme-airflow"]}
    result = plan(SPEC, configured(policy={"Statement": [weakened, foreign]}))
    assert result.changes == (
        "update bucket policy statement DagmirrorDenyInsecureTransport"
        " (refuse every request not made over TLS)",
    )
    assert result.policy is not None
    assert result.policy["Statement"] == [tls_statement(SPEC.bucket), foreign]


def test_suspended_versioning_and_a_partial_public_access_block_are_turned_on() -> None:
    result = plan(
        SPEC, configured(versioning="Suspended", public_access_block=BLOCK_ALL | {"BlockPublicPolicy": False})
    )
    assert result.versioning
    assert result.public_access_block == BLOCK_ALL
    assert result.changes[0] == "turn on versioning (now Suspended)"


def test_foreign_rules_that_expire_release_objects_are_warned_about_not_removed() -> None:
    bad = {
        "ID": "old-stuff",
        "Status": "Enabled",
        "Filter": {"Prefix": "metadata/"},
        "Expiration": {"Days": 365},
    }
    fine = {"ID": "tmp", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 1}}
    everything = {"ID": "all", "Status": "Enabled", "Filter": {}, "Expiration": {"Days": 900}}
    result = plan(SPEC, configured(lifecycle=(bad, fine, everything, *lifecycle_rules(SPEC)[0])))
    assert result.empty
    assert len(result.warnings) == 2
    assert result.warnings[0].startswith(
        "lifecycle rule 'old-stuff' (not dagmirror's) expires current objects"
    )
    assert "metadata/releases/" in result.warnings[0]
    assert "'(all)'" in result.warnings[1]


def test_no_rule_of_dagmirror_expires_current_release_objects() -> None:
    for rule in lifecycle_rules(SPEC)[0]:
        prefix = rule["Filter"]["Prefix"]
        days = rule.get("Expiration", {}).get("Days")
        assert days is None or not "metadata/releases/".startswith(prefix), rule


async def test_init_applies_in_order_and_a_dry_run_writes_nothing() -> None:
    state = MemoryBucket(exists=False)
    admin = MemoryAdmin(state)
    spec = BucketSpec("acme-airflow", queue_arn="arn:aws:sqs:eu-west-1:1:q")
    dry = await init_bucket(admin, spec, dry_run=True)
    assert dry.create
    assert state.writes == []
    await init_bucket(admin, spec, dry_run=False)
    assert state.writes == [
        "create_bucket",
        "put_public_access_block",
        "enable_versioning",
        "put_policy",
        "put_lifecycle",
        "put_notification",
    ]
    again = await init_bucket(admin, spec, dry_run=False)
    assert again.empty
    assert len(state.writes) == 6
