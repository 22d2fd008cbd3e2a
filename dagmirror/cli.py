"""Command line: argument parsing, logging set-up, output and exit codes. No sync logic lives here.

Exit codes: 0 success (rejected keys included), 1 some objects failed or the pass could not complete,
2 usage or configuration error, 3 a safety guard refused deletions, 4 validation refused a deploy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import orjson

from dagmirror.config import DEFAULT_CONCURRENCY, MirrorConfig
from dagmirror.deploy import Deployer, DeployReport, config_path, load_deploy_config
from dagmirror.engine import Mirror
from dagmirror.errors import (
    ConfigError,
    DagmirrorError,
    DeployRefused,
    DestLocked,
    GuardRefused,
    PassFailed,
    SourceConfigError,
)
from dagmirror.logs import setup_logging
from dagmirror.models import SyncReport

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_GUARD = 0, 1, 2, 3
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("dagmirror")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dagmirror")
def cli() -> None:
    """Mirror Airflow DAG folders from S3: fast, atomic, verified, safe."""


def mirror_options(fn: F) -> F:
    """Flags shared by `sync` and `run`; None means 'not given', so files and env can supply them."""
    options = [
        click.option("--endpoint-url", help="S3-compatible endpoint (default: AWS, or $AWS_ENDPOINT_URL)."),
        click.option("--region", help="AWS region (default: the AWS chain, e.g. $AWS_REGION)."),
        click.option(
            "--concurrency", type=click.IntRange(1, 1024), help=f"Parallel GETs [{DEFAULT_CONCURRENCY}]."
        ),
        click.option("--include", multiple=True, metavar="GLOB", help="Mirror only matching relative paths."),
        click.option(
            "--exclude", multiple=True, metavar="GLOB", help="Never mirror matching relative paths."
        ),
        click.option(
            "--max-delete-fraction", type=click.FloatRange(0.0, 1.0), help="Delete guard threshold [0.5]."
        ),
        click.option("--allow-mass-delete", is_flag=True, default=None, help="Override the delete guard."),
        click.option(
            "--transport",
            type=click.Choice(["lean", "sdk"]),
            help="lean (default): GETs over aiohttp signed by the AWS SDK; sdk: everything through aioboto3.",
        ),
        click.option(
            "-v", "--verbose", count=True, help="-v info logging, -vv debug logging and tracebacks."
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _mirror_flags(params: dict[str, Any]) -> dict[str, Any]:
    keys = ("endpoint_url", "region", "concurrency", "max_delete_fraction", "allow_mass_delete", "transport")
    flags = {k: params[k] for k in keys if params.get(k) is not None}
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
    try:
        flags = _mirror_flags(params)
        config = MirrorConfig.create(source, dest, dry_run=dry_run, **flags)
        show_progress = not as_json and sys.stderr.isatty()
        report = _run(_sync_once(config, show_progress=show_progress, wait=wait_for_source))
    except DagmirrorError as exc:
        _die(exc, verbose)
    except Exception as exc:  # a bug: still one line (the traceback with -vv), never a silent half-done run
        _internal_error(exc, verbose)
    _print_report(report, as_json)
    sys.exit(exit_code(report))


@cli.command()
@click.argument("source", required=False)
@click.argument("dest", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="TOML settings file."
)
@click.option("--interval", type=click.FloatRange(0.1), help="Seconds between passes [30].")
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
@mirror_options
def run(source: str | None, dest: Path | None, config_file: Path | None, **params: Any) -> None:
    """Keep DEST mirrored: a pass at start, then one every interval; SIGUSR1 asks for a pass now."""
    from dagmirror.config import load_run_config
    from dagmirror.service import Service, s3_audit_sink

    verbose = int(params.pop("verbose"))
    setup_logging(max(verbose, 1))
    service_keys = ("interval", "jitter", "http", "staleness", "grace", "audit_dir", "audit_s3")
    flags: dict[str, Any] = {k: params[k] for k in service_keys if params.get(k) is not None}
    flags |= _mirror_flags(params) | {"source": source, "dest": str(dest) if dest else None}
    try:
        config = load_run_config(config_file, os.environ, flags)
        code = _run(Service(config, sink_factory=s3_audit_sink(config)).run())
    except DagmirrorError as exc:
        _die(exc, verbose)
    sys.exit(code)


def exit_code(report: SyncReport) -> int:
    if report.guard:
        return EXIT_GUARD
    return EXIT_FAILED if report.failed else EXIT_OK


async def _sync_once(config: MirrorConfig, *, show_progress: bool, wait: float | None) -> SyncReport:
    async with Mirror(config) as mirror:
        if wait is not None:
            await mirror.wait_for_source(wait)
        progress = asyncio.create_task(_progress_line(mirror)) if show_progress else None
        try:
            return await mirror.sync_once()
        finally:
            if progress is not None:
                progress.cancel()
                click.echo("\r\033[K", nl=False, err=True)


async def _progress_line(mirror: Mirror) -> None:
    """A one-line progress display on a terminal, shown only once a pass has run for a second."""
    await asyncio.sleep(1.0)
    while True:
        p = mirror.progress
        listing = "listed" if p.listing_done else "listing"
        line = f"{listing} {p.listed} · downloaded {p.downloaded}/{p.queued} · {p.bytes / 1e6:.1f} MB"
        click.echo(f"\r\033[K{line}", nl=False, err=True)
        await asyncio.sleep(0.25)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every platform we ship for
        return asyncio.run(coro)
    return uvloop.run(coro)


def _print_report(report: SyncReport, as_json: bool) -> None:
    if as_json:
        click.echo(orjson.dumps(report.to_dict()).decode())
        return
    verb = "would download" if report.dry_run else "downloaded"
    click.echo(
        f"{report.source} -> {report.dest}: listed {report.listed}, {verb} {report.downloaded} "
        f"({report.bytes / 1e6:.2f} MB), unchanged {report.unchanged}, deleted {report.deleted}, "
        f"rejected {report.rejected}, failed {report.failed} in {report.seconds:.2f}s"
    )
    if report.requests:
        click.echo("  requests: " + ", ".join(f"{k} {v}" for k, v in sorted(report.requests.items())))
    for t in report.tombstones:
        click.echo(f"  {'would delete' if report.dry_run else 'deleted'} {t.path}")
    for r in report.rejections:
        click.echo(f"  rejected {r.key!r}: {r.reason}")
    for f in report.failures:
        click.echo(f"  failed {f.key!r}: {f.error}")


def _die(exc: DagmirrorError, verbose: int) -> NoReturn:
    if verbose >= 2:
        log.exception("traceback")
    for line in str(exc).splitlines() or [type(exc).__name__]:
        click.echo(f"dagmirror: error: {line}", err=True)
    cause = exc.cause if isinstance(exc, PassFailed) else exc
    usage = isinstance(cause, (ConfigError, SourceConfigError, DestLocked))
    sys.exit(EXIT_USAGE if usage else EXIT_FAILED)


def _internal_error(exc: Exception, verbose: int) -> NoReturn:
    if verbose >= 2:
        log.exception("traceback")
    click.echo(f"dagmirror: internal error: {type(exc).__name__}: {exc}", err=True)
    sys.exit(EXIT_FAILED)


# ==========================================================================================================
# deploy, history, rollback, promote: validated, recorded writes to an environment (dagmirror/deploy/).
# Exit codes as above, plus 4: validation refused the deploy before anything was written. The delete guard
# (3) refuses the whole deploy too, so either code means the bucket is untouched.
# ==========================================================================================================
EXIT_REFUSED = 4


def deploy_options(fn: F) -> F:
    """Flags shared by deploy, history, rollback and promote."""
    options = [
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
        click.option(
            "--json", "as_json", is_flag=True, help="Print the report as one JSON line (last line)."
        ),
        click.option(
            "-v", "--verbose", count=True, help="-v info logging, -vv debug logging and tracebacks."
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def write_options(fn: F) -> F:
    """Flags of the commands that write: deploy, rollback, promote."""
    options = [
        click.option(
            "--dry-run", is_flag=True, help="Validate and plan only: write nothing, not even a record."
        ),
        click.option("--concurrency", type=click.IntRange(1, 256), help="Parallel requests [16]."),
        click.option(
            "--max-delete-fraction", type=click.FloatRange(0.0, 1.0), help="Delete guard threshold [0.5]."
        ),
        click.option("--allow-mass-delete", is_flag=True, default=None, help="Override the delete guard."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def airflow_options(fn: F) -> F:
    options = [
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
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


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
    _deploy_command(
        params,
        lambda d: d.deploy(list(paths), env, dry_run=dry_run, airflow_check=airflow_check),
    )


@cli.command()
@click.option("--env", required=True, help="Environment whose deploys to list.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="How many.")
@deploy_options
def history(env: str, limit: int, **params: Any) -> None:
    """The deploys of an environment, newest first."""
    _deploy_command(
        params, lambda d: d.history(env, limit=limit), show=_print_history, code=lambda _: EXIT_OK
    )


@cli.command()
@click.option("--env", required=True, help="Environment to roll back.")
@click.option("--to", "deploy_id", required=True, metavar="DEPLOY_ID", help="The deploy to restore.")
@deploy_options
@write_options
def rollback(env: str, deploy_id: str, **params: Any) -> None:
    """Restore exactly the object versions recorded for DEPLOY_ID (needs bucket versioning).

    The rollback is itself a recorded deploy.
    """
    dry_run = params.pop("dry_run")
    _deploy_command(params, lambda d: d.rollback(env, deploy_id, dry_run=dry_run))


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
    _deploy_command(
        params,
        lambda d: d.promote(source_env, target_env, dry_run=dry_run, airflow_check=airflow_check),
    )


def _deploy_command(
    params: dict[str, Any],
    action: Callable[[Deployer], Coroutine[Any, Any, Any]],
    *,
    show: Callable[[Any, bool], None] | None = None,
    code: Callable[[Any], int] | None = None,
) -> NoReturn:
    verbose, as_json = int(params.pop("verbose")), bool(params.pop("as_json"))
    setup_logging(verbose)
    config_file = params.pop("config_file")
    flags = {k: v for k, v in params.items() if v is not None and v != ()}

    async def go() -> Any:
        config = load_deploy_config(config_path(config_file), os.environ, flags)
        async with Deployer(config) as deployer:
            return await action(deployer)

    try:
        result = _run(go())
    except (DeployRefused, GuardRefused) as exc:
        headline = f"{click.get_current_context().info_name} refused, nothing was written:"
        _refused(exc, headline, EXIT_REFUSED if isinstance(exc, DeployRefused) else EXIT_GUARD, as_json)
    except DagmirrorError as exc:
        _die(exc, verbose)
    except Exception as exc:  # a bug: one line (the traceback with -vv)
        _internal_error(exc, verbose)
    (show or _print_deploy)(result, as_json)
    sys.exit((code or _deploy_exit_code)(result))


def _refused(exc: DagmirrorError, headline: str, exit_with: int, as_json: bool) -> NoReturn:
    problems = str(exc).splitlines()
    click.echo(f"dagmirror: error: {headline}", err=True)
    for line in problems:
        click.echo(f"dagmirror: error:   {line}", err=True)
    if as_json:
        click.echo(orjson.dumps({"result": "refused", "exit": exit_with, "problems": problems}).decode())
    sys.exit(exit_with)


def _deploy_exit_code(report: DeployReport) -> int:
    return EXIT_FAILED if report.counts()["failed"] or report.record_error else EXIT_OK


def _print_deploy(report: DeployReport, as_json: bool) -> None:
    if report.record_error:
        click.echo(f"dagmirror: error: {report.record_error}", err=True)
    if as_json:
        click.echo(orjson.dumps(report.to_dict()).decode())
        return
    c = report.counts()
    verb = {"deploy": "deploy", "rollback": "roll back", "promote": "promote"}[report.kind]
    origin = "".join(f" ({k.replace('_', ' ')} {v})" for k, v in report.origin.items())
    if report.dry_run:
        click.echo(
            f"{report.env}: dry run of a {report.kind}{origin}: would upload {c['upload']}, "
            f"copy {c['copy']}, delete {c['delete']}; {c['unchanged']} unchanged"
        )
    elif report.result == "unchanged":
        click.echo(f"{report.env}: nothing to {verb}{origin}: {c['unchanged']} files unchanged (no record)")
    else:
        click.echo(
            f"{report.env}: {report.kind} {report.deploy_id}{origin}: uploaded {c['upload']}, copied "
            f"{c['copy']}, unchanged {c['unchanged']}, deleted {c['delete']}, failed {c['failed']} "
            f"in {report.seconds:.2f}s"
        )
    for f in report.files:
        if f.action != "unchanged" or f.error:
            version = f" (version {f.version_id})" if f.version_id and f.action != "failed" else ""
            error = f": {f.error}" if f.error else ""
            click.echo(f"  {f.action:<9} {f.path}{version}{error}")
    if airflow := report.validation.get("airflow"):
        click.echo(
            f"  airflow check: Airflow {airflow['version']} parsed {airflow['files']} DAG files, no errors"
        )
    for note in report.validation.get("warnings", ()):
        click.echo(f"  warning: {note}")
    if report.record_key:
        click.echo(f"  record s3://{report.bucket}/{report.record_key}")


def _print_history(deploys: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(orjson.dumps({"deploys": deploys}).decode())  # newest first
        return
    if not deploys:
        click.echo("no deploys recorded")
    for d in deploys:
        if "error" in d:
            click.echo(f"{d['deploy_id']}  {d['error']}")
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(d["time"]))
        who = d["who"].get("user") or "?"
        who += f" ({d['who']['identity']})" if d["who"].get("identity") else ""
        git = d.get("git") or {}
        commit = (
            f"git {git['commit'][:10]}{'+dirty' if git.get('dirty') else ''}" if git.get("commit") else ""
        )
        origin = " ".join(f"{k.replace('_', ' ')} {v}" for k, v in d["origin"].items())
        counts = ", ".join(f"{k} {v}" for k, v in d["counts"].items() if v)
        fields = [
            when,
            d["deploy_id"],
            f"{d['kind']:<8}",
            d["result"],
            who,
            f"@{d['host']}",
            commit,
            origin,
            counts,
        ]
        click.echo("  ".join(f for f in fields if f))


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="dagmirror")
