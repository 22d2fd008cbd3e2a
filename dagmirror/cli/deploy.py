"""`dagmirror deploy`, `history`, `rollback`, `promote`: validated, recorded writes to an environment
(dagmirror/deploy/). A refusal (validation: exit 4; the delete guard: exit 3) means nothing was written."""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from dagmirror.cli import render, render_fleet
from dagmirror.cli.app import ExitCode, call, cli, options, run_async
from dagmirror.deploy import DeployConfig, Deployer, DeployReport, config_path, load_deploy_config
from dagmirror.errors import DeployRefused, GuardRefused
from dagmirror.fleet.converge import FleetView, Target, describe_target
from dagmirror.fleet.reader import FleetReader
from dagmirror.fleet.wait import wait_for_fleet
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
    click.option(
        "--wait",
        type=click.FloatRange(0, 86400),
        metavar="SECONDS",
        help="Then wait until every live instance reports the release; exit 5 if they do not in time.",
    ),
)
SILENT_AFTER = click.option(
    "--silent-after",
    type=click.FloatRange(1, 30 * 86400),
    metavar="SECONDS",
    help="An instance whose status is older is silent: listed apart, not waited on [3 of its heartbeats].",
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
@SILENT_AFTER
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
@SILENT_AFTER
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
@SILENT_AFTER
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
    """A command that writes: its report, or its refusal (nothing written), then its exit code; with
    `--wait`, the report first, then the wait for the fleet (fleet/wait.py)."""
    as_json = bool(params["as_json"])
    wait, silent_after = params.pop("wait"), params.pop("silent_after")

    def waits(report: DeployReport) -> bool:  # a dry run or a failed deploy has nothing to wait for
        return wait is not None and not report.dry_run and ExitCode.of_deploy(report) == ExitCode.OK

    async def act(deployer: Deployer) -> tuple[DeployReport, FleetView | None]:
        report = await action(deployer)
        if not waits(report):
            return report, None
        if not as_json:
            render.deploy_report(report, as_json)
        return report, await _wait(deployer.config, report, wait, silent_after)

    try:
        report, view = with_deployer(params, act)
    except (DeployRefused, GuardRefused) as exc:
        code = ExitCode.of_error(exc)
        headline = f"{click.get_current_context().info_name} refused, nothing was written:"
        render.refused(headline, str(exc).splitlines(), code, as_json)
        sys.exit(code)
    if not waits(report):
        render.deploy_report(report, as_json)
        sys.exit(ExitCode.of_deploy(report))
    outcome = render_fleet.waited(view, report.env, wait, as_json)
    if as_json:
        render.as_json(report.to_dict() | {"fleet": outcome})
    sys.exit(ExitCode.OK if view is not None and view.converged else ExitCode.NOT_CONVERGED)


async def _wait(
    config: DeployConfig, report: DeployReport, seconds: float, silent_after: float | None
) -> FleetView | None:
    """Wait for the release the report made live (or, without releases, for a pass after the deploy)."""
    if report.release:
        target: Target | None = Target(report.release, report.pointer_seq)
    elif config.releases:
        target = None  # nothing changed: the release the pointer names is the one to have
    else:
        target = Target(since=report.started_at + report.seconds)
    progress = render_fleet.WaitProgress(report.env)
    async with FleetReader(config) as reader:
        if target is None:
            pointer = await reader.pointer(report.prefix)
            target = Target(pointer.release, pointer.seq) if pointer else Target()
        render_fleet.waiting(report.env, describe_target(target), seconds)
        return await wait_for_fleet(
            lambda: reader.look(report.env, target=target, silent_after=silent_after),
            seconds,
            on_progress=progress,
            on_trouble=progress.trouble,
        )


def with_deployer(params: dict[str, Any], action: Callable[[Deployer], Awaitable[R]]) -> R:
    """Load the deploy config, open a Deployer, run `action` (see `with_deploy_config`)."""

    async def run(config: DeployConfig) -> R:
        async with Deployer(config) as deployer:
            return await action(deployer)

    return with_deploy_config(params, run)


def with_deploy_config(params: dict[str, Any], action: Callable[[DeployConfig], Awaitable[R]]) -> R:
    """Load the deploy config (file < env < flags) and run `action` with it. Refusals propagate to the
    caller; every other error becomes its exit code here."""
    params = dict(params)
    verbose = int(params.pop("verbose"))
    params.pop("as_json")
    setup_logging(verbose)
    config_file = params.pop("config_file")
    flags = {k: v for k, v in params.items() if v is not None and v != ()}

    async def go() -> R:
        return await action(load_deploy_config(config_path(config_file), os.environ, flags))

    return call(lambda: run_async(go()), verbose, let_through=(DeployRefused, GuardRefused))
