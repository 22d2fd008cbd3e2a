"""Floors: what the same S3 client dagmirror uses can do at best, with no planning, state or disk writes.

`list`: one sequential chain of ListObjectsV2 pages (no fan-out). `get`: every key GET once, 64 at a time
(the keys are listed before the clock starts). Prints {"seconds": ...} for the timed part only.

Usage: python -m benchmarks.floors list|get s3://BUCKET/PREFIX/
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import orjson

from dagmirror.config import MirrorConfig
from dagmirror.source import ObjectSource
from dagmirror.source.connect import open_source


async def _keys(source: ObjectSource, prefix: str) -> list[str]:
    keys: list[str] = []
    token: str | None = None
    while True:
        page = await source.list_page(prefix, delimiter=False, token=token)
        keys += [o.key for o in page.objects]
        token = page.next_token
        if token is None:
            return keys


async def get_all(source: ObjectSource, keys: list[str], concurrency: int) -> None:
    """GET every key once, `concurrency` at a time."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for key in keys:
        queue.put_nowait(key)

    async def worker() -> None:
        while not queue.empty():
            await source.get(queue.get_nowait(), if_none_match=None)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())


async def main(mode: str, url: str) -> float:
    config = MirrorConfig.create(url, "/nonexistent", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    source = await open_source(config)
    try:
        if mode == "list":
            start = time.perf_counter()
            await _keys(source, config.source.prefix)
            return time.perf_counter() - start
        keys = await _keys(source, config.source.prefix)
        start = time.perf_counter()
        await get_all(source, keys, config.concurrency)
        return time.perf_counter() - start
    finally:
        await source.aclose()


if __name__ == "__main__":
    seconds = asyncio.run(main(sys.argv[1], sys.argv[2]))
    print(orjson.dumps({"seconds": seconds}).decode())
