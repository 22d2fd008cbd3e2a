"""Command line: argument parsing, logging set-up, output and exit codes. No sync logic lives here.

Exit codes: 0 success (rejected keys included), 1 some objects failed or the pass could not complete,
2 usage or configuration error, 3 a safety guard refused deletions.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import orjson

from dagmirror.config import DEFAULT_CONCURRENCY, MirrorConfig
from dagmirror.engine import Mirror
from dagmirror.errors import ConfigError, DagmirrorError, DestLocked, PassFailed, SourceConfigError
from dagmirror.models import SyncReport

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_GUARD = 0, 1, 2, 3
T = TypeVar("T")
log = logging.getLogger("dagmirror")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dagmirror")
def cli() -> None:
    """Mirror Airflow DAG folders from S3: fast, atomic, verified, safe."""


@cli.command()
@click.argument("source")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--endpoint-url", help="S3-compatible endpoint (default: AWS, or $AWS_ENDPOINT_URL).")
@click.option("--region", help="AWS region (default: the AWS chain, e.g. $AWS_REGION).")
@click.option("--concurrency", type=click.IntRange(1, 1024), default=DEFAULT_CONCURRENCY, show_default=True)
@click.option("--include", multiple=True, metavar="GLOB", help="Mirror only matching relative paths.")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Never mirror matching relative paths.")
@click.option("--max-delete-fraction", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True)
@click.option("--allow-mass-delete", is_flag=True, help="Override the delete guard.")
@click.option(
    "--transport",
    type=click.Choice(["lean", "sdk"]),
    default="lean",
    show_default=True,
    help="lean: GETs over aiohttp signed by the AWS SDK (fast); sdk: every request through aioboto3.",
)
@click.option("--dry-run", is_flag=True, help="List and plan only: no download, no change to DEST.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON line (last line).")
@click.option("-v", "--verbose", count=True, help="-v progress details, -vv debug and tracebacks.")
def sync(
    source: str,
    dest: Path,
    endpoint_url: str | None,
    region: str | None,
    concurrency: int,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    max_delete_fraction: float,
    allow_mass_delete: bool,
    transport: str,
    dry_run: bool,
    as_json: bool,
    verbose: int,
) -> None:
    """Make DEST an exact mirror of SOURCE (s3://bucket/prefix), once."""
    _setup_logging(verbose)
    try:
        config = MirrorConfig.create(
            source,
            dest,
            include=include,
            exclude=exclude,
            endpoint_url=endpoint_url,
            region=region,
            concurrency=concurrency,
            max_delete_fraction=max_delete_fraction,
            allow_mass_delete=allow_mass_delete,
            transport=transport,
            dry_run=dry_run,
        )
        report = _run(_sync_once(config, show_progress=not as_json and sys.stderr.isatty()))
    except DagmirrorError as exc:
        _die(exc, verbose)
    except Exception as exc:  # a bug: still one line (the traceback with -vv), never a half-done silence
        if verbose >= 2:
            log.exception("traceback")
        click.echo(f"dagmirror: internal error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    _print_report(report, as_json)
    sys.exit(exit_code(report))


def exit_code(report: SyncReport) -> int:
    if report.guard:
        return EXIT_GUARD
    return EXIT_FAILED if report.failed else EXIT_OK


async def _sync_once(config: MirrorConfig, *, show_progress: bool) -> SyncReport:
    async with Mirror(config) as mirror:
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
    click.echo(f"dagmirror: error: {exc}", err=True)
    cause = exc.cause if isinstance(exc, PassFailed) else exc
    usage = isinstance(cause, (ConfigError, SourceConfigError, DestLocked))
    sys.exit(EXIT_USAGE if usage else EXIT_FAILED)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("dagmirror: %(levelname)s: %(message)s"))
    root = logging.getLogger("dagmirror")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="dagmirror")
