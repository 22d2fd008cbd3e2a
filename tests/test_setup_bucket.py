"""`dagmirror bucket init` against moto server over HTTP: creates and configures, a second run changes
nothing, --dry-run writes nothing, foreign lifecycle rules, policy statements and notifications survive."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from dagmirror.setup.bucketplan import BucketSpec
from dagmirror.setup.iameval import Request, evaluate
from dagmirror.setup.init import init_bucket
from dagmirror.source.admin import S3Admin

from .helpers import dagmirror, sdk_credentials

FOREIGN_RULE = {
    "ID": "team-tmp-cleanup",
    "Status": "Enabled",
    "Filter": {"Prefix": "tmp/"},
    "Expiration": {"Days": 3},
}
QUEUE = "arn:aws:sqs:us-east-1:123456789012:dagmirror-events"


def new_name() -> str:
    return f"init-{uuid.uuid4().hex[:12]}"


def foreign_statement(bucket: str) -> dict[str, Any]:
    return {
        "Sid": "AnalyticsReadsReports",
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::123456789012:role/analytics"},
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/reports/*",
    }


def init(bucket: str, endpoint: str, *flags: str) -> Any:
    return dagmirror("bucket", "init", f"s3://{bucket}", "--no-tls-only", *flags, endpoint=endpoint)


def configuration(s3: Any, bucket: str) -> dict[str, Any]:
    def get(call: str, field: str) -> Any:
        try:
            return getattr(s3, call)(Bucket=bucket).get(field)
        except ClientError as exc:
            if exc.response["Error"]["Code"].startswith("NoSuch"):
                return None
            raise

    policy = get("get_bucket_policy", "Policy")
    return {
        "versioning": get("get_bucket_versioning", "Status"),
        "public": get("get_public_access_block", "PublicAccessBlockConfiguration"),
        "policy": json.loads(policy) if policy else None,
        "rules": get("get_bucket_lifecycle_configuration", "Rules"),
        "queues": get("get_bucket_notification_configuration", "QueueConfigurations"),
    }


def bucket_exists(s3: Any, bucket: str) -> bool:
    return bucket in {b["Name"] for b in s3.list_buckets()["Buckets"]}


def test_init_creates_and_configures_a_missing_bucket_and_a_second_run_changes_nothing(
    s3: Any, moto_endpoint: str
) -> None:
    name = new_name()
    first = init(name, moto_endpoint, "--envs", "dev,production")
    assert first.code == 0, first.stderr
    assert f"s3://{name}: made 6 change(s)" in first.stdout
    assert "dagmirror iam-policy --role mirror --bucket" in first.stdout
    config = configuration(s3, name)
    assert config["versioning"] == "Enabled"
    assert config["public"] == dict.fromkeys(
        ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True
    )
    rules = {r["ID"]: r for r in config["rules"]}
    assert set(rules) == {
        "dagmirror-noncurrent-versions",
        "dagmirror-audit-logs",
        "dagmirror-instance-status",
    }
    assert rules["dagmirror-noncurrent-versions"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    assert rules["dagmirror-audit-logs"]["Filter"] == {"Prefix": "metadata/sync-logs/"}
    assert not any(r["Filter"].get("Prefix", "").startswith("metadata/releases") for r in rules.values())

    second = init(name, moto_endpoint, "--json")
    assert second.code == 0, second.stderr
    assert second.report == {"bucket": name, "dry_run": False, "changes": [], "warnings": []}
    assert init(name, moto_endpoint).stdout.splitlines()[0] == f"s3://{name}: nothing to change"
    assert configuration(s3, name) == config


def test_dry_run_prints_every_change_and_writes_nothing(s3: Any, moto_endpoint: str, bucket: str) -> None:
    before = configuration(s3, bucket)
    run = init(bucket, moto_endpoint, "--dry-run", "--events-queue", QUEUE)
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"s3://{bucket}: would make 7 change(s) (dry run: nothing written)"
    assert any("turn on versioning" in line for line in lines)
    assert any("add event notification dagmirror-release-pointers to " + QUEUE in line for line in lines)
    assert configuration(s3, bucket) == before

    missing = new_name()
    run = init(missing, moto_endpoint, "--dry-run")
    assert run.code == 0, run.stderr
    assert f"create bucket {missing}" in run.stdout
    assert not bucket_exists(s3, missing)


def test_changed_days_update_dagmirrors_rule_and_zero_removes_it(
    s3: Any, moto_endpoint: str, bucket: str
) -> None:
    assert init(bucket, moto_endpoint).code == 0
    run = init(bucket, moto_endpoint, "--audit-days", "7", "--status-days", "0")
    assert run.code == 0, run.stderr
    assert (
        "update lifecycle rule dagmirror-audit-logs: expire audit logs (metadata/sync-logs/) after 7 days"
        in run.stdout
    )
    assert "remove lifecycle rule dagmirror-instance-status: keep those objects forever" in run.stdout
    rules = {r["ID"]: r for r in configuration(s3, bucket)["rules"]}
    assert rules["dagmirror-audit-logs"]["Expiration"] == {"Days": 7}
    assert "dagmirror-instance-status" not in rules


def test_foreign_rules_statements_and_notifications_survive(s3: Any, moto_endpoint: str, bucket: str) -> None:
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [FOREIGN_RULE]})
    foreign = foreign_statement(bucket)
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [foreign]}))
    team_queue = {
        "Id": "team-alerts",
        "QueueArn": "arn:aws:sqs:us-east-1:123456789012:team",
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "reports/"}]}},
    }
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [team_queue]}
    )
    run = init(bucket, moto_endpoint, "--events-queue", QUEUE)
    assert run.code == 0, run.stderr
    config = configuration(s3, bucket)
    assert config["rules"][0] == FOREIGN_RULE
    assert [r["ID"] for r in config["rules"][1:]] == [
        "dagmirror-noncurrent-versions",
        "dagmirror-audit-logs",
        "dagmirror-instance-status",
    ]
    assert config["policy"]["Statement"] == [foreign]  # --no-tls-only: the policy is not touched
    assert [q["Id"] for q in config["queues"]] == [
        "team-alerts",
        "dagmirror-release-pointers",
        "dagmirror-dag-files",
    ]
    assert config["queues"][0]["QueueArn"] == team_queue["QueueArn"]
    assert init(bucket, moto_endpoint, "--events-queue", QUEUE).stdout.startswith(f"s3://{bucket}: nothing")


async def test_tls_only_statement_joins_foreign_ones_and_denies_plain_http(
    s3: Any, moto_endpoint: str, bucket: str
) -> None:
    """In-process: the CLI refuses --tls-only on a plain-HTTP endpoint (next test), and moto then applies
    the deny to object requests, so this test only reads the bucket's configuration afterwards."""
    foreign = foreign_statement(bucket)
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [foreign]}))
    spec = BucketSpec(bucket, tls_only=True)
    with sdk_credentials():
        admin = await S3Admin.open(bucket, endpoint_url=moto_endpoint, region="us-east-1")
        try:
            first = await init_bucket(admin, spec, dry_run=False)
            second = await init_bucket(admin, spec, dry_run=False)
        finally:
            await admin.aclose()
    assert (
        "add bucket policy statement DagmirrorDenyInsecureTransport (refuse every request not made over TLS)"
        in first.changes
    )
    assert second.empty
    policy = configuration(s3, bucket)["policy"]
    assert [s["Sid"] for s in policy["Statement"]] == [
        "AnalyticsReadsReports",
        "DagmirrorDenyInsecureTransport",
    ]
    identity = {"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
    key = f"arn:aws:s3:::{bucket}/dags/dev/a.py"
    assert (
        evaluate([identity, policy], Request("s3:GetObject", key, {"aws:SecureTransport": "false"})) == "deny"
    )
    assert (
        evaluate([identity, policy], Request("s3:GetObject", key, {"aws:SecureTransport": "true"})) == "allow"
    )


def test_tls_only_on_a_plain_http_endpoint_is_refused_before_anything_is_written(
    s3: Any, moto_endpoint: str
) -> None:
    name = new_name()
    run = dagmirror("bucket", "init", f"s3://{name}", endpoint=moto_endpoint)
    assert run.code == 2
    assert run.stderr.startswith("dagmirror: error: the endpoint http://127.0.0.1:")
    assert "pass --no-tls-only" in run.stderr
    assert not bucket_exists(s3, name)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["s3://Bad_Bucket"], "invalid bucket name"),
        (["s3://good-bucket/dags/"], "without a prefix"),
        (["s3://good-bucket", "--events-queue", "my-queue"], "must be an SQS queue ARN"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(moto_endpoint: str, args: list[str], message: str) -> None:
    run = dagmirror("bucket", "init", *args, "--no-tls-only", endpoint=moto_endpoint)
    assert run.code == 2
    assert len(run.stderr.strip().splitlines()) == 1
    assert message in run.stderr
