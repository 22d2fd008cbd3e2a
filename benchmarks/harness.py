"""Measuring one command: wall time, CPU seconds and peak RSS of the process (os.wait4), its exit code,
and whether the folder it wrote equals what S3 holds."""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash


@dataclass(frozen=True)
class Sample:
    seconds: float
    cpu_s: float
    rss_mb: float
    code: int
    stdout: str = ""
    stderr: str = ""


TIME = Path("/usr/bin/time")


def run(cmd: list[str], env: dict[str, str], *, timeout: float = 1800) -> Sample:
    """Run `cmd` to completion. CPU and peak RSS come from GNU time, which forks the tool from its own small
    process: a child forked straight from this (large) Python would report our RSS as its peak."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile() as usage,
    ):
        wrapped = [str(TIME), "-q", "-o", usage.name, "-f", "%U %S %M", *cmd] if TIME.exists() else cmd
        start = time.perf_counter()
        proc = subprocess.Popen(wrapped, env=env, stdout=out, stderr=err)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        fields = Path(usage.name).read_text().split()[-3:] if TIME.exists() else []
        cpu, rss = (
            (float(fields[0]) + float(fields[1]), float(fields[2]) / 1024) if len(fields) == 3 else (0.0, 0.0)
        )
        return Sample(
            seconds=seconds,
            cpu_s=cpu,
            rss_mb=rss,
            code=proc.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def digest(body: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(body)


def tree(dest: Path) -> dict[str, str]:
    """Relative path -> xxh3 of every regular file under dest, dagmirror's own folder excepted."""
    found: dict[str, str] = {}
    for root, dirs, files in os.walk(dest):
        dirs[:] = [d for d in dirs if d != ".dagmirror"]
        for name in files:
            path = Path(root, name)
            found[path.relative_to(dest).as_posix()] = digest(path.read_bytes())
    return found


@dataclass
class Check:
    correct: bool
    missing: int = 0
    extra: int = 0
    stale: int = 0
    missed_edits: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("correct", "missing", "extra", "stale", "missed_edits")}


def check(dest: Path, truth: dict[str, str], same_size_edits: frozenset[str] = frozenset()) -> Check:
    """Compare the folder to S3's truth; same-size edits still holding old content are counted apart."""
    local = tree(dest)
    stale = {k for k in truth.keys() & local.keys() if truth[k] != local[k]}
    missing, extra = truth.keys() - local.keys(), local.keys() - truth.keys()
    return Check(
        correct=not (stale or missing or extra),
        missing=len(missing),
        extra=len(extra),
        stale=len(stale),
        missed_edits=len(stale & same_size_edits),
    )


@dataclass
class Result:
    scenario: str
    server: str
    files: int
    tool: str
    samples: list[Sample] = field(default_factory=list)
    per_pass: list[float] = field(default_factory=list)  # in-process passes (dagmirror's daemon view)
    requests: dict[str, int] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    note: str = ""

    @property
    def median_s(self) -> float:
        values = self.per_pass or [s.seconds for s in self.samples]
        return statistics.median(values) if values else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "server": self.server,
            "files": self.files,
            "tool": self.tool,
            "median_s": round(self.median_s, 4),
            "runs_s": [round(s.seconds, 4) for s in self.samples],
            "per_pass_s": [round(p, 4) for p in self.per_pass],
            "cpu_s": round(statistics.median([s.cpu_s for s in self.samples]), 3) if self.samples else None,
            "peak_rss_mb": round(max(s.rss_mb for s in self.samples), 1) if self.samples else None,
            "requests": self.requests,
            "correct": all(c.correct for c in self.checks) if self.checks else None,
            "missed_edits": sum(c.missed_edits for c in self.checks),
            "failures": sum(1 for s in self.samples if s.code != 0),
            "note": self.note,
        }
