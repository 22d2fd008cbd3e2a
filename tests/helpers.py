"""Plain helpers the test modules share (fixtures live in conftest.py): reading and writing a file tree,
seeding a bucket, a sleep that never waits, SDK credentials in the environment, and the real `dagmirror`
CLI run as a subprocess, exactly as users and other tools run it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from dagmirror.devtools.servers import CREDENTIALS, s3_env

META = ".dagmirror"


def walk_files(dest: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of every non-folder name under DEST, outside DEST/.dagmirror and without
    entering linked folders."""
    for root, dirs, files in os.walk(dest):
        rel_root = Path(root).relative_to(dest)
        if rel_root.parts[:1] == (META,):
            dirs[:] = []
            continue
        for name in files:
            yield (rel_root / name).as_posix(), Path(root) / name


def read_tree(dest: Path) -> dict[str, bytes]:
    """Every regular file under DEST by relative path: symlinks, what lies behind a linked folder, and
    dagmirror's own DEST/.dagmirror are left out, so the result is exactly what a mirror installed."""
    return {
        rel: path.read_bytes() for rel, path in walk_files(dest) if path.is_file() and not path.is_symlink()
    }


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write each {relative path: body} under `root`, creating folders as needed; returns `root`."""
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)
    return root


def put_all(s3: Any, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    for rel, body in files.items():
        s3.put_object(Bucket=bucket, Key=prefix + rel, Body=body)


async def no_sleep(_: float) -> None:
    """The injectable sleep of Mirror and Deployer, for tests: retries and backoff never wait."""
    return None


@contextlib.contextmanager
def sdk_credentials() -> Iterator[None]:
    """The test credentials in os.environ (and no AWS_PROFILE) for as long as the block runs: an in-process
    Mirror reads its credentials from the environment, as the CLI does."""
    saved = {k: os.environ.get(k) for k in (*CREDENTIALS, "AWS_PROFILE")}
    os.environ.update(CREDENTIALS)
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def git(repo: Path, *args: str) -> str:
    """`git -C repo ARGS` with a fixed author, for tests that deploy from a repository; its stdout."""
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@x",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@x",
    )
    return subprocess.run(
        ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=True
    ).stdout


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def report(self) -> dict[str, Any]:
        return dict(orjson.loads(self.stdout.strip().splitlines()[-1]))


def dagmirror(
    *args: str | Path, endpoint: str, env: dict[str, str] | None = None, timeout: float = 60
) -> Run:
    """`python -m dagmirror ARGS` against `endpoint` (added to `sync` when not given)."""
    cmd = [sys.executable, "-m", "dagmirror", *map(str, args)]
    if args and args[0] == "sync" and "--endpoint-url" not in args:
        cmd += ["--endpoint-url", endpoint]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env or s3_env(endpoint), check=False
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)
