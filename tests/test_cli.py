"""The CLI's own logic: one table of exit codes, and history lines that a planted record cannot turn into
a traceback or a terminal escape sequence."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from dagmirror.cli import ExitCode, cli
from dagmirror.cli.render import history
from dagmirror.errors import (
    ConfigError,
    DagmirrorError,
    DeployRefused,
    DestLocked,
    GuardRefused,
    PassFailed,
    SourceConfigError,
    SourceUnavailable,
)
from dagmirror.models import SyncReport

GOOD = {
    "deploy_id": "0123456789ab",
    "time": 1_700_000_000.0,
    "kind": "deploy",
    "who": {"user": "alice", "identity": None},
    "host": "laptop",
    "git": {"commit": "f" * 40, "dirty": True},
    "result": "ok",
    "counts": {"upload": 2, "delete": 0},
    "origin": {},
    "key": "metadata/deploys/dev/x-0123456789ab.json",
}


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("x"), ExitCode.USAGE),
        (SourceConfigError("x"), ExitCode.USAGE),
        (DestLocked("x"), ExitCode.USAGE),
        (PassFailed("x", SourceConfigError("y")), ExitCode.USAGE),
        (PassFailed("x", SourceUnavailable("y")), ExitCode.FAILED),
        (SourceUnavailable("x"), ExitCode.FAILED),
        (DeployRefused("x"), ExitCode.REFUSED),
        (GuardRefused("x"), ExitCode.GUARD),
    ],
)
def test_each_error_has_one_exit_code(error: DagmirrorError, code: ExitCode) -> None:
    assert ExitCode.of_error(error) is code


def test_a_sync_report_exits_3_on_a_guard_then_1_on_failures_else_0() -> None:
    base = SyncReport("s", "d", False, 1, 1, 0, 0, 0, 0, 1, 0.1)
    assert ExitCode.of_sync(base) is ExitCode.OK
    assert ExitCode.of_sync(SyncReport("s", "d", False, 1, 1, 0, 0, 0, 2, 1, 0.1)) is ExitCode.FAILED
    guarded = SyncReport("s", "d", False, 1, 1, 0, 0, 0, 2, 1, 0.1, guard="refused")
    assert ExitCode.of_sync(guarded) is ExitCode.GUARD


def test_history_prints_a_good_record_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    history([GOOD], json=False)
    out = capsys.readouterr().out
    assert out == (
        "2023-11-14 22:13:20Z  0123456789ab  deploy    ok  alice  @laptop  git ffffffffff+dirty  upload 2\n"
    )


@pytest.mark.parametrize(
    "planted",
    [
        {"time": 1e20},
        {"time": "yesterday"},
        {"who": "x"},
        {"counts": {"upload": "many"}},
        {"git": ["not", "a", "table"]},
        {"host": 5},
    ],
)
def test_a_record_of_the_wrong_shape_is_one_unreadable_line_not_a_traceback(
    planted: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    history([GOOD | planted, GOOD], json=False)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("0123456789ab  unreadable record: ")
    assert lines[1].startswith("2023-11-14")


def test_terminal_escapes_in_a_record_are_shown_as_question_marks(capsys: pytest.CaptureFixture[str]) -> None:
    history([GOOD | {"host": "evil\x1b]0;owned\x07\nfake line", "who": {"user": "a\u202eb"}}], json=False)
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\u202e" not in out
    assert out.count("\n") == 1
    assert "@evil?]0;owned??fake line" in out


def test_sync_help_says_who_signs_the_lean_transport() -> None:
    result = CliRunner().invoke(cli, ["sync", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "signed by the AWS SDK" not in result.output
    assert "SigV4 signer" in result.output


def test_every_command_is_in_the_lazy_table_and_a_sync_loads_no_deploy_setup_fleet_or_aiohttp() -> None:

    from dagmirror.cli.app import COMMANDS

    for module in set(COMMANDS.values()):
        importlib.import_module(f"dagmirror.cli.{module}")
    assert set(cli.commands) == set(COMMANDS)
    probe = (
        "import sys\n"
        "from dagmirror.cli import main\n"
        "try:\n"
        "    main(['sync', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "import dagmirror.source.lean  # what a sync opens (no proxy set)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp' or m.startswith(\n"
        "    ('dagmirror.deploy', 'dagmirror.setup', 'dagmirror.fleet'))))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
