"""The daemon in releases mode over the in-memory source: readiness, /metrics and audit records name the
installed release, and a new release replaces the old series."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from dagmirror.source.memory import MemorySource

from .releases import publish_to
from .test_service import get, make_service, until

FILES = {f"team/f{i}.py": f"dag {i}\n".encode() for i in range(20)}


async def test_the_daemon_reports_the_installed_release_in_readyz_metrics_and_audit(tmp_path: Path) -> None:
    source = MemorySource({})
    first = publish_to(source.put, "dags/", FILES)
    service = make_service(tmp_path, source)
    task = asyncio.create_task(service.run(install_signals=False))
    try:
        await until(lambda: service.readiness()[0])
        assert (await get(service, "/readyz"))[0] == 200
        _, text = await get(service, "/metrics")
        assert f'dagmirror_release_info{{mapping="team",release="{first}",seq="1"}} 1.0' in text
        second = publish_to(source.put, "dags/", {**FILES, "team/new.py": b"new\n"}, seq=2)
        await until((tmp_path / "dags" / "team" / "new.py").exists)
        await until(lambda: second in service.metrics.exposition().decode())
        assert first not in service.metrics.exposition().decode()
    finally:
        service.stop()
        await task
    records = [
        orjson.loads(line)
        for day in (tmp_path / "dags" / ".dagmirror" / "audit").glob("*.jsonl")
        for line in day.read_bytes().splitlines()
    ]
    assert [(r["mode"], r["release"]) for r in records] == [("releases", first), ("releases", second)]
