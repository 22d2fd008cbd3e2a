"""The status publisher of `dagmirror run` (dagmirror/fleet/publisher.py) over the in-memory store: what is
written when, heartbeats, failures that never reach the mirror, the last 'stopped'. The same over HTTP, with
a real daemon, is tests/test_fleet_run.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from dagmirror import MirrorConfig
from dagmirror.config import Mapping, ServiceConfig, load_run_config
from dagmirror.errors import SourceConfigError
from dagmirror.fleet import StatusPublisher, publishers
from dagmirror.fleet.status import STOPPED, parse_status
from dagmirror.models import Failure, SyncReport
from dagmirror.source import ObjectSink
from dagmirror.source.memory import MemoryStore

PREFIX = "dags/production/"
KEY = "metadata/fleet/dags/production/pod-a.json"
R1, R2 = "a" * 64, "b" * 64


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Script:
    """The publisher's injected pause: records each delay, then runs the next step of the test (instead of
    waiting); with no step left it cancels the loop."""

    def __init__(self, *steps: Callable[[], None]) -> None:
        self.steps = list(steps)
        self.delays: list[float] = []

    async def __call__(self, delay: float, wake: asyncio.Event) -> None:
        self.delays.append(delay)
        if not self.steps:
            raise asyncio.CancelledError
        self.steps.pop(0)()


def report(release: str | None = R1, seq: int | None = 1, **kw: Any) -> SyncReport:
    counts = {"listed": 3, "downloaded": 0, "unchanged": 3, "deleted": 0, "rejected": 0, "failed": 0}
    return SyncReport(
        source=f"s3://b/{PREFIX}", dest="/d", dry_run=False, bytes=0, seconds=0.5, mode="releases",
        release=release, release_seq=seq, **(counts | kw),
    )  # fmt: skip


def publisher(store: MemoryStore, clock: Clock, pause: Script | None = None, **kw: Any) -> StatusPublisher:
    async def open_sink() -> ObjectSink:
        return store

    return StatusPublisher(
        "pod-a", PREFIX, open_sink, heartbeat=300.0, clock=clock, pause=pause or Script(), **kw
    )


def written(store: MemoryStore) -> list[dict[str, Any]]:
    return [orjson.loads(v.body) for v in store.history.get(KEY, []) if v.body is not None]


def refuse_puts(op: str, key: str) -> None:
    if op == "PUT":
        raise SourceConfigError("PUT s3://b/metadata/fleet/...: 403 AccessDenied")


async def test_what_a_reader_acts_on_is_written_at_once_and_the_rest_waits_for_the_heartbeat() -> None:
    pub = publisher(MemoryStore(), Clock())
    pub.passed(report())
    assert pub.pending  # first release
    await pub.write()
    pub.passed(report())
    assert not pub.pending  # the same release again: only the heartbeat rewrites it
    pub.passed(report(R2, 2))
    assert pub.pending
    await pub.write()
    pub.passed(report(R2, 2, downloaded=1, unchanged=2))  # objects moved without a new release
    assert pub.pending
    await pub.write()
    pub.failed("listing failed: 503")
    assert pub.pending
    await pub.write()
    pub.failed("listing failed: 503")
    assert not pub.pending  # the same error again


async def test_the_status_says_release_last_success_version_and_heartbeat() -> None:
    store, clock = MemoryStore(), Clock()
    pub = publisher(store, clock)
    clock.now += 60
    pub.passed(report(R2, 7))
    assert await pub.write()
    status = parse_status(store.live()[KEY], prefix=PREFIX, instance="pod-a")
    assert (status.release, status.release_seq, status.mode) == (R2, 7, "releases")
    assert status.last_success == clock.now - 0.5  # the pass started then: it saw what was published before
    assert (status.written, status.started, status.heartbeat) == (clock.now, clock.now - 60, 300.0)
    assert status.version
    assert status.last_error is None
    assert status.failures == 0


async def test_a_failed_pass_is_written_bounded_on_one_line_and_a_clean_pass_clears_it() -> None:
    store = MemoryStore()
    pub = publisher(store, Clock())
    pub.passed(report())
    pub.failed("GET s3://b/k: 503\n\x1b[31mspoofed line" + "x" * 1000)
    pub.failed("GET s3://b/k: 503")
    await pub.write()
    status = parse_status(store.live()[KEY], prefix=PREFIX, instance="pod-a")
    assert status.release == R1  # DEST kept its last good tree
    assert status.failures == 2
    assert status.last_error == "GET s3://b/k: 503"
    pub.passed(report(failed=1, unchanged=2, failures=(Failure("dags/production/a.py", "BadDigest"),)))
    assert pub.status.last_error == "1 files failed, e.g. dags/production/a.py: BadDigest"
    pub.passed(report())
    assert pub.status.last_error is None
    assert pub.status.failures == 0
    pub.failed("e" * 5000)
    assert len(pub.status.last_error or "") == 300
    assert "\n" not in (pub.status.last_error or "")


async def test_the_heartbeat_rewrites_the_status_and_a_failed_write_is_retried_sooner() -> None:
    store, clock = MemoryStore(), Clock()

    def tick() -> None:
        clock.now += 1

    def fail() -> None:
        store.fault = refuse_puts

    def heal() -> None:
        store.fault = None

    script = Script(tick, tick, fail, tick, heal, tick)
    pub = publisher(store, clock, script)
    with pytest.raises(asyncio.CancelledError):
        await pub.run()
    # first write within 10 s of the start; then every heartbeat; after failures 10 s, 20 s; then heartbeats
    assert script.delays == [10.0, 300.0, 300.0, 10.0, 20.0, 300.0, 300.0]
    assert [d["written"] for d in written(store)] == [1_000_001.0, 1_000_002.0, 1_000_003.0, 1_000_004.0]


async def test_a_bucket_that_refuses_writes_is_one_warning_and_a_count_never_an_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    store.fault = refuse_puts
    outcomes: list[bool] = []
    pub = publisher(store, Clock(), on_write=outcomes.append)
    with caplog.at_level(logging.WARNING, logger="dagmirror"):
        assert not await pub.write()
        assert not await pub.write()
    assert outcomes == [False, False]
    warnings = [r.getMessage() for r in caplog.records if "status not published" in r.getMessage()]
    assert warnings == [f"status not published to {KEY} (the mirror goes on): {store_error()}"]


def store_error() -> str:
    return "PUT s3://b/metadata/fleet/...: 403 AccessDenied"


async def test_a_sink_that_cannot_open_or_hangs_is_a_failed_write() -> None:
    async def cannot_open() -> ObjectSink:
        raise SourceConfigError("no credentials")

    class Hanging(MemoryStore):
        async def put(self, key: str, body: bytes, **kw: Any) -> str | None:
            await asyncio.sleep(3600)
            return None

    async def hanging() -> ObjectSink:
        return Hanging()

    for opener in (cannot_open, hanging):
        pub = StatusPublisher("pod-a", PREFIX, opener, heartbeat=300, timeout=0.05)
        assert not await pub.write()
        await pub.close()  # the shutdown's last write gives up as well: it never holds the shutdown


async def test_close_writes_stopped_so_no_reader_waits_for_this_instance() -> None:
    store = MemoryStore()
    pub = publisher(store, Clock())
    pub.passed(report())
    await pub.close()
    status = parse_status(store.live()[KEY], prefix=PREFIX, instance="pod-a")
    assert status.state == STOPPED
    assert status.release == R1


def test_each_mapping_publishes_under_its_prefix_and_a_shared_prefix_once(tmp_path: Path) -> None:
    def mapping(name: str, source: str) -> Mapping:
        return Mapping(name, MirrorConfig.create(source, tmp_path / name))

    config = ServiceConfig(
        (
            mapping("prod", "s3://bkt/dags/production"),
            mapping("prod-ml", "s3://bkt/dags/production"),  # another dest of the same prefix
            mapping("dev", "s3://bkt/dags/dev"),
        ),
        instance_id="pod-a",
        status=True,
    )
    found = publishers(config)
    assert {name: p.key for name, p in found.items()} == {
        "prod": "metadata/fleet/dags/production/pod-a.json",
        "dev": "metadata/fleet/dags/dev/pod-a.json",
    }
    assert publishers(ServiceConfig(config.mappings)) == {}  # built in code: off unless asked


def test_run_publishes_by_default_as_the_pod_name_and_flags_change_that(tmp_path: Path) -> None:
    flags = {"source": "s3://bkt/dags/production", "dest": str(tmp_path / "d")}
    config = load_run_config(None, {"HOSTNAME": "airflow-worker-3"}, flags)
    assert (config.status, config.instance_id, config.heartbeat) == (True, "airflow-worker-3", 300.0)
    config = load_run_config(None, {}, flags | {"instance_id": "w1", "heartbeat": 30.0, "status": False})
    assert (config.status, config.instance_id, config.heartbeat) == (False, "w1", 30.0)
    env = {"DAGMIRROR_INSTANCE_ID": "w2", "DAGMIRROR_HEARTBEAT": "60", "DAGMIRROR_STATUS": "false"}
    config = load_run_config(None, env, flags)
    assert (config.status, config.instance_id, config.heartbeat) == (False, "w2", 60.0)
