"""Helpers for driving the real `dagmirror` CLI as a subprocess, exactly as users and other tools do."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from dagmirror.devtools.servers import s3_env


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
    cmd = [sys.executable, "-m", "dagmirror", *map(str, args)]
    if args and args[0] == "sync" and "--endpoint-url" not in args:
        cmd += ["--endpoint-url", endpoint]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env or s3_env(endpoint), check=False
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def local_tree(dest: Path) -> dict[str, bytes]:
    """Every regular file under DEST except dagmirror's own folder, by relative path."""
    return {
        p.relative_to(dest).as_posix(): p.read_bytes()
        for p in dest.rglob("*")
        if p.is_file() and not p.is_symlink() and p.relative_to(dest).parts[0] != ".dagmirror"
    }


def put_all(s3: Any, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    for rel, body in files.items():
        s3.put_object(Bucket=bucket, Key=prefix + rel, Body=body)
