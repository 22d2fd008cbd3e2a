"""`dagmirror gc`: remove release bodies, manifests and archives no kept release needs (docs/releases.md,
"Garbage collection"). Parses flags, calls `Deployer.gc`, renders."""

from __future__ import annotations

import re
import sys
from typing import Any

import click

from dagmirror.cli import render
from dagmirror.cli.app import ExitCode, cli
from dagmirror.cli.deploy import deploy_options, with_deployer

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")


class Duration(click.ParamType[float]):
    """`7d`, `12h`, `30m`, `90s`, `2w`, or plain seconds."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        match = _DURATION.match(str(value).strip())
        if match is None:
            self.fail(f"{value!r} is not a duration (e.g. 7d, 12h, 30m, 90s)", param, ctx)
        return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@cli.command()
@click.option("--env", "envs", multiple=True, metavar="ENV", help="Collect this environment (repeatable).")
@click.option("--all-envs", is_flag=True, help="Collect every environment of the bucket.")
@click.option(
    "--keep",
    type=click.IntRange(1, 100_000),
    default=10,
    show_default=True,
    help="Releases kept per environment (the current one and its ancestors).",
)
@click.option(
    "--grace",
    type=Duration(),
    default="7d",
    show_default=True,
    help="Never remove anything younger than this (protects deploys in flight).",
)
@click.option("--dry-run", is_flag=True, help="Plan only: delete nothing.")
@deploy_options
def gc(envs: tuple[str, ...], all_envs: bool, keep: int, grace: float, dry_run: bool, **params: Any) -> None:
    """Remove release bodies, manifests and archives that no kept release of any environment needs.

    Kept: the last KEEP releases of every environment of the bucket (named or not: bodies are shared),
    and everything younger than GRACE. With --env, only the named environments' old releases go (and
    bodies that no remaining release names).
    """
    if bool(envs) == all_envs:
        raise click.UsageError("give --env ENV (one or more) or --all-envs")
    as_json = bool(params["as_json"])
    scope = None if all_envs else list(envs)
    report = with_deployer(params, lambda d: d.gc(scope, keep=keep, grace=grace, dry_run=dry_run))
    render.gc_report(report, as_json)
    sys.exit(ExitCode.FAILED if report.failed or report.damaged else ExitCode.OK)
