"""`dagmirror bucket init`, `dagmirror iam-policy` and `dagmirror doctor` (docs/setup.md): parse, call
dagmirror/setup/, render."""

from __future__ import annotations

import sys

import click
import orjson

from dagmirror.cli.app import ExitCode, call, cli
from dagmirror.setup import iam


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
