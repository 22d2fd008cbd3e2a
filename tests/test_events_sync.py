"""POST /sync on the daemon's HTTP port: a pass now, idempotent (requests while one is pending join it) and
rate-limited (429 with Retry-After). In process over the in-memory source, then on a real `dagmirror run`
against moto server."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from dagmirror.service import Service
from dagmirror.service.triggers import SyncLimiter
from dagmirror.source.memory import MemorySource

from .daemon import Daemon
from .helpers import put_all, read_tree
from .test_service import FILES, make_service, until


def ok_passes(service: Service) -> float:
    return service.metrics.passes.labels("team", "ok")._value.get()


def sync_requests(service: Service, outcome: str) -> float:
    return service.metrics.triggers.sync_requests.labels(outcome)._value.get()


async def post(service: Service, path: str = "/sync") -> tuple[int, dict[str, Any], str | None]:
    assert service.http is not None
    async with ClientSession() as http, http.post(f"http://127.0.0.1:{service.http.port}{path}") as resp:
        return resp.status, await resp.json(), resp.headers.get("Retry-After")


def test_the_limiter_allows_a_burst_then_one_request_per_refill() -> None:
    now = [100.0]
    limiter = SyncLimiter(burst=3, refill=10.0, clock=lambda: now[0])
    assert [limiter.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take() == pytest.approx(10.0)
    now[0] += 4.0
    assert limiter.take() == pytest.approx(6.0)
    now[0] += 6.0
    assert limiter.take() == 0.0
    now[0] += 3600.0  # a long quiet time refills the burst, not more
    assert [limiter.take() for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(10.0)]


async def test_concurrent_requests_during_a_pass_coalesce_into_one_more_pass(tmp_path: Path) -> None:
    source = MemorySource(FILES)
    service = make_service(tmp_path, source, sleep=asyncio.sleep, interval=3600)
    task = asyncio.create_task(service.run(install_signals=False))
    try:
        await until(lambda: ok_passes(service) == 1)
        source.latency = 0.2
        lists = source.counts["LIST"]
        service.request_pass()
        await until(lambda: source.counts["LIST"] > lists)  # pass 2 is in flight
        answers = await asyncio.gather(*(post(service) for _ in range(10)))
        assert {status for status, _, _ in answers} == {202}
        outcomes = sorted(body["outcome"] for _, body, _ in answers)
        assert outcomes == ["accepted"] + ["coalesced"] * 9
        await until(lambda: ok_passes(service) == 3)
        runner = service._runners[0]
        await until(lambda: runner.passes == 3 and not runner.wake.is_set())
        assert ok_passes(service) == 3  # one pass for the ten requests: none is pending any more
    finally:
        service.stop()
        await task


async def test_requests_beyond_the_burst_are_refused_with_429_and_retry_after(tmp_path: Path) -> None:
    service = make_service(tmp_path, MemorySource(FILES), sleep=asyncio.sleep, interval=3600)
    task = asyncio.create_task(service.run(install_signals=False))
    try:
        await until(lambda: ok_passes(service) == 1)
        for n in range(3):
            status, body, _ = await post(service)
            assert (status, body["outcome"]) == (202, "accepted")
            await until(lambda n=n: ok_passes(service) == n + 2)
        status, body, retry_after = await post(service)
        assert (status, body["outcome"]) == (429, "limited")
        assert retry_after is not None
        assert 1 <= int(retry_after) <= 10
        assert body["retry_after"] == int(retry_after)
        assert ok_passes(service) == 4
        assert [sync_requests(service, o) for o in ("accepted", "coalesced", "limited")] == [3, 0, 1]
        _, text = await service_get(service, "/metrics")
        assert 'dagmirror_sync_requests_total{outcome="limited"} 1.0' in text
    finally:
        service.stop()
        await task


async def service_get(service: Service, path: str) -> tuple[int, str]:
    assert service.http is not None
    async with ClientSession() as http, http.get(f"http://127.0.0.1:{service.http.port}{path}") as resp:
        return resp.status, await resp.text()


async def test_sync_takes_post_only(tmp_path: Path) -> None:
    service = make_service(tmp_path, MemorySource(FILES), sleep=asyncio.sleep, interval=3600)
    task = asyncio.create_task(service.run(install_signals=False))
    try:
        await until(lambda: ok_passes(service) == 1)
        assert (await service_get(service, "/sync"))[0] == 405
    finally:
        service.stop()
        await task


def test_post_sync_makes_a_running_daemon_pass_now(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    put_all(s3, bucket, "dags/prod/", {"a.py": b"a\n"})
    dest = tmp_path / "dags"
    with Daemon(f"s3://{bucket}/dags/prod/", dest, moto_endpoint, "--interval", "3600") as d:
        d.until(lambda: d.get("/readyz")[0] == 200, what="the first pass")
        put_all(s3, bucket, "dags/prod/", {"b.py": b"b\n"})
        request = urllib.request.Request(f"http://127.0.0.1:{d.port}/sync", method="POST")
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 202
        d.until(
            lambda: read_tree(dest) == {"a.py": b"a\n", "b.py": b"b\n"}, what="the pass POST /sync asked for"
        )
        assert d.metric("dagmirror_sync_requests_total", outcome="accepted") == 1
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{d.port}/sync", timeout=5)  # a GET
        refused.value.close()
        assert refused.value.code == 405
