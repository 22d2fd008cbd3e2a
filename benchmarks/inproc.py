"""dagmirror as its daemon runs it: one process, one open Mirror, N consecutive passes.

Prints {"per_pass": [seconds...], "requests": {...}} (requests of the last pass).
Usage: python -m benchmarks.inproc s3://BUCKET/PREFIX/ DEST PASSES [MODE]   (MODE: auto, objects, releases)
"""

from __future__ import annotations

import asyncio
import os
import sys

import orjson

from dagmirror import Mirror, MirrorConfig


async def main(url: str, dest: str, passes: int, mode: str = "auto") -> dict[str, object]:
    config = MirrorConfig.create(url, dest, endpoint_url=os.environ["AWS_ENDPOINT_URL"], mode=mode)
    per_pass: list[float] = []
    async with Mirror(config) as mirror:
        for _ in range(passes):
            report = await mirror.sync_once()
            per_pass.append(report.seconds)
    return {"per_pass": per_pass, "requests": report.requests, "downloaded": report.downloaded}


if __name__ == "__main__":
    mode = sys.argv[4] if len(sys.argv) > 4 else "auto"
    print(orjson.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), mode))).decode())
