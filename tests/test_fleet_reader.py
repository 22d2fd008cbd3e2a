"""`FleetReader` (dagmirror/fleet/reader.py): every status of an environment through a paginated LIST over
HTTP (moto server pages at 1,000 keys), and over the in-memory store what a GET that fails or finds nothing
makes of a row."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from dagmirror.config import load_deploy_config
from dagmirror.errors import ConfigError, ObjectVanished, SourceConfigError, SourceUnavailable
from dagmirror.fleet.converge import State
from dagmirror.fleet.reader import FleetReader
from dagmirror.fleet.status import Status
from dagmirror.source.memory import MemoryStore

from .helpers import no_sleep, sdk_credentials
from .releases import publish

PREFIX = "dags/production/"


def status(instance: str, release: str | None = None, seq: int | None = None) -> bytes:
    now = time.time()
    return Status(instance, PREFIX, now, 60.0, now, "0.1.0", release=release, release_seq=seq).encode()


async def test_more_statuses_than_one_list_page_are_all_read(
    s3: Any, bucket: str, moto_endpoint: str
) -> None:
    release = publish(s3, bucket, PREFIX, {"a.py": b"a = 1\n"}, seq=4)
    names = [f"worker-{i:04d}" for i in range(1_050)]

    def put(name: str) -> None:
        body = status(name, release, 4) if name != "worker-0999" else status(name)
        s3.put_object(Bucket=bucket, Key=f"metadata/fleet/{PREFIX}{name}.json", Body=body)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, names))
    config = load_deploy_config(
        None, {}, {"bucket_url": f"s3://{bucket}/dags/", "endpoint_url": moto_endpoint}
    )
    with sdk_credentials():
        async with FleetReader(config) as reader:
            view = await reader.look("production")
    assert [r.instance for r in view.rows] == names
    assert view.count(State.CURRENT) == 1_049
    assert [r.instance for r in view.of(State.LAGGING)] == ["worker-0999"]
    assert (view.target.release, view.target.seq) == (release, 4)


def memory_config() -> Any:
    return load_deploy_config(None, {}, {"bucket_url": "s3://bkt/dags/"})


async def test_a_status_that_cannot_be_fetched_is_unreadable_and_one_deleted_since_the_list_is_gone() -> None:
    store = MemoryStore({f"metadata/fleet/{PREFIX}{n}.json": status(n) for n in ("a", "b", "c", "d")})

    def fault(op: str, key: str) -> None:
        if op == "GET" and key.endswith("/b.json"):
            raise SourceConfigError("GET s3://bkt/metadata/fleet/dags/production/b.json: 403 AccessDenied")
        if op == "GET" and key.endswith("/c.json"):
            raise SourceUnavailable("503 SlowDown")  # transient: retried, then a row like any failure
        if op == "GET" and key.endswith("/d.json"):
            raise ObjectVanished(f"GET {key}: NoSuchKey")  # the instance's status was deleted since the LIST

    store.fault = fault
    async with FleetReader(memory_config(), store, sleep=no_sleep) as reader:
        seen = {s.instance: s for s in await reader.statuses(PREFIX)}
    assert set(seen) == {"a", "b", "c"}
    assert seen["a"].status is not None
    assert (
        seen["b"].problem
        == "cannot be read: GET s3://bkt/metadata/fleet/dags/production/b.json: 403 AccessDenied"
    )
    assert seen["c"].problem == "cannot be read: 503 SlowDown"
    assert store.counts["GET"] == 1 + 1 + 5 + 1  # c was retried under the deploy's RetryPolicy


async def test_an_environment_without_a_pointer_has_no_target_and_an_unknown_one_is_refused() -> None:
    store = MemoryStore({f"metadata/fleet/{PREFIX}a.json": status("a")})
    async with FleetReader(memory_config(), store, sleep=no_sleep) as reader:
        view = await reader.look("production")
        assert not view.target.known
        assert [r.state for r in view.rows] == [State.RUNNING]
        with pytest.raises(ConfigError, match="unknown environment 'qa'"):
            await reader.look("qa")
    assert store.counts["LIST"] == 1  # the unknown environment was refused before any request
