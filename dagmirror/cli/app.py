"""The command group, the one table of exit codes, and the one place errors become exit codes.

Commands (mirror.py, deploy.py) only parse flags, call the library and render (render.py)."""

from __future__ import annotations

import asyncio
import enum
import importlib
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from dagmirror.errors import (
    ConfigError,
    DagmirrorError,
    DeployRefused,
    DestLocked,
    GuardRefused,
    PassFailed,
    ReleaseConflict,
    SourceConfigError,
    printable,
)
from dagmirror.models import SyncReport

if TYPE_CHECKING:
    from dagmirror.deploy import DeployReport

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("dagmirror")


class ExitCode(enum.IntEnum):
    OK = 0  # success (rejected keys included)
    FAILED = 1  # some objects failed after retries, the pass could not complete, or an internal error
    USAGE = 2  # usage or configuration error: bad URL or flag, missing bucket or profile, access denied
    GUARD = 3  # the delete guard refused deletions (a sync's downloads still applied; a deploy wrote nothing)
    REFUSED = 4  # validation refused a deploy before anything was written
    CONFLICT = 5  # another deploy published meanwhile and changed the same paths: no pointer, no plain file
    # The same code for "not there yet": `--wait` ran out of time, or `fleet` found live instances lagging.
    NOT_CONVERGED = 5

    @classmethod
    def of_sync(cls, report: SyncReport) -> ExitCode:
        if report.guard:
            return cls.GUARD
        return cls.FAILED if report.failed or report.untrusted else cls.OK

    @classmethod
    def of_deploy(cls, report: DeployReport) -> ExitCode:
        return cls.FAILED if report.counts()["failed"] or report.record_error else cls.OK

    @classmethod
    def of_error(cls, exc: DagmirrorError) -> ExitCode:
        if isinstance(exc, DeployRefused):
            return cls.REFUSED
        if isinstance(exc, GuardRefused):
            return cls.GUARD
        if isinstance(exc, ReleaseConflict):
            return cls.CONFLICT
        cause = exc.cause if isinstance(exc, PassFailed) else exc
        usage = isinstance(cause, (ConfigError, SourceConfigError, DestLocked))
        return cls.USAGE if usage else cls.FAILED


# Each command's module, imported only when that command runs (or --help lists them all): `dagmirror sync`
# then loads no deploy, setup or fleet code (tests/test_cli.py checks this table against the modules).
COMMANDS = {
    "sync": "mirror",
    "run": "mirror",
    "deploy": "deploy",
    "history": "deploy",
    "rollback": "deploy",
    "promote": "deploy",
    "gc": "gc",
    "keys": "keys",
    "bucket": "setup",
    "iam-policy": "setup",
    "doctor": "setup",
    "fleet": "fleet",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(super().list_commands(ctx)))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            importlib.import_module(f"dagmirror.cli.{module}")  # its decorators register its commands
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dagmirror")
def cli() -> None:
    """Mirror Airflow DAG folders from S3: fast, atomic, verified, safe."""


def options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Several click options as one decorator, in the order given (as --help lists them)."""

    def apply(fn: F) -> F:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every platform we ship for
        return asyncio.run(coro)
    return uvloop.run(coro)


def call(fn: Callable[[], T], verbose: int, *, let_through: tuple[type[Exception], ...] = ()) -> T:
    """`fn()`, with every error turned into its exit code and one line each (a traceback only with -vv);
    errors of the `let_through` types propagate, for a command that renders them itself."""
    try:
        return fn()
    except let_through:
        raise
    except DagmirrorError as exc:
        die(exc, verbose)
    except Exception as exc:  # a bug: still one line, never a silent half-done run
        if verbose >= 2:
            log.exception("traceback")
        click.echo(f"dagmirror: internal error: {type(exc).__name__}: {printable(exc)}", err=True)
        sys.exit(ExitCode.FAILED)


def die(exc: DagmirrorError, verbose: int) -> NoReturn:
    if verbose >= 2:
        log.exception("traceback")
    for line in str(exc).splitlines() or [type(exc).__name__]:  # each line printable: no forged lines
        click.echo(f"dagmirror: error: {printable(line)}", err=True)
    sys.exit(ExitCode.of_error(exc))


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="dagmirror")
