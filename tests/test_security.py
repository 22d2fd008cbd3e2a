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
