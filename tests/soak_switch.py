"""The release-switch soak: many releases in a row, mirrored through the fault proxy, while a reader checks
that a DAG and the helper module it imports always come from one release.

Each release N rewrites every file: `dags/dag_<i>.py` starts with `# RELEASE N` and imports `common.helpers`,
whose body is `RELEASE = N`. The reader resolves DEST once per read (`os.path.realpath`: with `--switch
symlink` that pins one generation), reads a random DAG, then the helper, and counts a read whose two markers
differ as mixed. With `--switch files` the same reader reads DEST itself, so a burst that lands between the
two reads is seen as mixed: that run shows the check can fail.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from dagmirror import Mirror, MirrorConfig, PassFailed
from dagmirror.devtools.corpus import create_bucket
from dagmirror.devtools.proxy import ChaosRule, S3Proxy, default_menu
from dagmirror.devtools.servers import s3_client
from dagmirror.retry import RetryPolicy

from .helpers import read_tree, sdk_credentials
from .releases import publish

PREFIX = "dags/prod/"
_MARK = re.compile(rb"RELEASE[ =]*(\d+)")


@dataclass
class SwitchFigures:
    switch: str
    releases: int = 0  # releases published, each one a switch once installed
    switches: int = 0  # releases DEST showed (installed whole)
    passes: int = 0
    failed_passes: int = 0  # PassFailed or a report with failures (retried by the next pass)
    reads: int = 0
    mixed_reads: int = 0  # a DAG and its helper from two releases
    vanished_reads: int = 0  # a file missing under a resolved DEST
    faults: dict[str, int] = field(default_factory=dict)
    generations_kept: int = 0
    generations_removed: int = 0
    converged: bool = False
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)


def release_files(n: int, dags: int) -> dict[str, bytes]:
    files = {"common/helpers.py": f"RELEASE = {n}\n".encode()}
    for i in range(dags):
        files[f"dags/dag_{i:03}.py"] = (
            f"# RELEASE {n}\nfrom common import helpers\n".encode() + b"x = 1\n" * 40
        )
    return files


def switch_soak(
    endpoint: str,
    workdir: Path,
    *,
    switches: int,
    switch: str = "symlink",
    seed: int = 1,
    dags: int = 40,
    rate: float = 0.25,
) -> SwitchFigures:
    """Publish `switches` releases one after the other; after each, passes through the fault proxy until
    DEST shows it; a reader thread checks every read. Faults stop for the last pass, which must converge."""
    s3 = s3_client(endpoint)
    bucket = f"switch-{switch}-{seed}-{os.getpid()}"
    create_bucket(s3, bucket)
    dest = workdir / f"switch-{switch}" / "dags"
    dest.parent.mkdir(parents=True, exist_ok=True)
    figures = SwitchFigures(switch)
    started = time.monotonic()
    chaos = ChaosRule(seed, rate=rate, menu=default_menu(spike=0.1))
    with S3Proxy(endpoint) as proxy, sdk_credentials():
        proxy.set_fault(chaos)
        cfg = MirrorConfig.create(
            f"s3://{bucket}/{PREFIX}",
            dest,
            endpoint_url=proxy.endpoint_url,
            concurrency=8,
            fsync=False,  # atomicity for readers comes from rename, not fsync; spare the shared disk
            connect_timeout=2.0,
            read_timeout=2.0,
            retry=RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.1),
            mode="releases",
            switch=switch,
            generation_grace=1.0,
        )
        last = asyncio.run(_switches(s3, bucket, cfg, switches, dags, figures))
        chaos.on = False
        figures.faults = dict(sorted(proxy.injected().items()))
    figures.converged = read_tree(dest) == last
    if switch == "symlink":
        figures.generations_kept = len(os.listdir(dest.parent / ".dags.dagmirror" / "generations"))
    figures.seconds = round(time.monotonic() - started, 1)
    return figures


async def _switches(
    s3: object, bucket: str, cfg: MirrorConfig, switches: int, dags: int, figures: SwitchFigures
) -> dict[str, bytes]:
    files = release_files(0, dags)
    publish(s3, bucket, PREFIX, files, seq=1)
    async with Mirror(cfg) as mirror:
        await _until_installed(mirror, figures, limit=50)
        reader = _Reader(cfg.dest, dags, figures)
        with reader:
            for n in range(1, switches + 1):
                files = release_files(n, dags)
                publish(s3, bucket, PREFIX, files, seq=n + 1)
                figures.releases += 1
                if await _until_installed(mirror, figures, limit=20):
                    figures.switches += 1
    return files


async def _until_installed(mirror: Mirror, figures: SwitchFigures, *, limit: int) -> bool:
    for _ in range(limit):
        figures.passes += 1
        try:
            report = await mirror.sync_once()
        except PassFailed:
            figures.failed_passes += 1
            continue
        figures.generations_removed += len(report.generations_removed)
        if report.failed:
            figures.failed_passes += 1
            continue
        return True
    return False


class _Reader:
    """A thread that reads a DAG then its helper under one resolution of DEST, as fast as it can."""

    def __init__(self, dest: Path, dags: int, figures: SwitchFigures) -> None:
        self._dest, self._dags, self._figures = dest, dags, figures
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="switch-reader", daemon=True)

    def __enter__(self) -> _Reader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        rng, figures = random.Random(7), self._figures
        while not self._stop.is_set():
            root = os.path.realpath(self._dest)  # once per read: a generation, or DEST itself
            dag = f"{root}/dags/dag_{rng.randrange(self._dags):03}.py"
            try:
                with open(dag, "rb") as fh:
                    dag_mark = _marker(fh.read())
                with open(f"{root}/common/helpers.py", "rb") as fh:
                    helper_mark = _marker(fh.read())
            except FileNotFoundError as exc:
                figures.vanished_reads += 1
                figures.examples.append(f"vanished: {exc.filename}")
                continue
            figures.reads += 1
            if dag_mark != helper_mark:
                figures.mixed_reads += 1
                if len(figures.examples) < 10:
                    figures.examples.append(f"mixed: dag of release {dag_mark}, helper of {helper_mark}")


def _marker(body: bytes) -> int:
    match = _MARK.search(body)
    return int(match.group(1)) if match else -1
