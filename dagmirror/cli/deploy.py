"""`dagmirror deploy`, `history`, `rollback`, `promote`: validated, recorded writes to an environment
(dagmirror/deploy/). A refusal (validation: exit 4; the delete guard: exit 3) means nothing was written."""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from dagmirror.cli import render
from dagmirror.cli.app import ExitCode, call, cli, options, run_async
from dagmirror.deploy import Deployer, DeployReport, config_path, load_deploy_config
from dagmirror.errors import DeployRefused, GuardRefused
from dagmirror.logs import setup_logging

R = TypeVar("R")

# Flags shared by deploy, history, rollback and promote.
deploy_options = options(
    click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="TOML file with a [deploy] table [./dagmirror.toml when present].",
    ),
    click.option(
        "--bucket-url",
        metavar="s3://BUCKET/dags/",
        help="Where the environments live: ENV is s3://BUCKET/dags/ENV/.",
    ),
    click.option("--endpoint-url", help="S3-compatible endpoint (default: AWS, or $AWS_ENDPOINT_URL)."),
    click.option("--region", help="AWS region (default: the AWS chain, e.g. $AWS_REGION)."),
    click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON line (last line)."),
    click.option("-v", "--verbose", count=True, help="-v info logging, -vv debug logging and tracebacks."),
)
# Flags of the commands that write: deploy, rollback, promote.
write_options = options(
    click.option("--dry-run", is_flag=True, help="Validate and plan only: write nothing, not even a record."),
    click.option("--concurrency", type=click.IntRange(1, 256), help="Parallel requests [16]."),
    click.option(
        "--max-delete-fraction", type=click.FloatRange(0.0, 1.0), help="Delete guard threshold [0.5]."
    ),
    click.option("--allow-mass-delete", is_flag=True, default=None, help="Override the delete guard."),
    click.option(
        "--releases/--no-releases",
        default=None,
        help="Publish a release (docs/releases.md) with the plain files [on].",
    ),
    click.option(
        "--allow-no-conditional-writes",
        is_flag=True,
        default=None,
        help="Publish even where the server ignores conditional writes (no compare-and-swap).",
    ),
    click.option(
        "--sign-key",
        "sign_keys",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="Sign the release with this private key file (dagmirror keys generate); repeatable.",
    ),
    click.option(
        "--kms-key-id", metavar="ID", help="Sign the release with this AWS KMS key (ECC_NIST_P256)."
    ),
    click.option(
        "--sign-expires",
        type=click.FloatRange(60, 366 * 86400),
        metavar="SECONDS",
        help="A signed pointer is trusted this long [604800: 7 days].",
    ),
    click.option(
        "--rotation",
        "rotations",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="A key rotation statement (dagmirror keys rotate) for the pointer to carry; repeatable.",
    ),
)
airflow_options = options(
    click.option(
        "--airflow-check/--no-airflow-check",
        default=None,
        help="Let real Airflow parse the result first (default: airflow_check of the environment).",
    ),
    click.option("--airflow-python", metavar="PATH", help="Python of an Airflow installation [python3]."),
    click.option(
        "--airflow-timeout",
        type=click.FloatRange(1, 3600),
        metavar="SECONDS",
        help="DagBag time limit [300].",
    ),
)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--env", required=True, help="Target environment (one of the configured environments).")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Local folder that maps to the environment's root (default: none, see docs/deploy.md).",
)
@click.option("--exclude", multiple=True, metavar="GLOB", help="Never deploy (nor delete) matching paths.")
@deploy_options
@write_options
@airflow_options
def deploy(paths: tuple[Path, ...], env: str, **params: Any) -> None:
    """Validate PATHS (files or folders) and upload them to environment ENV; record the deploy.

    A folder owns its part of the environment: files removed locally are deleted there too.
    """
    dry_run, airflow_check = params.pop("dry_run"), params.pop("airflow_check")
    _written(params, lambda d: d.deploy(list(paths), env, dry_run=dry_run, airflow_check=airflow_check))


@cli.command()
@click.option("--env", required=True, help="Environment whose deploys to list.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="How many.")
@deploy_options
def history(env: str, limit: int, **params: Any) -> None:
    """The deploys of an environment, newest first."""
    as_json = bool(params["as_json"])
    deploys = with_deployer(params, lambda d: d.history(env, limit=limit))
    render.history(deploys, as_json)
    sys.exit(ExitCode.OK)


@cli.command()
@click.option("--env", required=True, help="Environment to roll back.")
@click.option(
    "--to", "deploy_id", required=True, metavar="ID", help="The release id, or deploy id, to restore."
)
@deploy_options
@write_options
def rollback(env: str, deploy_id: str, **params: Any) -> None:
    """Point the environment at a release again (a release id, or a deploy whose record names one).

    A deploy from before releases restores the versions it recorded (needs bucket versioning).

    The rollback is itself a recorded deploy.
    """
    dry_run = params.pop("dry_run")
    _written(params, lambda d: d.rollback(env, deploy_id, dry_run=dry_run))


@cli.command()
@click.option("--from", "source_env", required=True, help="Environment to copy from.")
@click.option("--to", "target_env", required=True, help="Environment to make identical to it.")
@deploy_options
@write_options
@airflow_options
def promote(source_env: str, target_env: str, **params: Any) -> None:
    """Copy the live object versions of one environment to another (server-side), validated and recorded.

    Files of the target that the source does not have are deleted, under the delete guard.
    """
    dry_run, airflow_check = params.pop("dry_run"), params.pop("airflow_check")
    _written(
        params, lambda d: d.promote(source_env, target_env, dry_run=dry_run, airflow_check=airflow_check)
    )


def _written(params: dict[str, Any], action: Callable[[Deployer], Awaitable[DeployReport]]) -> NoReturn:
    """A command that writes: its report, or its refusal (nothing written), then its exit code."""
    as_json = bool(params["as_json"])
    try:
        report = with_deployer(params, action)
    except (DeployRefused, GuardRefused) as exc:
        code = ExitCode.of_error(exc)
        headline = f"{click.get_current_context().info_name} refused, nothing was written:"
        render.refused(headline, str(exc).splitlines(), code, as_json)
        sys.exit(code)
    render.deploy_report(report, as_json)
    sys.exit(ExitCode.of_deploy(report))


def with_deployer(params: dict[str, Any], action: Callable[[Deployer], Awaitable[R]]) -> R:
    """Load the deploy config (file < env < flags), open a Deployer, run `action`. Refusals propagate to
    the caller; every other error becomes its exit code here."""
    params = dict(params)
    verbose = int(params.pop("verbose"))
    params.pop("as_json")
    setup_logging(verbose)
    config_file = params.pop("config_file")
    flags = {k: v for k, v in params.items() if v is not None and v != ()}

    async def go() -> R:
        config = load_deploy_config(config_path(config_file), os.environ, flags)
        async with Deployer(config) as deployer:
            return await action(deployer)

    return call(lambda: run_async(go()), verbose, let_through=(DeployRefused, GuardRefused))
