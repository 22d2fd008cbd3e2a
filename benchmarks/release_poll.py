"""Requests and time of a release mirror's cold start and no-op poll at 1k and 10k files (moto server).

    python -m benchmarks.release_poll [--files 1000 10000]

Each size gets a fresh bucket: one release published straight into it (tests/releases.py: bodies, manifest,
archive, pointer), then a cold `Mirror` pass and a no-op pass, both in auto mode over the lean transport.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from dagmirror import Mirror, MirrorConfig
from dagmirror.devtools.corpus import create_bucket
from dagmirror.devtools.servers import moto_server, s3_client
from tests.helpers import sdk_credentials
from tests.releases import publish

PREFIX = "dags/prod/"


async def _pass(cfg: MirrorConfig) -> dict[str, Any]:
    async with Mirror(cfg) as mirror:
        started = time.perf_counter()
        report = await mirror.sync_once()
        seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "requests": report.requests, "downloaded": report.downloaded}


def measure(endpoint: str, files: int, workdir: Path) -> dict[str, Any]:
    s3, bucket = s3_client(endpoint), f"bench-{uuid.uuid4().hex[:10]}"
    create_bucket(s3, bucket)
    tree = {f"team{i % 20}/dag_{i:05}.py": f"# dag {i % 100}\n".encode() * 40 for i in range(files)}
    publish(s3, bucket, PREFIX, tree)
    cfg = MirrorConfig.create(f"s3://{bucket}/{PREFIX}", workdir / f"dest-{files}", endpoint_url=endpoint)
    cold = asyncio.run(_pass(cfg))
    noop = asyncio.run(_pass(cfg))
    return {"files": files, "cold": cold, "noop": noop}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    with moto_server() as server, sdk_credentials(), tempfile.TemporaryDirectory() as tmp:
        for files in args.files:
            print(orjson.dumps(measure(server.endpoint_url, files, Path(tmp))).decode())


if __name__ == "__main__":
    main()
