"""`dagmirror fleet --env ENV`: every instance of an environment, its release, age and state, and whether
the live fleet runs the environment's current release (exit 0) or not yet (exit 5). docs/operations.md."""

from __future__ import annotations

import sys
from typing import Any

import click

from dagmirror.cli import render_fleet
from dagmirror.cli.app import ExitCode, cli
from dagmirror.cli.deploy import SILENT_AFTER, deploy_options, with_deploy_config
from dagmirror.config import DeployConfig
from dagmirror.fleet.converge import FleetView
from dagmirror.fleet.reader import FleetReader


@cli.command()
@click.option("--env", required=True, help="Environment whose instances to show.")
@SILENT_AFTER
@deploy_options
def fleet(env: str, silent_after: float | None, **params: Any) -> None:
    """The instances mirroring ENV (from their status objects) against the release ENV's pointer names.

    Exit 0 when every live instance runs it, 5 when some do not yet (or none is live). Silent instances
    (no status for 3 of their heartbeats) and stopped ones are listed apart and do not count.
    """

    async def look(config: DeployConfig) -> FleetView:
        async with FleetReader(config) as reader:
            return await reader.look(env, silent_after=silent_after)

    view = with_deploy_config(params, look)
    render_fleet.fleet(view, env, bool(params["as_json"]))
    sys.exit(ExitCode.OK if view.converged else ExitCode.NOT_CONVERGED)
