"""`dagmirror bucket init`, `dagmirror iam-policy` and `dagmirror doctor` (docs/setup.md): parse, call
dagmirror/setup/, render."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from dagmirror.cli.app import ExitCode, call, cli, run_async
from dagmirror.cli.render import shown
from dagmirror.config import S3Url, redact_url
from dagmirror.errors import ConfigError, DagmirrorError
from dagmirror.logs import setup_logging
from dagmirror.setup import iam
from dagmirror.setup.bucketplan import BucketPlan, BucketSpec
from dagmirror.setup.checks import Check, failed
from dagmirror.setup.doctor import DoctorRequest, diagnose
from dagmirror.setup.init import init_bucket


@cli.command("iam-policy")
@click.option("--role", type=click.Choice(iam.ROLES), required=True, help="Who the policy is for.")
@click.option("--bucket", required=True, help="The bucket's name.")
@click.option("--env", "envs", multiple=True, metavar="ENV", help="An environment of the role (repeatable).")
@click.option(
    "--read-env",
    "read_envs",
    multiple=True,
    metavar="ENV",
    help="deployer: an environment it may read but not write, e.g. promote's source (repeatable).",
)
@click.option("--vpce", metavar="ID", help="Allow requests only through this VPC endpoint (aws:SourceVpce).")
@click.option("--dags-root", default="dags/", show_default=True, help="Environment ENV lives at ROOT/ENV/.")
def iam_policy(
    role: str,
    bucket: str,
    envs: tuple[str, ...],
    read_envs: tuple[str, ...],
    vpce: str | None,
    dags_root: str,
) -> None:
    """Print a least-privilege IAM policy (JSON) for a mirror, a deployer or an admin of BUCKET."""
    request = call(
        lambda: iam.PolicyRequest.create(
            role, bucket, envs, read_envs=read_envs, vpce=vpce, dags_root=dags_root
        ),
        0,
    )
    click.echo(orjson.dumps(iam.policy(request), option=orjson.OPT_INDENT_2).decode())
    sys.exit(ExitCode.OK)


# -- bucket init -------------------------------------------------------------------------------------------
@cli.group()
def bucket() -> None:
    """Set up a bucket for dagmirror (docs/setup.md)."""


@bucket.command("init")
@click.argument("url", metavar="s3://BUCKET")
@click.option("--envs", default="", metavar="A,B,...", help="The environments (for the next steps shown).")
@click.option("--endpoint-url", help="S3-compatible endpoint (default: AWS, or $AWS_ENDPOINT_URL).")
@click.option("--region", help="Region to create the bucket in (default: the AWS chain, e.g. $AWS_REGION).")
@click.option("--profile", help="AWS profile (default: the AWS chain).")
@click.option(
    "--noncurrent-days",
    type=click.IntRange(1, 36500),
    default=30,
    show_default=True,
    help="Delete noncurrent object versions (what deploys and gc replaced or deleted) after this many days.",
)
@click.option(
    "--audit-days",
    type=click.IntRange(0, 36500),
    default=90,
    show_default=True,
    help="Delete audit logs (metadata/sync-logs/) after this many days; 0 keeps them.",
)
@click.option(
    "--status-days",
    type=click.IntRange(0, 36500),
    default=30,
    show_default=True,
    help="Delete instance status objects (metadata/fleet/) not rewritten for this many days; 0 keeps them.",
)
@click.option("--events-queue", metavar="ARN", help="Send S3 event notifications to this SQS queue.")
@click.option(
    "--tls-only/--no-tls-only",
    default=True,
    show_default=True,
    help="Add a bucket policy statement refusing requests not made over TLS (not on a plain-HTTP endpoint).",
)
@click.option("--dry-run", is_flag=True, help="Print each change and write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON line.")
@click.option("-v", "--verbose", count=True, help="-v info logging, -vv debug logging and tracebacks.")
def bucket_init(
    url: str,
    envs: str,
    endpoint_url: str | None,
    region: str | None,
    profile: str | None,
    dry_run: bool,
    as_json: bool,
    verbose: int,
    **flags: Any,
) -> None:
    """Create BUCKET if missing and configure it: versioning, no public access, TLS only, lifecycle rules,
    optional event notifications. A second run changes nothing; rules and statements that dagmirror did not
    add are never touched."""
    setup_logging(verbose)
    endpoint = _endpoint(endpoint_url)
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    spec = call(lambda: bucket_spec(url, endpoint, region, flags), verbose)

    async def go() -> BucketPlan:
        from dagmirror.source.admin import S3Admin  # the SDK is imported only by commands that use it

        admin = await S3Admin.open(spec.bucket, endpoint_url=endpoint, region=region, profile=profile)
        try:
            return await init_bucket(admin, spec, dry_run=dry_run)
        finally:
            await admin.aclose()

    result = call(lambda: run_async(go()), verbose)
    env_names = [e for e in envs.split(",") if e]
    _render_init(spec, result, dry_run=dry_run, as_json=as_json, envs=env_names)
    sys.exit(ExitCode.OK)


def bucket_spec(url: str, endpoint: str | None, region: str | None, flags: dict[str, Any]) -> BucketSpec:
    target = S3Url.parse(url)
    if target.prefix:
        raise ConfigError(f"bucket init takes s3://BUCKET, without a prefix, got {url!r}")
    if flags["tls_only"] and endpoint is not None and endpoint.startswith("http://"):
        raise ConfigError(
            f"the endpoint {redact_url(endpoint)} is plain HTTP: a TLS-only bucket policy would refuse every "
            "request; pass --no-tls-only (local test servers only)"
        )
    queue = flags["events_queue"]
    if queue is not None and not (queue.startswith("arn:") and ":sqs:" in queue):
        raise ConfigError(
            f"--events-queue must be an SQS queue ARN (arn:aws:sqs:REGION:ACCOUNT:NAME): {queue!r}"
        )
    return BucketSpec(
        target.bucket,
        region=region,
        tls_only=flags["tls_only"],
        noncurrent_days=flags["noncurrent_days"],
        audit_days=flags["audit_days"],
        status_days=flags["status_days"],
        queue_arn=queue,
    )


def _render_init(
    spec: BucketSpec, result: BucketPlan, *, dry_run: bool, as_json: bool, envs: list[str]
) -> None:
    if as_json:
        doc = {
            "bucket": spec.bucket,
            "dry_run": dry_run,
            "changes": list(result.changes),
            "warnings": list(result.warnings),
        }
        click.echo(orjson.dumps(doc).decode())
        return
    if result.empty:
        click.echo(f"s3://{spec.bucket}: nothing to change")
    else:
        verb = "would make" if dry_run else "made"
        note = " (dry run: nothing written)" if dry_run else ""
        click.echo(f"s3://{spec.bucket}: {verb} {len(result.changes)} change(s){note}")
        for line in result.changes:
            click.echo(f"  {line}")
    for warning in result.warnings:
        click.echo(f"warning: {warning}")
    if envs and not dry_run:
        click.echo("next: an IAM policy per role (docs/setup.md):")
        for env in envs:
            click.echo(f"  dagmirror iam-policy --role mirror --bucket {spec.bucket} --env {env}")
        click.echo(
            f"  dagmirror iam-policy --role deployer --bucket {spec.bucket} "
            + " ".join(f"--env {e}" for e in envs)
        )
        click.echo(f"  dagmirror iam-policy --role admin --bucket {spec.bucket}")


# -- doctor ------------------------------------------------------------------------------------------------
@cli.command()
@click.argument("source", metavar="s3://BUCKET/PREFIX")
@click.argument("dest", required=False, type=click.Path(path_type=Path))
@click.option(
    "--role",
    type=click.Choice(iam.ROLES),
    default="mirror",
    show_default=True,
    help="What these credentials are for: a mirror must not write, a deployer must.",
)
@click.option(
    "--readyz",
    "readyz_url",
    metavar="URL",
    help="Also ask a running daemon, e.g. http://127.0.0.1:9090/readyz.",
)
@click.option("--endpoint-url", help="S3-compatible endpoint (default: AWS, or $AWS_ENDPOINT_URL).")
@click.option("--region", help="AWS region (default: the AWS chain, e.g. $AWS_REGION).")
@click.option("--profile", help="AWS profile (default: the AWS chain).")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as one JSON line.")
@click.option("-v", "--verbose", count=True, help="-v info logging, -vv debug logging and tracebacks.")
def doctor(
    source: str,
    dest: Path | None,
    role: str,
    readyz_url: str | None,
    endpoint_url: str | None,
    region: str | None,
    profile: str | None,
    as_json: bool,
    verbose: int,
) -> None:
    """Check a set-up: credentials, region, clock, the bucket, releases, read and write access, DEST, and a
    running daemon. One line per check (ok / warn / fail, and the fix); exit 1 when any check failed."""
    setup_logging(verbose)
    endpoint = _endpoint(endpoint_url)
    region = region or os.environ.get("AWS_REGION")
    request = call(lambda: DoctorRequest(S3Url.parse(source), dest, role, readyz_url), verbose)

    async def go() -> list[Check]:
        from dagmirror.source.admin import S3Admin  # the SDK is imported only by commands that use it

        try:
            admin = await S3Admin.open(
                request.source.bucket, endpoint_url=endpoint, region=region, profile=profile
            )
        except DagmirrorError as exc:
            return await diagnose(request, exc)
        try:
            return await diagnose(request, admin)
        finally:
            await admin.aclose()

    found = call(lambda: run_async(go()), verbose)
    if as_json:
        click.echo(orjson.dumps({"ok": not failed(found), "checks": [c.to_dict() for c in found]}).decode())
    else:
        for c in found:
            click.echo(
                f"{c.status:<4}  {c.name}: {shown(c.detail)}" + (f"  -> fix: {c.fix}" if c.fix else "")
            )
    sys.exit(ExitCode.FAILED if failed(found) else ExitCode.OK)


def _endpoint(flag: str | None) -> str | None:
    """--endpoint-url, else $AWS_ENDPOINT_URL_S3, else $AWS_ENDPOINT_URL (as `sync` reads them)."""
    return flag or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
