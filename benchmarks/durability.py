"""What durable installs cost a cold pass: the same in-process cold pass of a SeaweedFS corpus with fsync on
(the default), with fsync off, and (when /dev/shm exists) into tmpfs, where an fsync costs nothing, the
variants alternating, each into a folder never used before; and floor-get (every key GET once, no disk) in
the same run. Prints the median seconds of each and its ratio to floor-get.

  python -m benchmarks.durability --files 10000 --runs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import uvloop

from dagmirror import Mirror, MirrorConfig
from dagmirror.devtools.servers import CREDENTIALS, seaweedfs_server

from .getcost import one_run, seed


async def cold(endpoint: str, dest: Path, *, fsync: bool) -> float:
    config = MirrorConfig.create("s3://durability/dags/", str(dest), endpoint_url=endpoint, fsync=fsync)
    async with Mirror(config) as mirror:
        start = time.perf_counter()
        report = await mirror.sync_once()
        seconds = time.perf_counter() - start
    if report.failed or not report.downloaded:
        raise SystemExit(f"cold pass into {dest} failed: {report.failures[:3]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.durability", description=__doc__)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    os.environ.update(CREDENTIALS | {"AWS_REGION": "us-east-1"})
    shm = Path("/dev/shm")
    variants = ["fsync on", "fsync off"] + (["tmpfs"] if shm.is_dir() else [])
    samples: dict[str, list[float]] = {v: [] for v in [*variants, "floor-get"]}
    with (
        tempfile.TemporaryDirectory(prefix="dagmirror-durability-") as tmp,
        tempfile.TemporaryDirectory(prefix="dagmirror-durability-", dir=shm if shm.is_dir() else None) as mem,
        seaweedfs_server(Path(tmp) / "seaweedfs") as server,
    ):
        keys = [f"dags/{k}" for k in seed(server.endpoint_url, "durability", args.files)]
        for r in range(args.runs):  # trees are kept until the end: deleting them would slow the next run
            for name in variants if r % 2 == 0 else variants[::-1]:
                dest = Path(mem if name == "tmpfs" else tmp) / f"{name.replace(' ', '-')}-{r}"
                samples[name].append(uvloop.run(cold(server.endpoint_url, dest, fsync=name != "fsync off")))
            samples["floor-get"].append(uvloop.run(one_run(server.endpoint_url, keys, "h1", "durability"))[0])
    base = statistics.median(samples["floor-get"])
    print(f"{args.files} files, SeaweedFS, median of {args.runs} runs")
    print("| cold pass | median s | vs floor-get |")
    print("|---|---:|---:|")
    for name, values in samples.items():
        print(f"| {name} | {statistics.median(values):.2f} | {statistics.median(values) / base:.2f}x |")


if __name__ == "__main__":
    main()
