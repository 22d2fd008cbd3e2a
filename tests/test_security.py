"""Hardening checks that need no server: the boundaries of docs/security.md, one behaviour per test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from dagmirror.deploy import sandbox
from dagmirror.errors import ConfigError


def test_airflow_check_refuses_to_run_dag_code_unconfined_when_bwrap_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "python3").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="bubblewrap"):
        sandbox.command("bwrap", "python3", tmp_path)
    assert sandbox.command("none", "python3", tmp_path) == [str(tmp_path / "python3")]


def test_the_airflow_sandbox_shows_the_interpreter_and_the_work_folder_but_not_the_deployers_home(
    tmp_path: Path,
) -> None:
    argv = sandbox.bwrap_argv("/usr/bin/bwrap", "/opt/af/bin/python", ["/opt/af", "/usr"], tmp_path)
    binds = {argv[i + 1] for i, a in enumerate(argv) if a in ("--bind", "--ro-bind", "--ro-bind-try")}
    assert {"/opt/af", str(tmp_path)} <= binds
    assert not any(b == os.path.expanduser("~") or b.startswith("/home") for b in binds)
    assert "--unshare-all" in argv
    assert argv[argv.index("--") + 1] == "/opt/af/bin/python"


FORGED = "\x1b]0;owned\x07\x1b[2Jus-east-1\ndagmirror: error: all is well\r\u202e"


def test_a_servers_region_header_and_error_message_reach_errors_as_one_printable_line() -> None:
    from dagmirror.source._translate import classify
    from dagmirror.source.lean import LeanHTTPError, lean_error

    moved = lean_error(LeanHTTPError(301, "PermanentRedirect", "", {"x-amz-bucket-region": FORGED}), "GET k")
    denied = classify("AccessDenied", 403, FORGED * 100, "GET k")
    for error in (moved, denied):
        text = str(error)
        assert not any(c in text for c in "\x1b\x07\n\r\u202e"), text
    assert str(moved) == "GET k: the bucket is in another region: pass --region"
    assert len(str(denied)) < 400


def test_cli_errors_never_print_a_control_character_or_an_extra_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from dagmirror.cli.app import die
    from dagmirror.errors import SourceConfigError

    with pytest.raises(SystemExit):
        die(SourceConfigError(f"listing: {FORGED}"), 0)
    err = capsys.readouterr().err
    assert all(line.startswith("dagmirror: error: ") for line in err.splitlines())
    assert not any(c in err for c in "\x1b\x07\r\u202e")


async def test_an_os_error_in_the_tree_code_is_a_reported_pass_failure_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from dagmirror import Mirror, MirrorConfig
    from dagmirror.errors import PassFailed
    from dagmirror.install import Tree
    from dagmirror.retry import RetryPolicy
    from dagmirror.source.memory import MemorySource

    def out_of_fds(*_: object, **__: object) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    source = MemorySource({"dags/a.py": b"A = 1\n"})
    cfg = MirrorConfig.create("s3://bkt/dags/", tmp_path, retry=RetryPolicy(attempts=1))
    monkeypatch.setattr(Tree, "write_meta", out_of_fds)
    async with Mirror(cfg, source=source) as mirror:
        with pytest.raises(PassFailed, match="Too many open files"):
            await mirror.sync_once()
