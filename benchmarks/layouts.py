"""LISTs and time of a no-op list-mode pass on each bucket layout: the flat listing split in two
(`fanout_depth = 0`, the default) side by side with the fan-out (`fanout_depth = 1`), in one run.

    python -m benchmarks.layouts [--server seaweedfs|moto] [--passes 5] [--json FILE]

Layouts (issue: requests on any layout): the benchmark corpus (10,000 files, `team<i>/sub<j>/`), 1,000
pipeline folders of 3 files, 10,000 flat files, a deep tree, a few huge folders. Each is uploaded once; one
cold pass makes DEST warm; then PASSES no-op passes in one process (as the daemon runs them) per strategy,
alternating strategies so drift on a shared machine falls on both. Reported: LISTs of a no-op pass (the
same every pass), the bound ceil(N/1000)+2, and the median pass time."""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from benchmarks.deploy_latency import server
from dagmirror import Mirror, MirrorConfig
from dagmirror.devtools.corpus import create_bucket, synthetic_corpus, upload
from dagmirror.devtools.servers import S3Server, s3_client
from tests.helpers import sdk_credentials

BODY = b"x = 1\n" * 20


def layouts() -> dict[str, dict[str, bytes]]:
    return {
        "benchmark corpus (10,000)": synthetic_corpus(10_000),
        "pipeline folders (1,000 x 3)": {
            f"pipeline_{p:04d}/{name}": BODY
            for p in range(1000)
            for name in ("dag.py", "sql/query.sql", "config.yaml")
        },
        "flat (10,000)": {f"dag_{i:05d}.py": BODY for i in range(10_000)},
        "deep (5,000)": {f"a/b/c/d{i % 7}/e{i % 11}/f{i % 3}/dag_{i:05d}.py": BODY for i in range(5_000)},
        "few huge folders (3 x 3,000)": {f"big{i % 3}/dag_{i:05d}.py": BODY for i in range(9_000)},
    }


async def passes(cfg: MirrorConfig, n: int, *, noop: bool = True) -> tuple[list[float], dict[str, int]]:
    times: list[float] = []
    async with Mirror(cfg) as mirror:
        for _ in range(n):
            started = time.perf_counter()
            report = await mirror.sync_once()
            times.append(time.perf_counter() - started)
            assert not noop or report.downloaded == 0, "a no-op pass downloaded something"
    return times, dict(report.requests)


def measure(server: S3Server, name: str, files: dict[str, bytes], workdir: Path, n: int) -> dict[str, Any]:
    s3, bucket = s3_client(server.endpoint_url), f"layout-{uuid.uuid4().hex[:10]}"
    create_bucket(s3, bucket)
    upload(s3, bucket, "dags/prod/", files)
    out: dict[str, Any] = {"layout": name, "files": len(files), "bound": math.ceil(len(files) / 1000) + 2}
    configs = {
        depth: MirrorConfig.create(
            f"s3://{bucket}/dags/prod/",
            workdir / f"{bucket}-{depth}",
            endpoint_url=server.endpoint_url,
            mode="objects",
            fanout_depth=depth,
        )
        for depth in (0, 1)
    }
    for cfg in configs.values():
        asyncio.run(passes(cfg, 1, noop=False))  # cold: DEST warm
    times: dict[int, list[float]] = {0: [], 1: []}
    lists: dict[int, int] = {}
    for _ in range(n):
        for depth, cfg in configs.items():
            took, requests = asyncio.run(passes(cfg, 1))
            times[depth] += took
            lists[depth] = requests.get("LIST", 0)
    for depth, label in ((0, "flat"), (1, "fanout")):
        out[label] = {"lists": lists[depth], "median_s": round(statistics.median(times[depth]), 3)}
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| layout | files | LISTs flat (default) | LISTs fan-out depth 1 | bound ceil(N/1000)+2 "
        "| no-op flat | no-op fan-out | time flat / fan-out |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        flat, fan = r["flat"], r["fanout"]
        lines.append(
            f"| {r['layout']} | {r['files']:,} | {flat['lists']} | {fan['lists']} | {r['bound']} "
            f"| {flat['median_s']:.3f} s | {fan['median_s']:.3f} s "
            f"| {flat['median_s'] / fan['median_s']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", choices=("seaweedfs", "moto"), default="seaweedfs")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="layout names to run (default: all)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        sdk_credentials(),
        server(args.server, Path(tmp) / "weed") as s,
    ):
        for name, files in layouts().items():
            if args.only and not any(o in name for o in args.only):
                continue
            rows.append(measure(s, name, files, Path(tmp), args.passes))
            print(orjson.dumps(rows[-1]).decode(), flush=True)
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps({"server": args.server, "rows": rows}, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
