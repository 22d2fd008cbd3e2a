"""What one GET costs the event loop, through the HTTP client dagmirror uses (source/h1.py) and through
aiohttp's: the same LeanSource (signing, the source boundary, the parsed answer), 64 GETs at a time, every key
of a SeaweedFS corpus, the clients alternating. Prints the CPU microseconds per GET (the process's CPU time
over the timed part, which is the loop's: nothing else runs) and the wall time of each.

  python -m benchmarks.getcost --files 10000 --runs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import uvloop

from dagmirror.config import MirrorConfig
from dagmirror.devtools.corpus import create_bucket, synthetic_corpus, upload
from dagmirror.devtools.servers import CREDENTIALS, s3_client, seaweedfs_server
from dagmirror.source.lean import LeanSource

from .floors import get_all

CLIENTS = ("aiohttp", "h1")


def seed(endpoint: str, bucket: str, files: int) -> dict[str, bytes]:
    """The synthetic corpus of `files` files uploaded under s3://bucket/dags/: relative path -> body."""
    client = s3_client(endpoint)
    create_bucket(client, bucket)
    bodies = synthetic_corpus(files, 7)
    upload(client, bucket, "dags/", bodies, threads=32)
    return bodies


async def one_run(
    endpoint: str, keys: list[str], client: str, bucket: str = "getcost"
) -> tuple[float, float]:
    """GET every key of `bucket` once, 64 at a time, through `client`: (wall seconds, CPU seconds)."""
    config = MirrorConfig.create(f"s3://{bucket}/dags/", "/nonexistent", endpoint_url=endpoint)
    source = await LeanSource.open(config, client=client)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        await get_all(source, keys, config.concurrency)
        return time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await source.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.getcost", description=__doc__)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    os.environ.update(CREDENTIALS | {"AWS_REGION": "us-east-1"})
    samples: dict[str, list[tuple[float, float]]] = {c: [] for c in CLIENTS}
    with (
        tempfile.TemporaryDirectory(prefix="dagmirror-getcost-") as tmp,
        seaweedfs_server(Path(tmp) / "seaweedfs") as server,
    ):
        keys = [f"dags/{k}" for k in seed(server.endpoint_url, "getcost", args.files)]
        for r in range(args.runs):
            for name in CLIENTS if r % 2 == 0 else CLIENTS[::-1]:
                samples[name].append(uvloop.run(one_run(server.endpoint_url, keys, name)))
    base = statistics.median(c for _, c in samples["aiohttp"])
    print(f"{args.files} GETs, 64 at a time, median of {args.runs} runs")
    print("| client | CPU us per GET | CPU vs aiohttp | wall s |")
    print("|---|---:|---:|---:|")
    for name in CLIENTS:
        cpu = statistics.median(c for _, c in samples[name])
        wall = statistics.median(w for w, _ in samples[name])
        print(f"| {name} | {1e6 * cpu / args.files:.0f} | {cpu / base:.2f}x | {wall:.2f} |")


if __name__ == "__main__":
    main()
