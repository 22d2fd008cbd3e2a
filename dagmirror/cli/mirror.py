"""`dagmirror sync` (one pass) and `dagmirror run` (the daemon): parse flags, call, render."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import click

from dagmirror.cli import render
from dagmirror.cli.app import ExitCode, call, cli, options, run_async
from dagmirror.config import DEFAULT_CONCURRENCY, MirrorConfig
from dagmirror.engine import Mirror
from dagmirror.logs import setup_logging
from dagmirror.models import SyncReport

VERBOSE = click.option(
    "-v", "--verbose", count=True, help="-v info logging, -vv debug logging and tracebacks."
)

# Flags shared by `sync` and `run`; None means 'not given', so files and env can supply them.
mirror_options = options(
    click.option("--endpoint-url", help="S3-compatible endpoint (default: AWS, or $AWS_ENDPOINT_URL)."),
    click.option("--region", help="AWS region (default: the AWS chain, e.g. $AWS_REGION)."),
    click.option(
        "--concurrency", type=click.IntRange(1, 1024), help=f"Parallel GETs [{DEFAULT_CONCURRENCY}]."
    ),
    click.option("--include", multiple=True, metavar="GLOB", help="Mirror only matching relative paths."),
    click.option("--exclude", multiple=True, metavar="GLOB", help="Never mirror matching relative paths."),
    click.option(
        "--max-delete-fraction", type=click.FloatRange(0.0, 1.0), help="Delete guard threshold [0.5]."
    ),
    click.option("--allow-mass-delete", is_flag=True, default=None, help="Override the delete guard."),
    click.option(
        "--transport",
        type=click.Choice(["lean", "sdk"]),
        help="lean (default): LIST and GET over aiohttp, signed by dagmirror's SigV4 signer with credentials "
        "from the AWS chain; sdk: every request through aioboto3.",
    ),
    click.option(
        "--mode",
        type=click.Choice(["auto", "objects", "releases"]),
        help="auto (default): follow the prefix's release pointer when it has one, else list objects; "
        "objects: always list; releases: require a release pointer.",
    ),
    click.option(
        "--switch",
        type=click.Choice(["files", "symlink"]),
        help="files (default): each changed file is renamed into DEST; symlink: DEST is a link to an "
        "immutable generation of the whole release, switched by one rename (docs/operations.md).",
    ),
    click.option(
        "--keep-generations",
        type=click.IntRange(1, 1000),
        help="--switch symlink: generations kept whatever their age [3].",
    ),
    click.option(
        "--generation-grace",
        type=click.FloatRange(0, 30 * 86400),
        metavar="SECONDS",
        help="--switch symlink: an older generation stays this long after it was replaced [3600].",
    ),
    click.option(
        "--trust",
        type=click.Path(dir_okay=False),
        metavar="FILE",
        help="Install only releases the keys of this trust file signed; refuse everything else "
        "(docs/security.md, 'Signed releases').",
    ),
    VERBOSE,
)

_MIRROR_KEYS = (
    "endpoint_url",
    "region",
    "concurrency",
    "max_delete_fraction",
    "allow_mass_delete",
    "transport",
    "mode",
    "switch",
    "keep_generations",
    "generation_grace",
    "trust",
)
_SERVICE_KEYS = (
    *("interval", "jitter", "http", "staleness", "grace", "audit_dir", "audit_s3"),
    *("instance_id", "heartbeat", "status"),
)
_TRIGGER_KEYS = ("sqs_queue", "sqs_endpoint_url", "exec_on_change", "webhook", "hook_timeout")

# `dagmirror run` only: what else starts a pass, and what runs after one (docs/operations.md).
trigger_options = options(
    click.option(
        "--sqs-queue",
        metavar="URL",
        help="SQS queue receiving the bucket's S3 event notifications: a change wakes a pass at once.",
    ),
    click.option("--sqs-endpoint-url", metavar="URL", help="SQS endpoint [$AWS_ENDPOINT_URL_SQS, else AWS]."),
    click.option(
        "--exec-on-change",
        metavar="CMD",
        help="Run CMD (split like a shell, run without one) after each pass that changed DEST; the release "
        "and counts are in its environment (DAGMIRROR_RELEASE, DAGMIRROR_DOWNLOADED...).",
    ),
    click.option(
        "--webhook", metavar="URL", help="POST a JSON body to URL after each pass that changed DEST."
    ),
    click.option(
        "--hook-timeout",
        type=click.FloatRange(0.1, 3600),
        metavar="SECONDS",
        help="Bound on each hook run and each webhook attempt [30].",
    ),
)


def _mirror_flags(params: dict[str, Any]) -> dict[str, Any]:
    flags = {k: params[k] for k in _MIRROR_KEYS if params.get(k) is not None}
    flags |= {k: list(params[k]) for k in ("include", "exclude") if params.get(k)}
    return flags


@cli.command()
@click.argument("source")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@mirror_options
@click.option("--dry-run", is_flag=True, help="List and plan only: no download, no change to DEST.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON line (last line).")
@click.option(
    "--wait-for-source",
    type=click.FloatRange(0, 86400),
    metavar="SECONDS",
    help="First wait (up to SECONDS) until the prefix lists at least one object: for init containers.",
)
def sync(
    source: str, dest: Path, dry_run: bool, as_json: bool, wait_for_source: float | None, **params: Any
) -> None:
    """Make DEST an exact mirror of SOURCE (s3://bucket/prefix), once."""
    verbose = int(params.pop("verbose"))
    setup_logging(verbose)
    show_progress = not as_json and sys.stderr.isatty()

    def once() -> SyncReport:
        config = MirrorConfig.create(source, dest, dry_run=dry_run, env=os.environ, **_mirror_flags(params))
        return run_async(_sync_once(config, show_progress=show_progress, wait=wait_for_source))

    report = call(once, verbose)
    render.sync_report(report, as_json)
    if report.untrusted:
        click.echo(f"dagmirror: error: release refused, DEST unchanged: {report.untrusted}", err=True)
    sys.exit(ExitCode.of_sync(report))


@cli.command()
@click.argument("source", required=False)
@click.argument("dest", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="TOML settings file."
)
@click.option(
    "--interval",
    type=click.FloatRange(0.1),
    help="Seconds between passes [5 while following a release (one request a poll), else 30].",
)
@click.option("--jitter", type=click.FloatRange(0, 1), help="Random +- fraction of the interval [0.1].")
@click.option("--http", help="HOST:PORT for /healthz /readyz /metrics [127.0.0.1:9090]; 'off' disables.")
@click.option(
    "--staleness",
    type=click.FloatRange(1),
    help="Not ready when the last success is older [max(120, 4*interval)].",
)
@click.option(
    "--grace", type=click.FloatRange(0), help="Seconds a pass in flight may take to finish on SIGTERM [30]."
)
@click.option("--audit-dir", type=click.Path(file_okay=False), help="Local audit folder.")
@click.option(
    "--audit-s3",
    metavar="s3://BUCKET[/PREFIX]",
    help="Ship audit records to s3://BUCKET/metadata/sync-logs/ (or to PREFIX/ when given).",
)
@trigger_options
@click.option(
    "--instance-id",
    metavar="ID",
    help="Name in the status objects `dagmirror fleet` reads [$HOSTNAME, else the host name].",
)
@click.option(
    "--heartbeat",
    type=click.FloatRange(1, 86400),
    metavar="SECONDS",
    help="Write the status at least this often, to tell live instances from dead ones [300].",
)
@click.option(
    "--status/--no-status",
    default=None,
    help="Publish this instance's status to s3://BUCKET/metadata/fleet/<prefix><id>.json [on].",
)
@mirror_options
def run(source: str | None, dest: Path | None, config_file: Path | None, **params: Any) -> None:
    """Keep DEST mirrored: a pass at start, then one every interval; SIGUSR1, POST /sync or an S3 event
    (--sqs-queue) asks for a pass now."""
    from dagmirror.config import load_run_config
    from dagmirror.service import Service, s3_audit_sink

    verbose = int(params.pop("verbose"))
    setup_logging(max(verbose, 1))
    flags: dict[str, Any] = {
        k: params[k] for k in (*_SERVICE_KEYS, *_TRIGGER_KEYS) if params.get(k) is not None
    }
    flags |= _mirror_flags(params) | {"source": source, "dest": str(dest) if dest else None}

    def serve() -> int:
        config = load_run_config(config_file, os.environ, flags)
        return run_async(Service(config, sink_factory=s3_audit_sink(config)).run())

    sys.exit(call(serve, verbose))


async def _sync_once(config: MirrorConfig, *, show_progress: bool, wait: float | None) -> SyncReport:
    async with Mirror(config) as mirror:
        if wait is not None:
            await mirror.wait_for_source(wait)
        progress = asyncio.create_task(render.progress_line(mirror)) if show_progress else None
        try:
            return await mirror.sync_once()
        finally:
            if progress is not None:
                progress.cancel()
                click.echo("\r\033[K", nl=False, err=True)
